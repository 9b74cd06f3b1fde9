"""ReplicaSets and eviction through the real controller on a real etcd: the ReplicaSet
controller keeps replicas, replaces lost pods, collects the pods of a deleted set; a node
that stops heartbeating gets its pods evicted (Failed, NodeLost) and replaced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from controller.testing import ControllerRunner
from cowpod.client import Client
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import event_pb2, meta_pb2, node_pb2, pod_pb2, workload_pb2
from tests.polling import eventually

pytestmark = pytest.mark.integration


def make_rs(name: str, replicas: int) -> workload_pb2.ReplicaSet:
    rs = workload_pb2.ReplicaSet()
    rs.metadata.name = name
    rs.metadata.namespace = "default"
    rs.spec.replicas = replicas
    rs.spec.template.metadata.labels["app"] = name
    rs.spec.template.spec.containers.add(name="main", image="cowpod/busybox:latest", command=["sleep", "1d"])
    return rs


async def owned_pods(c: Client, rs: str) -> list[pod_pb2.Pod]:
    lst = await c.pods.List(meta_pb2.ListOptions(namespace="default", label_selector=f"app={rs}"))
    return [p for p in lst.items if any(r.name == rs and r.controller for r in p.metadata.owner_references)]


def active(pods: list[pod_pb2.Pod]) -> list[pod_pb2.Pod]:
    return [p for p in pods if not p.metadata.HasField("deletion_timestamp")
            and p.status.phase not in ("Failed", "Succeeded")]


async def test_replicas_are_kept_scaled_and_collected(client: Client) -> None:
    created = await client.replicasets.Create(make_rs("web", 3))
    assert created.spec.selector.match_labels["app"] == "web"  # defaulted from the template
    assert created.kind == "ReplicaSet" and created.api_version == "apps/v1"

    async def count(n: int) -> bool:
        return len(active(await owned_pods(client, "web"))) == n

    await eventually(lambda: count(3), what="3 pods", timeout=20.0)
    pods = await owned_pods(client, "web")
    assert all(p.metadata.owner_references[0].uid == created.metadata.uid for p in pods)
    assert all(p.metadata.name.startswith("web-") for p in pods)

    async def status_is(n: int) -> bool:
        rs = await client.replicasets.Get(meta_pb2.ObjectKey(namespace="default", name="web"))
        return rs.status.replicas == n and rs.status.observed_generation == rs.metadata.generation

    await eventually(lambda: status_is(3), what="status.replicas 3", timeout=20.0)

    # A pod deleted by hand is replaced.
    await client.pods.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name=pods[0].metadata.name)))
    await eventually(lambda: count(3), what="replacement", timeout=20.0)
    names = {p.metadata.name for p in await owned_pods(client, "web")}
    assert pods[0].metadata.name not in names

    await client.replicasets.Scale(workload_pb2.ScaleRequest(key=meta_pb2.ObjectKey(name="web"), replicas=1))
    await eventually(lambda: count(1), what="scale down to 1", timeout=20.0)
    await eventually(lambda: status_is(1), what="status.replicas 1", timeout=20.0)

    events = await client.events.List(event_pb2.ListEventsRequest(
        involved_object=event_pb2.ObjectReference(kind="ReplicaSet", name="web")))
    reasons = {e.reason for e in events.items}
    assert {"SuccessfulCreate", "SuccessfulDelete"} <= reasons

    await client.replicasets.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="web")))
    await eventually(lambda: count(0), what="pods of the deleted set collected", timeout=20.0)


async def test_selector_is_immutable_and_errors_name_fields(client: Client) -> None:
    bad = make_rs("bad", 1)
    bad.spec.template.spec.containers[0].image = ""
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.replicasets.Create(bad)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.template.spec.containers[0].image: required" in (e.value.details() or "")
    rs = await client.replicasets.Create(make_rs("web", 0))
    rs.spec.selector.match_labels["tier"] = "x"
    rs.metadata.resource_version = 0  # the controller may have written status meanwhile
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.replicasets.Update(rs)
    assert "spec.selector" in (e.value.details() or "")


@pytest.fixture
async def fast_controller(etcd: EtcdMember, etcd_prefix: str) -> AsyncIterator[ControllerRunner]:
    runner = ControllerRunner(etcd.endpoint, etcd_prefix, node_monitor_grace=1.0, node_monitor_period=0.2,
                              pod_eviction_timeout=1.0)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()


async def test_pods_of_a_silent_node_are_evicted_and_replaced(fast_controller: ControllerRunner) -> None:
    async with Client(fast_controller.address) as c, asyncio.TaskGroup() as tg:
        for name in ("n1", "n2"):
            n = node_pb2.Node()
            n.metadata.name = name
            n.status.capacity.cpu_millis = 2000
            await c.nodes.Register(n)

        # n2 heartbeats throughout; n1 never does after registering.
        async def heartbeat() -> None:
            while True:
                await c.nodes.Heartbeat(node_pb2.HeartbeatRequest(node_name="n2"))
                await asyncio.sleep(0.2)

        hb = tg.create_task(heartbeat())
        await c.replicasets.Create(make_rs("web", 2))

        async def bound_two() -> bool:
            # Play the scheduler: bind pending pods, one to each node.
            pods = active(await owned_pods(c, "web"))
            used = {p.spec.node_name for p in pods if p.spec.node_name}
            for p in (p for p in pods if not p.spec.node_name):
                target = "n1" if "n1" not in used else "n2"
                used.add(target)
                key = meta_pb2.ObjectKey(name=p.metadata.name)
                await c.pods.Bind(pod_pb2.Binding(pod=key, node_name=target))
            pods = active(await owned_pods(c, "web"))
            return len(pods) == 2 and all(p.spec.node_name for p in pods)

        await eventually(bound_two, what="two bound pods", timeout=20.0)
        [on_n1] = [p.metadata.name for p in active(await owned_pods(c, "web")) if p.spec.node_name == "n1"]

        async def n1_lost() -> bool:
            n1 = await c.nodes.Get(meta_pb2.ObjectKey(name="n1"))
            ready = {x.type: x.status for x in n1.status.conditions}.get("Ready")
            return ready == "Unknown" and any(
                t.key == "node.kubernetes.io/unreachable" and t.effect == "NoExecute" for t in n1.spec.taints)

        await eventually(n1_lost, what="n1 Ready=Unknown and tainted", timeout=20.0)

        async def evicted() -> bool:
            p = await c.pods.Get(meta_pb2.ObjectKey(name=on_n1))
            return p.status.phase == "Failed" and p.status.reason == "NodeLost"

        await eventually(evicted, what="pod on n1 Failed/NodeLost", timeout=20.0)
        lost = await c.pods.Get(meta_pb2.ObjectKey(name=on_n1))
        assert lost.metadata.HasField("deletion_timestamp")  # the agent finalizes it if it returns

        async def replaced() -> bool:
            pods = active(await owned_pods(c, "web"))
            return len(pods) == 2 and on_n1 not in {p.metadata.name for p in pods}

        await eventually(replaced, what="a replacement pod", timeout=20.0)
        n2 = await c.nodes.Get(meta_pb2.ObjectKey(name="n2"))
        assert not n2.spec.taints  # the heartbeating node is untouched
        assert all(p.status.phase != "Failed" for p in await owned_pods(c, "web") if p.spec.node_name == "n2")
        evs = await c.events.List(event_pb2.ListEventsRequest(
            involved_object=event_pb2.ObjectReference(kind="Pod", name=on_n1)))
        assert any(e.reason == "NodeLost" for e in evs.items)

        # Deleting the lost node collects its pods.
        await c.nodes.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="n1")))

        async def gone() -> bool:
            try:
                await c.pods.Get(meta_pb2.ObjectKey(name=on_n1))
            except grpc.aio.AioRpcError as e:
                return e.code() == grpc.StatusCode.NOT_FOUND
            return False

        await eventually(gone, what="pod of the deleted node collected", timeout=20.0)
        hb.cancel()
