"""NodeService.HeartbeatStream against the real controller and etcd (issue #17): a node
kept Ready by the stream alone, its lease running out once the stream stops, the unary
fallback against a controller without the stream, and a node's certificate refused per
message when its stream renews another node."""

from __future__ import annotations

import pathlib

import grpc
import pytest

from agent.controlplane import GrpcControlPlane
from agent.leasestream import LeaseRenewer
from controller.testing import ControllerRunner
from cowpod.client import Client
from cowpod.clock import FakeClock
from cowpod.errors import PermissionDenied
from cowpod.heartbeats import error_in
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import lease_pb2, meta_pb2, node_pb2, node_pb2_grpc
from tests.integration.test_controller_nodes import eventually, node, unreachable
from tests.integration.test_security import admin, join_node, make_node, secure

pytestmark = pytest.mark.integration
__all__ = ["admin", "secure"]  # fixtures


async def no_unary(request: node_pb2.HeartbeatRequest) -> node_pb2.HeartbeatResponse:
    raise AssertionError(f"unary Heartbeat used for {request.node_name}: the stream should carry it")


def beat(name: str) -> node_pb2.HeartbeatRequest:
    return node_pb2.HeartbeatRequest(node_name=name)


async def lease_of(client: Client, name: str) -> lease_pb2.Lease:
    key = meta_pb2.ObjectKey(namespace="cowpod-node-lease", name=name)
    got: lease_pb2.Lease = await client.leases.Get(key)
    return got


async def test_the_stream_alone_keeps_a_node_ready_and_its_lease_runs_out_when_it_stops(
    etcd: EtcdMember, etcd_prefix: str
) -> None:
    clock = FakeClock()
    runner = ControllerRunner(etcd.endpoint, etcd_prefix, clock=clock,
                              node_monitor_grace=40.0, node_monitor_period=5.0)
    async with runner, Client(runner.address) as client:
        for name in ("streamer", "quiet"):
            ready = node(name)
            ready.status.conditions.add(type="Ready", status="True")
            await client.nodes.Register(ready)
        renewer = LeaseRenewer(client.nodes, no_unary, clock)

        for _ in range(10):  # 50 s: "streamer" renews over its stream, "quiet" does not
            await clock.advance(5)
            answer = await renewer.renew(beat("streamer"))
            assert answer.lease_seconds == 40 and answer.node_name == "streamer"
            assert (await lease_of(client, "streamer")).spec.renew_time.seconds == int(clock.now())
        await eventually(client, "quiet", unreachable)
        assert not unreachable(await client.nodes.Get(meta_pb2.ObjectKey(name="streamer")))
        assert (renewer.opened, renewer.streamed, renewer.unary_calls) == (1, 10, 0)

        renewer.close()  # the agent is gone: nothing renews its lease any more
        for _ in range(10):
            await clock.advance(5)
        gone = await eventually(client, "streamer", unreachable)
        assert [t.effect for t in gone.spec.taints] == ["NoExecute"]


async def test_the_agent_learns_an_unknown_node_over_the_stream(client: Client) -> None:
    cp = GrpcControlPlane(client)
    assert await cp.heartbeat("ghost", node_pb2.NodeStatus()) is False  # NOT_FOUND: register again
    await client.nodes.Register(node("n1"))
    status = node_pb2.NodeStatus()
    status.conditions.add(type="Ready", status="True")
    assert await cp.heartbeat("n1", status) is True
    got = await client.nodes.Get(meta_pb2.ObjectKey(name="n1"))
    assert [(c.type, c.status) for c in got.status.conditions] == [("Ready", "True")]  # status rode along
    assert (cp.leases.opened, cp.leases.streamed, cp.leases.unary_calls) == (1, 2, 0)


class UnaryOnly(node_pb2_grpc.NodeServiceServicer):  # type: ignore[misc]
    """A controller from before HeartbeatStream: Heartbeat is forwarded to the real one; the
    generated base answers HeartbeatStream UNIMPLEMENTED."""

    def __init__(self, upstream: Client) -> None:
        self.upstream = upstream
        self.heartbeats = 0

    async def Heartbeat(self, request: node_pb2.HeartbeatRequest,
                        context: object) -> node_pb2.HeartbeatResponse:
        self.heartbeats += 1
        response: node_pb2.HeartbeatResponse = await self.upstream.nodes.Heartbeat(request)
        return response


async def test_an_older_controller_gets_unary_heartbeats(client: Client) -> None:
    await client.nodes.Register(node("n1"))
    before = await lease_of(client, "n1")
    old = UnaryOnly(client)
    server = grpc.aio.server()
    node_pb2_grpc.add_NodeServiceServicer_to_server(old, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with Client(f"127.0.0.1:{port}") as agent:
            cp = GrpcControlPlane(agent)
            assert await cp.heartbeat("n1", node_pb2.NodeStatus()) is True
            assert await cp.heartbeat("n1", node_pb2.NodeStatus()) is True
            # The first renewal found no stream and went unary; the second did not try again.
            assert (cp.leases.opened, cp.leases.streamed, cp.leases.unary_calls) == (1, 0, 2)
            assert old.heartbeats == 2 and cp.leases.on_unary
    finally:
        await server.stop(None)
    after = await lease_of(client, "n1")
    assert after.metadata.resource_version > before.metadata.resource_version


async def test_a_node_may_not_renew_another_node_on_its_stream(
    secure: ControllerRunner, admin: Client, tmp_path: pathlib.Path
) -> None:
    await admin.nodes.Register(make_node("n2"))
    n2_lease = await lease_of(admin, "n2")
    async with await join_node(secure, admin, "n1", tmp_path) as n1:
        await n1.nodes.Register(make_node("n1"))
        call = n1.nodes.HeartbeatStream()
        try:
            answers = []
            for name in ("n1", "n2", "n1"):
                await call.write(beat(name))
                answers.append(await call.read())
        finally:
            call.cancel()
        ok1, refused, ok2 = answers
        assert error_in(ok1) is None and error_in(ok2) is None and ok2.lease_seconds == 40
        assert refused.node_name == "n2" and refused.error_code == grpc.StatusCode.PERMISSION_DENIED.value[0]
        assert "'n2'" in refused.error_message, refused.error_message
        # The agent's client raises it as the unary call's PERMISSION_DENIED would read.
        renewer = LeaseRenewer(n1.nodes, no_unary, n1.clock)
        with pytest.raises(PermissionDenied, match="'n2'"):
            await renewer.renew(beat("n2"))
        await renewer.renew(beat("n1"))
        assert renewer.opened == 1
        renewer.close()
    assert (await lease_of(admin, "n2")).metadata.resource_version == n2_lease.metadata.resource_version


async def test_object_limits_apply_to_each_message(client: Client) -> None:
    await client.nodes.Register(node("n1"))
    call = client.nodes.HeartbeatStream()
    try:
        await call.write(beat("n" * 20_000))  # over the 16 KiB limit of one string
        too_long = await call.read()
        await call.write(beat("n1"))
        fine = await call.read()
    finally:
        call.cancel()
    assert too_long.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert too_long.error_message.startswith("nodeName"), too_long.error_message
    assert error_in(fine) is None and fine.node_name == "n1"
