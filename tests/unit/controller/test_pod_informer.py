"""The shared pod informer (`controller.pod_informer`) and the hub's object feed it reads
(`controller.reconcile.hub_objects`): one cache and its indexes for every in-process loop,
handlers after the indexes, a late handler replayed in order, the objects the hub decoded
handed out as they are (no second decode), and the loops keeping their rules on it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from controller.job import JobController
from controller.pod_informer import SharedPodInformer, pod_handle
from controller.reconcile import hub_objects, hub_watch
from controller.replicaset import ReplicaSetController
from controller.replicaset_plan import ORPHANS
from controller.watch import ObjectBatch, ObjectEvent
from cowpod.clock import FakeClock
from cowpod.informer import Informer
from cowpod.v1 import meta_pb2, pod_pb2
from cowpod.watches import Watches
from tests.polling import eventually
from tests.unit.controller.test_watch_hub import Env, pod

ADDED, MODIFIED, DELETED = meta_pb2.ADDED, meta_pb2.MODIFIED, meta_pb2.DELETED


def owned_pod(name: str, kind: str, uid: str, *, ns: str = "default", labels: dict[str, str] | None = None
              ) -> pod_pb2.Pod:
    p = pod(name, labels=labels)
    p.metadata.namespace = ns
    p.metadata.uid = f"uid-{name}"
    p.metadata.owner_references.add(kind=kind, name=f"{kind.lower()}-x", uid=uid, controller=True)
    return p


@pytest.fixture
async def hub() -> AsyncIterator[Env]:
    """A pods watch hub over the in-memory store (test_watch_hub's `Env`), running."""
    e = Env()
    task = asyncio.create_task(e.hub.run())
    await e.hub.wait_ready()
    yield e
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def changes(stream: AsyncIterator[Any]) -> list[ObjectEvent]:
    """The next non-BOOKMARK events of an object feed."""
    got: list[ObjectEvent] = []
    while not got:
        got.extend(e for e in (await asyncio.wait_for(anext(stream), 5)).batch if e.type != meta_pb2.BOOKMARK)
    return got


def never(opts: meta_pb2.WatchOptions) -> Any:
    raise AssertionError("a test that feeds pods by hand starts no watch")


async def test_indexes_follow_adds_owner_changes_and_deletes() -> None:
    shared = SharedPodInformer(never)
    a = owned_pod("a", "ReplicaSet", "rs-1")
    b = owned_pod("b", "ReplicaSet", "rs-1", ns="other")
    j = owned_pod("j", "Job", "job-1")
    for p in (a, b, j, pod("free")):
        await shared.deliver(ADDED, p)
    assert {uid: sorted(ps) for uid, ps in shared.owned("ReplicaSet").items()} == {
        "rs-1": [("default", "a"), ("other", "b")]}
    assert list(shared.owned("Job")["job-1"]) == [("default", "j")]
    assert sorted(p.metadata.name for p in shared.in_namespace("default")) == ["a", "free", "j"]
    assert len(shared.cache) == 4
    # A pod re-parented (its controller reference changed) leaves its old owner's index.
    moved = owned_pod("a", "ReplicaSet", "rs-2")
    await shared.deliver(MODIFIED, moved)
    assert sorted(shared.owned("ReplicaSet")) == ["rs-1", "rs-2"]
    assert list(shared.owned("ReplicaSet")["rs-1"]) == [("other", "b")]
    await shared.deliver(DELETED, b)
    await shared.deliver(DELETED, j)
    assert sorted(shared.owned("ReplicaSet")) == ["rs-2"] and dict(shared.owned("Job")) == {}
    assert list(shared.in_namespace("other")) == [] and ("other", "b") not in shared.cache
    # Orphaned (no controller reference any more), then adopted by a Job, then deleted.
    await shared.deliver(MODIFIED, pod("a"))
    assert dict(shared.owned("ReplicaSet")) == {}
    await shared.deliver(MODIFIED, owned_pod("a", "Job", "job-2"))
    assert list(shared.owned("Job")) == ["job-2"]
    await shared.deliver(DELETED, pod("a"))  # a deletion carries the last state; the index is by key
    assert dict(shared.owned("Job")) == {} and ("default", "a") not in shared.cache


async def test_every_handler_sees_the_event_after_the_cache_and_indexes_show_it() -> None:
    shared = SharedPodInformer(never)
    seen: list[tuple[str, int, bool]] = []

    def recorder(who: str) -> Any:
        async def on(type_: int, p: pod_pb2.Pod) -> None:
            in_index = ("default", p.metadata.name) in shared.owned("ReplicaSet").get("rs-1", {})
            seen.append((who, type_, in_index))
        return on

    shared.handle(recorder("first"), name="first")
    shared.handle(recorder("second"), name="second")
    p = owned_pod("a", "ReplicaSet", "rs-1")
    await shared.deliver(ADDED, p)
    await shared.deliver(DELETED, p)
    assert seen == [("first", ADDED, True), ("second", ADDED, True),
                    ("first", DELETED, False), ("second", DELETED, False)]


async def test_a_handler_registered_late_gets_the_cache_then_what_arrived_meanwhile_in_order() -> None:
    shared = SharedPodInformer(never)
    shared._informer.synced = True  # as if the list had been delivered
    shared._informer._synced_event.set()
    for name in ("a", "b"):
        await shared.deliver(ADDED, pod(name))
    seen: list[tuple[int, str]] = []
    gate = asyncio.Event()

    async def slow(type_: int, p: pod_pb2.Pod) -> None:
        seen.append((type_, p.metadata.name))
        if len(seen) == 1:
            await gate.wait()  # events arrive while the replay is under way

    late = shared.handle(slow, name="late")
    task = asyncio.create_task(late.run())
    try:
        await eventually(lambda: len(seen) == 1, what="the replay started")
        assert not late.synced
        await shared.deliver(ADDED, pod("c"))
        await shared.deliver(DELETED, pod("a"))
        gate.set()
        await asyncio.wait_for(late.wait_synced(), 5)
        assert sorted(seen[:2]) == [(ADDED, "a"), (ADDED, "b")]
        assert seen[2:] == [(ADDED, "c"), (DELETED, "a")]
        await shared.deliver(ADDED, pod("d"))
        assert seen[-1] == (ADDED, "d")  # live from now on
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_object_feed_hands_out_the_objects_the_hub_decoded(hub: Env) -> None:
    """The same object reaches the hub's own decode and the in-process consumer: no second
    decode, no encode. Deletions carry the last state at the deletion's revision."""
    await hub.put(pod("before"))
    watch = hub_objects(hub.res, pod_pb2.PodWatchEvent)
    stream = aiter(watch(meta_pb2.WatchOptions(send_initial=True, allow_batches=True)))
    first = await asyncio.wait_for(anext(stream), 5)
    assert isinstance(first, ObjectBatch)
    assert [(e.type, e.object.metadata.name if e.object else None) for e in first.batch] == [
        (ADDED, "before"), (meta_pb2.BOOKMARK, None)]
    decoded: list[Any] = []
    original = hub.hub.observer

    class Spy:
        async def resync(self) -> int:
            raise AssertionError

        def observe(self, ev: Any) -> None:
            decoded.append(ev.new())

    hub.hub.observer = Spy()
    try:
        rev = await hub.put(pod("after", node="n1"))
        got = await changes(stream)
        assert got[0].type == ADDED and got[0].object is decoded[0]
        assert got[0].object.metadata.resource_version == rev == got[0].resource_version
        await hub.delete("after")
        got = await changes(stream)
        assert got[0].type == DELETED and got[0].object.spec.node_name == "n1"
        assert got[0].object.metadata.resource_version == got[0].resource_version > rev
    finally:
        hub.hub.observer = original
        await stream.aclose()  # type: ignore[attr-defined]


async def test_an_informer_on_the_object_feed_agrees_with_one_on_the_byte_stream(hub: Env) -> None:
    for i in range(3):
        await hub.put(pod(f"p{i}", labels={"app": "x"}))
    by_objects: Informer[pod_pb2.Pod] = Informer(hub_objects(hub.res, pod_pb2.PodWatchEvent))
    by_bytes: Informer[pod_pb2.Pod] = Informer(hub_watch(hub.res, pod_pb2.PodWatchEvent))
    tasks = [asyncio.create_task(i.run()) for i in (by_objects, by_bytes)]
    try:
        await asyncio.wait_for(asyncio.gather(by_objects.wait_synced(), by_bytes.wait_synced()), 5)
        await hub.put(pod("p1", node="n2", labels={"app": "y"}))
        await hub.delete("p0")
        await hub.put(pod("p3"))

        def same() -> bool:
            return by_objects.resource_version == by_bytes.resource_version and \
                by_objects.cache == by_bytes.cache and ("default", "p3") in by_objects.cache

        await eventually(same, what="both informers at the same revision with the same pods")
        assert sorted(by_objects.cache) == [("default", "p1"), ("default", "p2"), ("default", "p3")]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_two_loops_on_one_informer_read_one_cache() -> None:
    """The ReplicaSet and Job loops given the controller's shared informer hold no pods of
    their own: both read the shared objects; each still sees only its own kind's pods."""
    shared = SharedPodInformer(never)
    clock = FakeClock()
    rsc = ReplicaSetController(None, Watches.over(None), clock, pod_informer=shared)  # type: ignore[arg-type]
    client = SimpleNamespace(jobs=SimpleNamespace(Get=never, Watch=never))
    jobs = JobController(client, clock, watch_pods=shared)  # type: ignore[arg-type]
    p_rs = owned_pod("web-1", "ReplicaSet", "rs-1")
    p_job = owned_pod("batch-1", "Job", "job-1", labels={jobs.pod_label: "job-1"})
    p_unlabelled = owned_pod("batch-2", "Job", "job-1")
    for p in (p_rs, p_job, p_unlabelled):
        await shared.deliver(ADDED, p)
    assert rsc.pods.shared is jobs.pods.shared is shared
    assert rsc._owned["rs-1"][("default", "web-1")] is p_rs
    # The Job loop counts the pods carrying its label, as its own label-selected informer did.
    assert jobs.index.owned("job-1") == [p_job] and list(jobs.index.owners()) == ["job-1"]
    # Each loop's handler marked its own key (the set is not known yet: its orphans).
    assert ORPHANS in rsc.driver.dirty and ("default", "job-x") in jobs.driver.dirty


async def test_a_private_informer_runs_with_its_handle() -> None:
    """Given a plain watch function (a loop out of process, a test), the handle runs its own."""
    sent = asyncio.Queue[Any]()

    async def watch(opts: meta_pb2.WatchOptions) -> AsyncIterator[Any]:
        assert opts.send_initial
        while True:
            yield await sent.get()

    seen: list[str] = []

    async def on(type_: int, p: pod_pb2.Pod) -> None:
        seen.append(p.metadata.name)

    h = pod_handle(watch, on, name="private")
    task = asyncio.create_task(h.run())
    try:
        await sent.put(ObjectBatch([ObjectEvent(ADDED, pod("a"), 5),
                                    ObjectEvent(meta_pb2.BOOKMARK, None, 5)]))
        await asyncio.wait_for(h.wait_synced(), 5)
        assert seen == ["a"] and list(h.cache) == [("default", "a")]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    with pytest.raises(asyncio.CancelledError):
        await task
