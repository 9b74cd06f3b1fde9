"""Bind and BindBatch: conditional commits, mixed outcomes, graceful delete of bound pods."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from controller.testing import ControllerRunner, make_node, make_pod
from cowpod.client import Client
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2
from tests.polling import eventually

pytestmark = pytest.mark.integration


def binding(name: str, node: str, **kw: object) -> pod_pb2.Binding:
    return pod_pb2.Binding(pod=meta_pb2.ObjectKey(namespace="default", name=name), node_name=node,
                           **kw)  # type: ignore[arg-type]


async def test_bind_batch_mixed_outcomes(client: Client) -> None:
    await make_node(client, "n1")
    await make_node(client, "n2")
    ok1 = await client.pods.Create(make_pod("ok1"))
    await client.pods.Create(make_pod("ok2"))
    await client.pods.Create(make_pod("bound"))
    await client.pods.Bind(binding("bound", "n1"))
    stale = await client.pods.Create(make_pod("stale"))
    stale.metadata.labels["touched"] = "1"
    await client.pods.Update(stale)
    await client.pods.Create(make_pod("nonode"))
    await client.pods.Create(make_pod("wronguid"))

    resp = await client.pods.BindBatch(pod_pb2.BindBatchRequest(bindings=[
        binding("ok1", "n1", pod_uid=ok1.metadata.uid, pod_resource_version=ok1.metadata.resource_version),
        binding("ok2", "n2"),
        binding("bound", "n2"),
        binding("stale", "n1", pod_resource_version=stale.metadata.resource_version),
        binding("nonode", "n9"),
        binding("missing", "n1"),
        binding("wronguid", "n1", pod_uid="not-the-uid"),
        binding("ok2", "n1"),  # the same pod twice in one batch
    ]))
    got = [(r.pod.name, r.ok, grpc.StatusCode.OK if r.ok else _code(r.code)) for r in resp.results]
    assert got == [
        ("ok1", True, grpc.StatusCode.OK),
        ("ok2", True, grpc.StatusCode.OK),
        ("bound", False, grpc.StatusCode.ABORTED),
        ("stale", False, grpc.StatusCode.ABORTED),
        ("nonode", False, grpc.StatusCode.ABORTED),
        ("missing", False, grpc.StatusCode.NOT_FOUND),
        ("wronguid", False, grpc.StatusCode.ABORTED),
        ("ok2", False, grpc.StatusCode.ABORTED),
    ]
    assert "already bound" in resp.results[2].message
    assert '"n9" not found' in resp.results[4].message
    assert resp.results[0].resource_version > 0

    pods = {p.metadata.name: p.spec.node_name
            for p in (await client.pods.List(meta_pb2.ListOptions())).items}
    assert pods == {"ok1": "n1", "ok2": "n2", "bound": "n1", "stale": "", "nonode": "", "wronguid": ""}


async def test_binding_by_generation_survives_status_writes_not_spec_changes(client: Client) -> None:
    await make_node(client, "n1")
    seen = await client.pods.Create(make_pod("verdict"))
    # The scheduler's own Unschedulable verdict lands after it read the pod.
    upd = pod_pb2.Pod()
    upd.CopyFrom(seen)
    upd.status.phase = "Pending"
    upd.status.conditions.add(type="PodScheduled", status="False", reason="Unschedulable", message="0/0")
    await client.pods.UpdateStatus(upd)
    edited = await client.pods.Create(make_pod("edited"))
    edited.spec.tolerations.add(key="dedicated", operator="Exists")
    await client.pods.Update(edited)

    gen = seen.metadata.generation
    assert gen > 0
    resp = await client.pods.BindBatch(pod_pb2.BindBatchRequest(bindings=[
        binding("verdict", "n1", pod_uid=seen.metadata.uid, pod_generation=gen),
        binding("edited", "n1", pod_uid=edited.metadata.uid, pod_generation=edited.metadata.generation),
    ]))
    [ok, refused] = resp.results
    assert ok.ok, ok.message
    got = await client.pods.Get(meta_pb2.ObjectKey(namespace="default", name="verdict"))
    assert got.spec.node_name == "n1"
    assert [(c.type, c.status) for c in got.status.conditions] == [("PodScheduled", "True")]
    assert not refused.ok and _code(refused.code) == grpc.StatusCode.ABORTED
    assert "spec changed since the scheduler read it" in refused.message


async def test_a_status_write_during_the_bind_transaction_is_kept_and_the_pod_bound(
    controller: ControllerRunner, client: Client
) -> None:
    await make_node(client, "n1")
    pod = await client.pods.Create(make_pod("racy"))
    binder = controller.controller.pods.binder
    real_txn = binder.store.txn
    raced = []

    async def txn_after_a_status_write(*a: object, **kw: object) -> object:
        if not raced:  # between the binder's read and its transaction
            raced.append(True)
            upd = pod_pb2.Pod()
            upd.CopyFrom(pod)
            upd.status.phase = "Pending"
            upd.status.conditions.add(type="PodScheduled", status="False", reason="Unschedulable")
            await client.pods.UpdateStatus(upd)
        return await real_txn(*a, **kw)  # type: ignore[arg-type]

    binder.store.txn = txn_after_a_status_write  # type: ignore[method-assign]
    try:
        resp = await client.pods.BindBatch(pod_pb2.BindBatchRequest(bindings=[
            binding("racy", "n1", pod_uid=pod.metadata.uid, pod_generation=pod.metadata.generation),
        ]))
    finally:
        binder.store.txn = real_txn  # type: ignore[method-assign]
    assert raced and resp.results[0].ok, resp.results[0].message
    got = await client.pods.Get(meta_pb2.ObjectKey(namespace="default", name="racy"))
    assert got.spec.node_name == "n1" and got.status.phase == "Pending"
    assert [(c.type, c.status) for c in got.status.conditions] == [("PodScheduled", "True")]


def _code(value: int) -> grpc.StatusCode:
    return next(c for c in grpc.StatusCode if c.value[0] == value)


async def test_bind_batch_many_in_groups(client: Client) -> None:
    for n in range(3):
        await make_node(client, f"n{n}")
    names = [f"p{i}" for i in range(150)]
    for name in names:
        await client.pods.Create(make_pod(name))
    resp = await client.pods.BindBatch(pod_pb2.BindBatchRequest(
        bindings=[binding(name, f"n{i % 3}") for i, name in enumerate(names)]))
    assert all(r.ok for r in resp.results), [r.message for r in resp.results if not r.ok][:3]
    unbound = await client.pods.List(meta_pb2.ListOptions(field_selector="spec.nodeName="))
    assert list(unbound.items) == []
    on_n0 = await client.pods.List(meta_pb2.ListOptions(field_selector="spec.nodeName=n0"))
    assert len(on_n0.items) == 50


async def test_bind_to_node_being_deleted_or_gone(client: Client) -> None:
    await make_node(client, "n1")
    await client.pods.Create(make_pod("a"))
    await client.nodes.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="n1")))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.pods.Bind(binding("a", "n1"))
    assert e.value.code() == grpc.StatusCode.ABORTED


async def test_graceful_delete_of_bound_pod_then_finalize(client: Client) -> None:
    await make_node(client, "n1")
    await client.pods.Create(make_pod("a"))
    await client.pods.Bind(binding("a", "n1"))
    watch = client.pods.Watch(meta_pb2.WatchOptions(
        list=meta_pb2.ListOptions(field_selector="spec.nodeName=n1"), send_initial=True))
    assert (await watch.read()).type == meta_pb2.ADDED
    assert (await watch.read()).type == meta_pb2.BOOKMARK

    marked = await client.pods.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="a")))
    assert marked.metadata.HasField("deletion_timestamp")
    assert marked.metadata.deletion_grace_period_seconds == 30
    still = await client.pods.Get(meta_pb2.ObjectKey(name="a"))
    assert still.metadata.HasField("deletion_timestamp")
    ev = await watch.read()
    assert ev.type == meta_pb2.MODIFIED and ev.object.metadata.HasField("deletion_timestamp")

    # A second delete with a shorter grace shortens it; a longer one changes nothing.
    shorter = await client.pods.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="a"),
                                                              grace_period_seconds=5))
    assert shorter.metadata.deletion_grace_period_seconds == 5

    # The agent, once the containers are gone, finalizes with grace 0.
    await client.pods.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="a"),
                                                    grace_period_seconds=0))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.pods.Get(meta_pb2.ObjectKey(name="a"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    while True:
        ev = await watch.read()
        if ev.type != meta_pb2.BOOKMARK:
            break
    assert ev.type in (meta_pb2.MODIFIED, meta_pb2.DELETED)
    if ev.type == meta_pb2.MODIFIED:  # the shortened grace
        ev = await watch.read()
    assert (ev.type, ev.object.metadata.name) == (meta_pb2.DELETED, "a")
    watch.cancel()


async def test_delete_unbound_or_orphaned_pod_is_immediate(client: Client) -> None:
    await client.pods.Create(make_pod("unbound"))
    await client.pods.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="unbound")))
    await make_node(client, "n1")
    await client.pods.Create(make_pod("orphan"))
    await client.pods.Bind(binding("orphan", "n1"))
    await client.nodes.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="n1")))
    await client.pods.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="orphan")))
    assert list((await client.pods.List(meta_pb2.ListOptions())).items) == []


async def test_update_rules(client: Client) -> None:
    await make_node(client, "n1")
    p = await client.pods.Create(make_pod("a"))
    p.spec.containers[0].image = "cowpod/busybox:v2"
    p = await client.pods.Update(p)
    assert p.spec.containers[0].image == "cowpod/busybox:v2"
    assert p.metadata.generation == 2
    p.spec.restart_policy = "Never"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.pods.Update(p)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Forbidden" in (e.value.details() or "")
    p = await client.pods.Get(meta_pb2.ObjectKey(name="a"))
    p.spec.node_name = "n1"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.pods.Update(p)
    assert "use Bind" in (e.value.details() or "")
    # UpdateStatus takes only status.
    p = await client.pods.Get(meta_pb2.ObjectKey(name="a"))
    p.status.phase = "Running"
    p.metadata.labels["ignored"] = "yes"
    s = await client.pods.UpdateStatus(p)
    assert s.status.phase == "Running"
    assert "ignored" not in s.metadata.labels


# --- capacity: a bind never overcommits a node -----------------------------------------------------


async def _node(client: Client, name: str, *, cpu: int = 1000, memory: int = 1 << 30, pods: int = 0) -> None:
    n = node_pb2.Node()
    n.metadata.name = name
    n.status.allocatable.cpu_millis = cpu
    n.status.allocatable.memory_bytes = memory
    n.status.allocatable.pods = pods
    n.status.capacity.CopyFrom(n.status.allocatable)
    await client.nodes.Register(n)


def _sized(name: str, *, cpu: int = 0, memory: int = 0) -> pod_pb2.Pod:
    p = make_pod(name)
    p.spec.containers[0].resources.requests.cpu_millis = cpu
    p.spec.containers[0].resources.requests.memory_bytes = memory
    return p


async def test_bind_refuses_what_does_not_fit_with_the_reason(client: Client) -> None:
    await _node(client, "n1", cpu=1000, memory=768 << 20)
    await client.pods.Create(_sized("a", cpu=500, memory=512 << 20))
    await client.pods.Create(_sized("b", cpu=100, memory=512 << 20))
    await client.pods.Create(_sized("c", cpu=600))
    await client.pods.Bind(binding("a", "n1"))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.pods.Bind(binding("b", "n1"))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "node n1 has insufficient memory (requested 512Mi, free 256Mi)" in (e.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.pods.Bind(binding("c", "n1"))
    assert "node n1 has insufficient cpu (requested 600m, free 500m)" in (e.value.details() or "")
    assert (await client.pods.Get(meta_pb2.ObjectKey(name="b"))).spec.node_name == ""


async def test_bind_refuses_ephemeral_storage_the_node_does_not_have(client: Client) -> None:
    """The bind check counts disk as the scheduler does: requests, a limit standing for a missing one."""
    n = node_pb2.Node()
    n.metadata.name = "d1"
    n.status.allocatable.cpu_millis, n.status.allocatable.memory_bytes = 1000, 1 << 30
    n.status.allocatable.ephemeral_storage_bytes = 1 << 30
    await client.nodes.Register(n)
    a, b = _sized("a"), _sized("b")
    a.spec.containers[0].resources.requests.ephemeral_storage_bytes = 768 << 20
    b.spec.containers[0].resources.limits.ephemeral_storage_bytes = 512 << 20
    await client.pods.Create(a)
    await client.pods.Create(b)
    await client.pods.Bind(binding("a", "d1"))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.pods.Bind(binding("b", "d1"))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    why = "node d1 has insufficient ephemeral-storage (requested 512Mi, free 256Mi)"
    assert why in (e.value.details() or "")


async def test_bind_batch_fills_a_node_and_refuses_the_rest(client: Client) -> None:
    await _node(client, "n1", cpu=1000)
    await _node(client, "n2", cpu=10_000, pods=2)
    for i in range(8):
        await client.pods.Create(_sized(f"p{i}", cpu=300))
    resp = await client.pods.BindBatch(pod_pb2.BindBatchRequest(
        bindings=[binding(f"p{i}", "n1" if i < 5 else "n2") for i in range(8)]))
    got = [(r.ok, _code(r.code) if not r.ok else grpc.StatusCode.OK) for r in resp.results]
    # 3 x 300m fit in 1000m; n2 takes two pods whatever their size.
    assert [ok for ok, _ in got] == [True, True, True, False, False, True, True, False]
    assert {c for ok, c in got if not ok} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert "too many pods" in resp.results[7].message


async def test_terminal_and_deleted_pods_free_their_share(client: Client) -> None:
    await _node(client, "n1", cpu=1000)
    for name in ("a", "b", "c"):
        await client.pods.Create(_sized(name, cpu=600))
    await client.pods.Bind(binding("a", "n1"))
    with pytest.raises(grpc.aio.AioRpcError):
        await client.pods.Bind(binding("b", "n1"))
    done = await client.pods.Get(meta_pb2.ObjectKey(name="a"))
    done.status.phase = "Succeeded"
    await client.pods.UpdateStatus(done)
    await _eventually_binds(client, "b", "n1")
    await client.pods.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="b"), grace_period_seconds=0))
    await _eventually_binds(client, "c", "n1")


async def _eventually_binds(client: Client, name: str, node: str) -> None:
    """The controller's pod cache frees capacity when the watch shows the change (it may lag)."""

    async def bound() -> bool:
        try:
            await client.pods.Bind(binding(name, node))
        except grpc.aio.AioRpcError as e:
            assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e.details()
            return False
        return True

    await eventually(bound, timeout=5, what=f"{name} to fit on {node}")


async def test_two_controllers_racing_binds_never_overcommit(
        client: Client, controller: ControllerRunner, etcd: EtcdMember, etcd_prefix: str) -> None:
    """Two controller processes (one etcd) each get a batch overfilling the same nodes at
    once: their caches are separate, the binding sequence in etcd makes the checks agree."""
    await _node(client, "n1", cpu=1000)
    await _node(client, "n2", cpu=1000)
    names = [f"p{i}" for i in range(24)]
    for name in names:
        await client.pods.Create(_sized(name, cpu=200))
    async with ControllerRunner(etcd.endpoint, etcd_prefix) as other, Client(other.address) as c2:
        half = len(names) // 2

        def batch(ns: list[str]) -> pod_pb2.BindBatchRequest:
            return pod_pb2.BindBatchRequest(bindings=[binding(n, f"n{i % 2 + 1}") for i, n in enumerate(ns)])

        r1, r2 = await asyncio.gather(client.pods.BindBatch(batch(names[:half])),
                                      c2.pods.BindBatch(batch(names[half:])))
    ok = sum(r.ok for r in [*r1.results, *r2.results])
    assert ok == 10  # 5 x 200m on each of two 1000m nodes
    pods = list((await client.pods.List(meta_pb2.ListOptions())).items)
    per_node: dict[str, int] = {}
    for p in pods:
        if p.spec.node_name:
            per_node[p.spec.node_name] = per_node.get(p.spec.node_name, 0) + 200
    assert per_node == {"n1": 1000, "n2": 1000}
