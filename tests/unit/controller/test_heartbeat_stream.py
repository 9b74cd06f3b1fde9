"""HeartbeatStream's server loop (controller/heartbeats.py) and its answers' wire rule
(cowpod/heartbeats.py), over a fake renewal: pure logic, no gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from controller.heartbeats import serve
from controller.rpc import RefusedMessage
from cowpod.errors import Invalid, NotFound, PermissionDenied
from cowpod.heartbeats import answer_error, answer_ok, error_in
from cowpod.v1 import node_pb2

# Guards a wait that must end at once; a hang fails the test instead of stalling it.
DEADLINE_S = 10.0


def req(name: str) -> node_pb2.HeartbeatRequest:
    return node_pb2.HeartbeatRequest(node_name=name)


async def requests(*items: node_pb2.HeartbeatRequest | RefusedMessage) -> AsyncIterator[
        node_pb2.HeartbeatRequest | RefusedMessage]:
    for item in items:
        yield item


async def renew(r: node_pb2.HeartbeatRequest) -> node_pb2.HeartbeatResponse:
    if r.node_name == "ghost":
        raise NotFound('nodes "ghost" not found: register the node first')
    if r.node_name == "bug":
        raise KeyError("boom")
    return node_pb2.HeartbeatResponse(lease_seconds=40)


async def collect(stream: AsyncIterator[node_pb2.HeartbeatResponse]) -> list[node_pb2.HeartbeatResponse]:
    return [r async for r in stream]


@pytest.mark.parametrize("err", [
    NotFound('nodes "n1" not found'),
    PermissionDenied("node n1 may not call NodeService/Heartbeat: ... ('n1', not 'n2')"),
    Invalid("nodeName", "required"),
])
def test_an_answered_error_comes_back_as_the_same_exception(err: Exception) -> None:
    got = error_in(answer_error("n1", err, where="X"))
    assert type(got) is type(err) and str(got) == str(err)


def test_a_bug_is_internal_and_a_success_is_no_error() -> None:
    bug = answer_error("n1", KeyError("k"), where="NodeService.HeartbeatStream")
    assert bug.error_code == grpc.StatusCode.INTERNAL.value[0]
    assert "internal error in NodeService.HeartbeatStream" in bug.error_message
    assert error_in(answer_ok("n1", node_pb2.HeartbeatResponse(lease_seconds=40))) is None


async def test_every_request_gets_its_own_answer_and_the_stream_goes_on() -> None:
    why = "a node may only touch its own Node ('n1', not 'n2')"
    refused = RefusedMessage(req("n2"), PermissionDenied(why))
    out = await collect(serve(requests(req("n1"), req("ghost"), refused, req("bug"), req("n1")), renew))
    by_name: dict[str, list[node_pb2.HeartbeatResponse]] = {}
    for r in out:
        by_name.setdefault(r.node_name, []).append(r)
    assert [r.lease_seconds for r in by_name["n1"]] == [40, 40]
    assert [r.error_code for r in by_name["n1"]] == [0, 0]
    assert isinstance(error_in(by_name["ghost"][0]), NotFound)
    denied = error_in(by_name["n2"][0])
    assert isinstance(denied, PermissionDenied) and "'n2'" in str(denied)
    assert by_name["bug"][0].error_code == grpc.StatusCode.INTERNAL.value[0]
    assert len(out) == 5


async def test_renewals_of_one_stream_run_together() -> None:
    """A shared stream must not renew one node at a time (each may linger 50 ms in the
    group commit): three renewals that each wait for the others all finish."""
    started = 0
    all_in = asyncio.Event()

    async def waits_for_company(r: node_pb2.HeartbeatRequest) -> node_pb2.HeartbeatResponse:
        nonlocal started
        started += 1
        if started == 3:
            all_in.set()
        await all_in.wait()
        return node_pb2.HeartbeatResponse(lease_seconds=40)

    out = await asyncio.wait_for(collect(serve(requests(req("a"), req("b"), req("c")), waits_for_company)),
                                 DEADLINE_S)
    assert sorted(r.node_name for r in out) == ["a", "b", "c"]


async def test_a_client_that_stops_reading_stops_being_read() -> None:
    read = 0

    async def endless() -> AsyncIterator[node_pb2.HeartbeatRequest]:
        nonlocal read
        while True:
            read += 1
            yield req(f"n{read}")

    stream = serve(endless(), renew, max_in_flight=2)
    first = await asyncio.wait_for(anext(stream), DEADLINE_S)
    assert first.node_name == "n1"
    # Nothing more is taken: the reader holds at most 2 unanswered requests (+1 it waits to start).
    for _ in range(20):
        await asyncio.sleep(0)
    assert read <= 4
    await stream.aclose()
