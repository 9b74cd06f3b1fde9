"""The agent's HeartbeatStream client (agent/leasestream.py) against a scripted fake stub:
answers, fallback to the unary call, reconnects with back-off on the injected clock."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from agent.leasestream import LeaseRenewer
from cowpod.backoff import Backoff
from cowpod.clock import FakeClock
from cowpod.errors import NotFound, PermissionDenied, Unavailable
from cowpod.heartbeats import answer_error, answer_ok
from cowpod.v1 import node_pb2

OK = "ok"
EOF = "eof"


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=code.name)


class FakeCall:
    """One stream: each read answers the last write by the script's next step."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.written: list[node_pb2.HeartbeatRequest] = []
        self.cancelled = False

    async def write(self, request: node_pb2.HeartbeatRequest) -> None:
        self.written.append(request)

    async def read(self) -> Any:
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        if step == EOF:
            return grpc.aio.EOF
        name = self.written[-1].node_name
        if step == OK:
            return answer_ok(name, node_pb2.HeartbeatResponse(lease_seconds=40))
        return answer_error(name, step(name), where="test")

    def cancel(self) -> None:
        self.cancelled = True


class FakeStub:
    def __init__(self, *scripts: list[Any]) -> None:
        self.scripts = list(scripts)
        self.calls: list[FakeCall] = []

    def HeartbeatStream(self) -> FakeCall:
        call = FakeCall(self.scripts.pop(0))
        self.calls.append(call)
        return call


class Unary:
    def __init__(self) -> None:
        self.requests: list[node_pb2.HeartbeatRequest] = []

    async def __call__(self, request: node_pb2.HeartbeatRequest) -> node_pb2.HeartbeatResponse:
        self.requests.append(request)
        return node_pb2.HeartbeatResponse(lease_seconds=40)


def renewer(stub: FakeStub, clock: FakeClock, unary: Unary, **kw: Any) -> LeaseRenewer:
    # No jitter: the back-off's delays are exact, so the test can step the clock to them.
    return LeaseRenewer(stub, unary, clock, backoff=Backoff(initial=1.0, cap=4.0), **kw)


def beat(name: str = "n1") -> node_pb2.HeartbeatRequest:
    return node_pb2.HeartbeatRequest(node_name=name)


async def test_renewals_share_one_stream() -> None:
    stub, unary = FakeStub([OK, OK, OK]), Unary()
    r = renewer(stub, FakeClock(), unary)
    for _ in range(3):
        assert (await r.renew(beat())).lease_seconds == 40
    assert len(stub.calls) == 1 and len(stub.calls[0].written) == 3
    assert r.streamed == 3 and not unary.requests


async def test_an_answered_failure_raises_its_error_and_keeps_the_stream() -> None:
    def not_found(name: str) -> Exception:
        return NotFound(f'nodes "{name}" not found')

    def denied(name: str) -> Exception:
        return PermissionDenied(f"a node may only touch its own Node ('me', not {name!r})")

    stub = FakeStub([not_found, denied, OK])
    r = renewer(stub, FakeClock(), Unary())
    with pytest.raises(NotFound):
        await r.renew(beat("ghost"))
    with pytest.raises(PermissionDenied, match="'other'"):
        await r.renew(beat("other"))
    await r.renew(beat())
    assert len(stub.calls) == 1 and not stub.calls[0].cancelled


async def test_unimplemented_falls_back_to_unary_until_the_stream_is_tried_again() -> None:
    clock, unary = FakeClock(), Unary()
    stub = FakeStub([rpc_error(grpc.StatusCode.UNIMPLEMENTED)], [OK])
    r = renewer(stub, clock, unary, unary_seconds=600.0)
    await r.renew(beat())
    await r.renew(beat())
    assert [q.node_name for q in unary.requests] == ["n1", "n1"]
    assert len(stub.calls) == 1 and r.on_unary
    await clock.advance(600.0)
    await r.renew(beat())
    assert len(unary.requests) == 2 and len(stub.calls) == 2 and r.streamed == 1


async def until_done(task: asyncio.Task[Any], clock: FakeClock, step: float) -> None:
    for _ in range(100):
        if task.done():
            return
        await clock.advance(step)
    raise AssertionError("renewal never finished")


async def test_a_broken_stream_is_reopened_after_the_backoff() -> None:
    clock = FakeClock()
    stub = FakeStub([rpc_error(grpc.StatusCode.UNAVAILABLE)], [EOF], [OK])
    r = renewer(stub, clock, Unary())
    task = asyncio.create_task(r.renew(beat()))
    await clock.advance(0)  # the first attempt fails and its back-off starts
    await clock.advance(0.99)  # the first back-off is 1 s: not reopened yet
    assert len(stub.calls) == 1 and stub.calls[0].cancelled and not task.done()
    await clock.advance(0.01)
    assert len(stub.calls) == 2 and not task.done()  # ended by the server: back off 2 s
    await clock.advance(2.0)
    assert (await task).lease_seconds == 40
    assert len(stub.calls) == 3 == r.opened  # one renewal's three attempts
    assert [len(c.written) for c in stub.calls] == [1, 1, 1]


async def test_it_gives_up_after_its_attempts_and_the_next_renewal_reopens() -> None:
    clock = FakeClock()
    stub = FakeStub([EOF], [EOF], [EOF], [OK])
    r = renewer(stub, clock, Unary(), attempts=3)
    task = asyncio.create_task(r.renew(beat()))
    await until_done(task, clock, 1.0)
    with pytest.raises(Unavailable):
        task.result()
    await r.renew(beat())
    assert len(stub.calls) == 4 == r.opened


@pytest.mark.parametrize("code", [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED])
async def test_a_refused_stream_is_not_retried(code: grpc.StatusCode) -> None:
    stub = FakeStub([rpc_error(code)])
    r = renewer(stub, FakeClock(), Unary())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await r.renew(beat())
    assert err.value.code() == code and len(stub.calls) == 1
