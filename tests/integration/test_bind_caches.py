"""Binding from the controller's caches (controller/binder.py, "Reading from the controller's
caches"): the same outcomes as checking on etcd, whatever the caches hold.

Each scenario runs three ways against a real etcd: with the caches off (the batched read), on
the controller's own informers once they have caught up, and on caches that are stale or wrong
in every way a lagging informer can be (and some it cannot: a cached pod that says it is bound).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Generic, TypeVar

import grpc
import pytest

from controller.kinds import NODES, PODS
from controller.node_usage import bindseq_key, seq_value
from controller.resource import set_time
from controller.store import Compare, Put, encode
from controller.testing import ControllerRunner, make_node, make_pod
from cowpod.client import Client
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2
from tests.polling import eventually

pytestmark = pytest.mark.integration


T = TypeVar("T")


class FixedCache(Generic[T]):
    """An informer's view frozen at what the test put in it."""

    def __init__(self, objs: Mapping[tuple[str, str], T], *, synced: bool = True) -> None:
        self.synced = synced
        self.cache = dict(objs)


def binding(name: str, node: str, pod: pod_pb2.Pod | None = None) -> pod_pb2.Binding:
    b = pod_pb2.Binding(pod=meta_pb2.ObjectKey(namespace="default", name=name), node_name=node)
    if pod is not None:  # as the scheduler sends it
        b.pod_uid, b.pod_generation = pod.metadata.uid, pod.metadata.generation
    return b


def _code(value: int) -> grpc.StatusCode:
    return next(c for c in grpc.StatusCode if c.value[0] == value)


def _key(name: str) -> meta_pb2.ObjectKey:
    return meta_pb2.ObjectKey(namespace="default", name=name)


@pytest.mark.parametrize("caches", ["off", "informers", "stale"])
async def test_every_outcome_is_the_one_etcd_gives(controller: ControllerRunner, client: Client,
                                                   caches: str) -> None:
    ctl = controller.controller
    assert ctl is not None
    binder = ctl.pods.binder
    for n in ("n1", "n2", "ngone", "ndel"):
        await make_node(client, n)
    pods = {name: await client.pods.Create(make_pod(name))
            for name in ("ok", "racy", "edited", "bound", "lies", "gone", "dup", "onngone", "onndel")}
    # What a lagging informer would hold: everything as it was before the changes below.
    stale_pods = {("default", n): await client.pods.Get(_key(n)) for n in pods}
    stale_nodes = {("", n.metadata.name): n for n in (await client.nodes.List(meta_pb2.ListOptions())).items}

    # The changes the stale caches have not seen.
    pods["new"] = await client.pods.Create(make_pod("new"))
    await make_node(client, "nnew")
    status = pod_pb2.Pod()
    status.CopyFrom(pods["racy"])
    status.status.conditions.add(type="PodScheduled", status="False", reason="Unschedulable")
    await client.pods.UpdateStatus(status)  # a status write: a binding by generation still holds
    edited = await client.pods.Get(_key("edited"))
    edited.spec.tolerations.add(key="dedicated", operator="Exists")
    await client.pods.Update(edited)  # a spec change: it does not
    await client.pods.Bind(binding("bound", "n2"))
    await client.pods.Delete(meta_pb2.DeleteOptions(key=_key("gone")))
    await client.nodes.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="ngone")))
    ndel = await ctl.store.get(NODES.key("", "ndel"), node_pb2.Node)
    set_time(ndel.metadata.deletion_timestamp, ctl.clock.now())
    await ctl.store.update(NODES.key("", "ndel"), ndel, expected_revision=ndel.metadata.resource_version)
    # ... and one that no informer would hold: a cached pod that says it is bound already.
    lying = pod_pb2.Pod()
    lying.CopyFrom(stale_pods[("default", "lies")])
    lying.spec.node_name = "n2"
    stale_pods[("default", "lies")] = lying

    if caches == "off":
        binder.use_caches(FixedCache[pod_pb2.Pod]({}, synced=False),
                          FixedCache[node_pb2.Node]({}, synced=False))
    elif caches == "stale":
        binder.use_caches(FixedCache(stale_pods), FixedCache(stale_nodes))
    else:
        last = (await client.pods.Get(_key("bound"))).metadata.resource_version

        def caught_up() -> bool:
            c = ctl.pod_informer.cache.get(("default", "bound"))
            return c is not None and c.metadata.resource_version >= last \
                and ("", "nnew") in ctl.node_informer.cache and ("", "ngone") not in ctl.node_informer.cache

        await eventually(caught_up, timeout=10, what="the informers to show the changes")

    resp = await client.pods.BindBatch(pod_pb2.BindBatchRequest(bindings=[
        binding("ok", "n1", pods["ok"]),
        binding("racy", "n1", pods["racy"]),
        binding("edited", "n1", pods["edited"]),
        binding("bound", "n1", pods["bound"]),
        binding("lies", "n1", pods["lies"]),
        binding("gone", "n1", pods["gone"]),
        binding("new", "nnew", pods["new"]),
    ]))
    # Alone, so that no other binding's compare loses their transactions for them.
    ngone = await client.pods.BindBatch(pod_pb2.BindBatchRequest(bindings=[
        binding("onngone", "ngone", pods["onngone"])]))
    ndel = await client.pods.BindBatch(pod_pb2.BindBatchRequest(bindings=[
        binding("onndel", "ndel", pods["onndel"])]))
    # A pod named twice goes through the batched read whatever the caches hold.
    dup = await client.pods.BindBatch(pod_pb2.BindBatchRequest(bindings=[
        binding("dup", "n1", pods["dup"]),
        binding("dup", "n2", pods["dup"]),
    ]))
    got = [(r.pod.name, _code(r.code) if not r.ok else grpc.StatusCode.OK, re.sub(r"\d+", "N", r.message))
           for r in [*resp.results, *ngone.results, *ndel.results, *dup.results]]
    assert got == [
        ("ok", grpc.StatusCode.OK, ""),
        ("racy", grpc.StatusCode.OK, ""),
        ("edited", grpc.StatusCode.ABORTED, 'pods "default/edited": its spec changed since the scheduler '
                                            "read it (generation N, now N)"),
        ("bound", grpc.StatusCode.ABORTED, 'pods "default/bound" is already bound to node "nN"'),
        ("lies", grpc.StatusCode.OK, ""),
        ("gone", grpc.StatusCode.NOT_FOUND, 'pods "default/gone" not found'),
        ("new", grpc.StatusCode.OK, ""),
        ("onngone", grpc.StatusCode.ABORTED, 'cannot bind pods "default/onngone": node "ngone" not found'),
        ("onndel", grpc.StatusCode.ABORTED,
         'cannot bind pods "default/onndel": node "ndel" is being deleted'),
        ("dup", grpc.StatusCode.OK, ""),
        ("dup", grpc.StatusCode.ABORTED, 'pods "default/dup" appears twice in one batch; only the first '
                                         "binding counts"),
    ]
    # What was written is the pod etcd held, bound: the status write kept, one PodScheduled.
    racy = await client.pods.Get(_key("racy"))
    assert racy.spec.node_name == "n1"
    assert [(c.type, c.status) for c in racy.status.conditions] == [("PodScheduled", "True")]
    assert resp.results[1].resource_version == racy.metadata.resource_version
    for name, node in (("ok", "n1"), ("lies", "n1"), ("new", "nnew"), ("dup", "n1"), ("bound", "n2")):
        assert (await client.pods.Get(_key(name))).spec.node_name == node


async def test_synced_informers_spare_the_read_and_write_what_it_would(
        controller: ControllerRunner, client: Client) -> None:
    ctl = controller.controller
    assert ctl is not None
    binder = ctl.pods.binder
    await make_node(client, "n1")
    created = [await client.pods.Create(make_pod(f"p{i}")) for i in range(3)]
    await eventually(lambda: all(("default", p.metadata.name) in ctl.pod_informer.cache for p in created)
                     and ("", "n1") in ctl.node_informer.cache, timeout=10, what="the informers to have them")
    shared = [ctl.pod_informer.cache[("default", p.metadata.name)] for p in created]
    calls: list[str] = []
    real_get_many, real_txn = binder.store.get_many, binder.store.txn

    async def get_many(*a: object, **kw: object) -> object:
        calls.append("get_many")
        return await real_get_many(*a, **kw)  # type: ignore[arg-type]

    async def txn(*a: object, **kw: object) -> object:
        calls.append("txn")
        return await real_txn(*a, **kw)  # type: ignore[arg-type]

    binder.store.get_many, binder.store.txn = get_many, txn  # type: ignore[assignment]
    try:
        resp = await client.pods.BindBatch(pod_pb2.BindBatchRequest(
            bindings=[binding(p.metadata.name, "n1", p) for p in created]))
    finally:
        binder.store.get_many, binder.store.txn = real_get_many, real_txn  # type: ignore[method-assign]
    assert [r.ok for r in resp.results] == [True] * 3
    assert calls == ["txn"]  # no read; one transaction, not lost
    for p, r in zip(created, resp.results, strict=True):
        got = await client.pods.Get(_key(p.metadata.name))
        want = pod_pb2.Pod()
        want.CopyFrom(p)
        want.spec.node_name = "n1"
        want.metadata.resource_version = r.resource_version
        want.status.conditions.add().CopyFrom(got.status.conditions[0])
        assert got == want  # the cached pod, bound: nothing else changed
        assert [(c.type, c.status) for c in got.status.conditions] == [("PodScheduled", "True")]
    # The informer's objects are everyone's: the binder bound copies.
    assert [(s.spec.node_name, len(s.status.conditions)) for s in shared] == [("", 0)] * 3


@pytest.mark.parametrize("caches", ["off", "stale"])
async def test_a_write_between_check_and_commit_is_read_back_and_judged(
        controller: ControllerRunner, client: Client, caches: str) -> None:
    """The transaction has no failure branch: what beat it is read afterwards, on both paths."""
    ctl = controller.controller
    assert ctl is not None
    binder = ctl.pods.binder
    await make_node(client, "n1")
    keep = await client.pods.Create(make_pod("keep"))
    lose = await client.pods.Create(make_pod("lose"))
    if caches == "off":
        binder.use_caches(FixedCache[pod_pb2.Pod]({}, synced=False),
                          FixedCache[node_pb2.Node]({}, synced=False))
    else:
        node = await client.nodes.Get(meta_pb2.ObjectKey(name="n1"))
        binder.use_caches(FixedCache({("default", "keep"): keep, ("default", "lose"): lose}),
                          FixedCache({("", "n1"): node}))
    real_txn = binder.store.txn
    raced: list[bool] = []
    calls: list[str] = []

    async def txn_after_writes(compares: object, success: object, *a: object, **kw: object) -> object:
        if compares and not raced:  # the binder's commit, after its check
            raced.append(True)
            upd = pod_pb2.Pod()
            upd.CopyFrom(keep)
            upd.status.conditions.add(type="PodScheduled", status="False", reason="Unschedulable")
            await client.pods.UpdateStatus(upd)  # a status write: the binding by generation holds
            # Bound by another controller process (through this one's binder it would wait
            # for node n1, which this commit holds): the binding does not hold.
            key = PODS.key("default", "lose")
            other = await ctl.store.get(key, pod_pb2.Pod)
            other.spec.node_name = "n1"
            done = await real_txn([Compare.at(key, other.metadata.resource_version)],
                                  [Put(key, encode(other)), Put(bindseq_key("n1"), seq_value(key))])
            assert done.succeeded
        calls.append("write" if compares else "read")
        return await real_txn(compares, success, *a, **kw)  # type: ignore[arg-type]

    binder.store.txn = txn_after_writes  # type: ignore[assignment]
    try:
        resp = await client.pods.BindBatch(pod_pb2.BindBatchRequest(
            bindings=[binding("keep", "n1", keep), binding("lose", "n1", lose)]))
    finally:
        binder.store.txn = real_txn  # type: ignore[method-assign]
    got = [(r.ok, r.message) for r in resp.results]
    assert got == [(True, ""), (False, 'pods "default/lose" is already bound to node "n1"')]
    # (The writes inside went through it too, before the binder's.)
    assert raced and calls[-3:] == ["write", "read", "write"]  # lost, read back, retried
    kept = await client.pods.Get(_key("keep"))
    assert kept.spec.node_name == "n1"
    assert [(c.type, c.status) for c in kept.status.conditions] == [("PodScheduled", "True")]


async def test_a_cached_nodes_new_allocatable_counts_from_its_next_version(
        controller: ControllerRunner, client: Client) -> None:
    """The binder remembers a cached node's allocatable by the node's mod revision."""
    ctl = controller.controller
    assert ctl is not None
    await make_node(client, "n1", cpu_millis=1000)
    for name in ("a", "b", "c"):
        p = make_pod(name)
        p.spec.containers[0].resources.requests.cpu_millis = 600
        await client.pods.Create(p)

    async def bind(name: str) -> pod_pb2.BindResult:
        want = await client.pods.Get(_key(name))
        await eventually(lambda: ("default", name) in ctl.pod_informer.cache, timeout=10,
                         what=f"the informer to have {name}")
        resp = await client.pods.BindBatch(pod_pb2.BindBatchRequest(bindings=[binding(name, "n1", want)]))
        result: pod_pb2.BindResult = resp.results[0]
        return result

    async def allocatable(cpu: int) -> None:
        node = await client.nodes.Get(meta_pb2.ObjectKey(name="n1"))
        node.status.allocatable.cpu_millis = node.status.capacity.cpu_millis = cpu
        rv = (await client.nodes.UpdateStatus(node)).metadata.resource_version

        def seen() -> bool:
            cached = ctl.node_informer.cache.get(("", "n1"))
            return cached is not None and cached.metadata.resource_version >= rv

        await eventually(seen, timeout=10, what="the node informer to show the new allocatable")

    await eventually(lambda: ("", "n1") in ctl.node_informer.cache, timeout=10, what="n1 cached")
    assert (await bind("a")).ok
    refused = await bind("b")
    assert not refused.ok and "insufficient cpu" in refused.message
    await allocatable(2000)
    assert (await bind("b")).ok
    await allocatable(1000)
    refused = await bind("c")
    assert not refused.ok and "insufficient cpu" in refused.message


@pytest.mark.parametrize("caches", ["off", "stale"])
async def test_a_node_created_again_between_check_and_commit(
        controller: ControllerRunner, client: Client, caches: str) -> None:
    """Checked on the batched read, the node is the one created at the revision read: one
    created again since is not it (refused as gone). Checked on a cache, the loss is judged
    again on the keys read back, as a batched read then would: the new node takes it."""
    ctl = controller.controller
    assert ctl is not None
    binder = ctl.pods.binder
    await make_node(client, "n1")
    p = await client.pods.Create(make_pod("p"))
    if caches == "off":
        binder.use_caches(FixedCache[pod_pb2.Pod]({}, synced=False),
                          FixedCache[node_pb2.Node]({}, synced=False))
    else:
        node = await client.nodes.Get(meta_pb2.ObjectKey(name="n1"))
        binder.use_caches(FixedCache({("default", "p"): p}), FixedCache({("", "n1"): node}))
    real_txn = binder.store.txn
    raced: list[bool] = []

    async def txn_after_recreate(compares: object, success: object, *a: object, **kw: object) -> object:
        if compares and not raced:  # the binder's commit, after its check
            raced.append(True)
            key = NODES.key("", "n1")
            old = await ctl.store.delete(key, node_pb2.Node)
            old.metadata.resource_version = 0
            await ctl.store.create(key, old)
        return await real_txn(compares, success, *a, **kw)  # type: ignore[arg-type]

    binder.store.txn = txn_after_recreate  # type: ignore[assignment]
    try:
        resp = await client.pods.BindBatch(pod_pb2.BindBatchRequest(bindings=[binding("p", "n1", p)]))
    finally:
        binder.store.txn = real_txn  # type: ignore[method-assign]
    assert raced
    got = [(r.ok, r.message) for r in resp.results]
    if caches == "off":
        assert got == [(False, 'cannot bind pods "default/p": node "n1" not found')]
        assert (await client.pods.Get(_key("p"))).spec.node_name == ""
    else:
        assert got == [(True, "")]
        assert (await client.pods.Get(_key("p"))).spec.node_name == "n1"
