"""Nodes: register/adopt, heartbeat leases, and node lifecycle driven by a FakeClock."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from controller.testing import ControllerRunner
from cowpod.api.labels import UNREACHABLE_TAINT
from cowpod.client import Client
from cowpod.clock import FakeClock
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import lease_pb2, meta_pb2, node_pb2
from tests import polling

pytestmark = pytest.mark.integration


def node(name: str, **labels: str) -> node_pb2.Node:
    n = node_pb2.Node()
    n.metadata.name = name
    n.metadata.labels.update(labels)
    n.status.capacity.cpu_millis = 2000
    n.status.allocatable.cpu_millis = 1900
    n.status.daemon_endpoint = "unix:///nonexistent.sock"
    return n


async def test_register_adopts_and_keeps_spec(client: Client) -> None:
    first = await client.nodes.Register(node("n1", zone="a"))
    assert first.metadata.uid and first.kind == "Node"
    first.spec.unschedulable = True
    first.spec.taints.add(key="gpu", effect="NoSchedule")
    await client.nodes.Update(first)
    # The agent restarts and registers again with fresh status.
    again = node("n1", arch="amd64")
    again.status.allocatable.cpu_millis = 1500
    adopted = await client.nodes.Register(again)
    assert adopted.metadata.uid == first.metadata.uid
    assert adopted.spec.unschedulable is True
    assert [t.key for t in adopted.spec.taints] == ["gpu"]
    assert adopted.status.allocatable.cpu_millis == 1500
    assert dict(adopted.metadata.labels) == {"zone": "a", "arch": "amd64"}


async def test_heartbeat_renews_lease_and_status(client: Client) -> None:
    await client.nodes.Register(node("n1"))
    lease1 = await client.leases.Get(meta_pb2.ObjectKey(namespace="cowpod-node-lease", name="n1"))
    status = node_pb2.NodeStatus()
    status.conditions.add(type="Ready", status="True")
    resp = await client.nodes.Heartbeat(node_pb2.HeartbeatRequest(node_name="n1", status=status))
    assert resp.lease_seconds == 40
    lease2 = await client.leases.Get(meta_pb2.ObjectKey(namespace="cowpod-node-lease", name="n1"))
    assert lease2.spec.holder_identity == "n1"
    assert lease2.metadata.resource_version > lease1.metadata.resource_version
    got = await client.nodes.Get(meta_pb2.ObjectKey(name="n1"))
    assert [(c.type, c.status) for c in got.status.conditions] == [("Ready", "True")]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.nodes.Heartbeat(node_pb2.HeartbeatRequest(node_name="ghost"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_node_delete_removes_its_lease(client: Client) -> None:
    await client.nodes.Register(node("n1"))
    await client.nodes.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="n1")))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.leases.Get(meta_pb2.ObjectKey(namespace="cowpod-node-lease", name="n1"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def eventually(client: Client, name: str, pred: Callable[[node_pb2.Node], bool]) -> node_pb2.Node:
    """The lifecycle's writes are real etcd I/O after the fake clock moved: poll for the result."""

    async def reached() -> node_pb2.Node | None:
        n: node_pb2.Node = await client.nodes.Get(meta_pb2.ObjectKey(name=name))
        return n if pred(n) else None

    return await polling.eventually(reached, timeout=10, what=f"node {name} in the expected state")


def unreachable(n: node_pb2.Node) -> bool:
    return any(t.key == UNREACHABLE_TAINT for t in n.spec.taints) and any(
        c.type == "Ready" and c.status == "Unknown" for c in n.status.conditions)


async def test_silent_node_marked_unreachable_then_recovers(etcd: EtcdMember, etcd_prefix: str) -> None:
    clock = FakeClock()
    runner = ControllerRunner(etcd.endpoint, etcd_prefix, clock=clock,
                              node_monitor_grace=40.0, node_monitor_period=5.0)
    async with runner, Client(runner.address) as client:
        ready = node("quiet")
        ready.status.conditions.add(type="Ready", status="True")
        await client.nodes.Register(ready)
        await client.nodes.Register(node("chatty"))
        lease: lease_pb2.Lease = await client.leases.Get(
            meta_pb2.ObjectKey(namespace="cowpod-node-lease", name="quiet"))
        assert lease.spec.renew_time.seconds == int(clock.now())

        for _ in range(10):  # 50 s: "chatty" keeps heartbeating, "quiet" does not
            await clock.advance(5)
            await client.nodes.Heartbeat(node_pb2.HeartbeatRequest(node_name="chatty"))
        quiet = await eventually(client, "quiet", unreachable)
        assert [t.effect for t in quiet.spec.taints] == ["NoExecute"]
        chatty = await client.nodes.Get(meta_pb2.ObjectKey(name="chatty"))
        assert not unreachable(chatty)

        await client.nodes.Heartbeat(node_pb2.HeartbeatRequest(node_name="quiet"))
        await clock.advance(5)
        back = await eventually(client, "quiet", lambda n: not unreachable(n))
        assert list(back.spec.taints) == []
        assert [(c.type, c.status) for c in back.status.conditions] == [("Ready", "True")]
