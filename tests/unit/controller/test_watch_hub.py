"""The watch hub over an in-memory store: shared fan-out, selector transitions,
resume from the buffer, overflow, bookmarks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from controller.kinds import PODS
from controller.memstore import MemoryStore
from controller.resource import Resource
from controller.store import Put
from controller.watch import WatchHub, batched, pack
from cowpod.clock import FakeClock
from cowpod.errors import ResourceExhausted
from cowpod.v1 import meta_pb2, pod_pb2


def pod(name: str, *, node: str = "", labels: dict[str, str] | None = None) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    p.metadata.namespace = "default"
    p.metadata.labels.update(labels or {})
    p.spec.node_name = node
    p.spec.containers.add(name="c", image="i")
    return p


class Env:
    def __init__(self, queue_size: int = 100, buffer_size: int = 1000) -> None:
        self.store = MemoryStore()
        self.clock = FakeClock()
        self.hub: WatchHub[pod_pb2.Pod] = WatchHub(self.store, PODS, self.clock,
                                                   queue_size=queue_size, buffer_size=buffer_size)
        self.res = Resource(PODS, self.store, self.clock, self.hub)

    async def put(self, p: pod_pb2.Pod) -> int:
        key = PODS.key("default", p.metadata.name)
        cur = await self.store.get_raw(key)
        if cur is None:
            return (await self.store.create(key, p)).metadata.resource_version
        return (await self.store.update(key, p, expected_revision=cur.mod_revision)).metadata.resource_version

    async def delete(self, name: str) -> None:
        await self.store.delete(PODS.key("default", name), pod_pb2.Pod)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    task = asyncio.create_task(e.hub.run())
    await e.hub.wait_ready()
    yield e
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


class Reader:
    """Pulls decoded events off a watch stream without blocking the test."""

    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self.stream = stream

    async def next(self) -> pod_pb2.PodWatchEvent:
        b = await asyncio.wait_for(anext(self.stream), 5)
        return pod_pb2.PodWatchEvent.FromString(b)

    async def changes(self, n: int) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        while len(out) < n:
            ev = await self.next()
            if ev.type != meta_pb2.BOOKMARK:
                out.append((int(ev.type), ev.object.metadata.name))
        return out


async def test_initial_list_bookmark_then_changes(env: Env) -> None:
    await env.put(pod("a"))
    r = Reader(env.res.watch(meta_pb2.WatchOptions(send_initial=True)))
    first = await r.next()
    assert (first.type, first.object.metadata.name) == (meta_pb2.ADDED, "a")
    bm = await r.next()
    assert bm.type == meta_pb2.BOOKMARK and bm.resource_version == env.store.revision
    await env.put(pod("b"))
    await env.put(pod("a", labels={"x": "1"}))
    await env.delete("b")
    assert await r.changes(3) == [(meta_pb2.ADDED, "b"), (meta_pb2.MODIFIED, "a"), (meta_pb2.DELETED, "b")]


async def test_field_selector_transitions(env: Env) -> None:
    await env.put(pod("a"))
    unbound = Reader(env.res.watch(meta_pb2.WatchOptions(
        list=meta_pb2.ListOptions(field_selector="spec.nodeName="), send_initial=True)))
    on_n1 = Reader(env.res.watch(meta_pb2.WatchOptions(
        list=meta_pb2.ListOptions(field_selector="spec.nodeName=n1"), send_initial=True)))
    assert (await unbound.next()).type == meta_pb2.ADDED
    assert (await unbound.next()).type == meta_pb2.BOOKMARK
    assert (await on_n1.next()).type == meta_pb2.BOOKMARK
    await env.put(pod("a", node="n1"))  # bound: leaves the unbound view, enters n1's
    assert await unbound.changes(1) == [(meta_pb2.DELETED, "a")]
    assert await on_n1.changes(1) == [(meta_pb2.ADDED, "a")]
    await env.delete("a")
    assert await on_n1.changes(1) == [(meta_pb2.DELETED, "a")]


async def test_label_selector_in_and_out(env: Env) -> None:
    r = Reader(env.res.watch(meta_pb2.WatchOptions(list=meta_pb2.ListOptions(label_selector="app=web"))))
    got = asyncio.create_task(r.changes(3))  # the stream subscribes on its first pull
    await settle()
    await env.put(pod("a", labels={"app": "db"}))
    await env.put(pod("a", labels={"app": "web"}))
    await env.put(pod("a", labels={"app": "web", "v": "2"}))
    await env.put(pod("a", labels={"app": "db"}))
    assert await got == [(meta_pb2.ADDED, "a"), (meta_pb2.MODIFIED, "a"), (meta_pb2.DELETED, "a")]


async def test_resume_from_revision_in_buffer(env: Env) -> None:
    r1 = await env.put(pod("a"))
    await env.put(pod("b"))
    await env.put(pod("c"))
    await settle()
    r = Reader(env.res.watch(meta_pb2.WatchOptions(resource_version=r1)))
    assert await r.changes(2) == [(meta_pb2.ADDED, "b"), (meta_pb2.ADDED, "c")]


async def test_resume_before_the_hub_started_uses_a_dedicated_watch() -> None:
    e = Env()
    r1 = await e.put(pod("a"))
    await e.put(pod("b"))
    task = asyncio.create_task(e.hub.run())
    await e.hub.wait_ready()
    try:
        r = Reader(e.res.watch(meta_pb2.WatchOptions(resource_version=r1)))
        assert await r.changes(1) == [(meta_pb2.ADDED, "b")]
        await e.put(pod("c"))
        assert await r.changes(1) == [(meta_pb2.ADDED, "c")]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_slow_stream_is_closed_not_blocking_others() -> None:
    e = Env(queue_size=3)
    task = asyncio.create_task(e.hub.run())
    await e.hub.wait_ready()
    try:
        slow = Reader(e.res.watch(meta_pb2.WatchOptions()))
        fast = Reader(e.res.watch(meta_pb2.WatchOptions()))
        # Start both streams (they subscribe on first pull).
        t_slow = asyncio.create_task(slow.next())
        t_fast = asyncio.create_task(fast.next())
        await settle()
        await e.put(pod("p0"))
        assert (await t_fast).object.metadata.name == "p0"
        assert (await t_slow).object.metadata.name == "p0"
        for i in range(1, 10):
            await e.put(pod(f"p{i}"))
            await settle()
            assert (await fast.next()).object.metadata.name == f"p{i}"
        with pytest.raises(ResourceExhausted, match="fell more than 3 events behind"):
            for _ in range(10):
                await slow.next()
        assert e.hub.subscribers == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_bookmarks_on_idle_streams(env: Env) -> None:
    r = Reader(env.res.watch(meta_pb2.WatchOptions(bookmark_interval_seconds=2)))
    ticker = asyncio.create_task(env.hub.run_ticker(1.0))
    try:
        nxt = asyncio.create_task(r.next())
        await settle()
        await env.clock.advance(3)
        ev = await nxt
        assert ev.type == meta_pb2.BOOKMARK
        assert ev.resource_version == env.store.revision
    finally:
        ticker.cancel()


async def test_events_reach_only_interested_node_streams(env: Env) -> None:
    streams = [Reader(env.res.watch(meta_pb2.WatchOptions(
        list=meta_pb2.ListOptions(field_selector=f"spec.nodeName=n{i}")))) for i in range(3)]
    pulls = [asyncio.create_task(s.next()) for s in streams]
    await settle()
    await env.put(pod("a", node="n1"))
    ev = await pulls[1]
    assert ev.object.metadata.name == "a"
    await settle()
    assert not pulls[0].done() and not pulls[2].done()
    for t in (pulls[0], pulls[2]):
        t.cancel()


async def test_objects_written_in_one_transaction_resume_without_a_gap(env: Env) -> None:
    """One transaction writes three pods at one revision R: the first two events say R - 1
    (resume there and the rest come again), the last says R."""
    stream = env.res.watch(meta_pb2.WatchOptions())
    r = Reader(stream)
    first = asyncio.ensure_future(r.next())
    await settle()
    await env.store.txn([], [Put(PODS.key("default", n), pod(n).SerializeToString()) for n in "abc"])
    evs = [await first, await r.next(), await r.next()]
    rev = env.store.revision
    assert [(e.object.metadata.name, e.resource_version) for e in evs] == [
        ("a", rev - 1), ("b", rev - 1), ("c", rev)]
    assert all(e.object.metadata.resource_version == rev for e in evs)
    # A stream cut after "a" resumes from what "a" said and gets "b" and "c".
    resumed = Reader(env.res.watch(meta_pb2.WatchOptions(resource_version=evs[0].resource_version)))
    assert await resumed.changes(3) == [(meta_pb2.ADDED, "a"), (meta_pb2.ADDED, "b"), (meta_pb2.ADDED, "c")]


async def test_a_client_that_allows_batches_gets_what_is_ready_in_one_message(env: Env) -> None:
    for n in "ab":
        await env.put(pod(n))
    stream = env.res.watch(meta_pb2.WatchOptions(send_initial=True, allow_batches=True))
    initial = pod_pb2.PodWatchEvent.FromString(await asyncio.wait_for(anext(stream), 5))
    assert [(e.type, e.object.metadata.name) for e in initial.batch] == [
        (meta_pb2.ADDED, "a"), (meta_pb2.ADDED, "b"), (meta_pb2.BOOKMARK, "")]
    nxt = asyncio.ensure_future(anext(stream))
    await settle()
    puts = [Put(PODS.key("default", n), pod(n, node="n1").SerializeToString()) for n in "abc"]
    await env.store.txn([], puts)
    msg = pod_pb2.PodWatchEvent.FromString(await asyncio.wait_for(nxt, 5))
    got = [(e.type, e.object.metadata.name, e.object.spec.node_name) for e in msg.batch] or [
        (msg.type, msg.object.metadata.name, msg.object.spec.node_name)]
    # The first event may have left before the others were queued; the rest come together.
    while len(got) < 3:
        m = pod_pb2.PodWatchEvent.FromString(await asyncio.wait_for(anext(stream), 5))
        got += [(e.type, e.object.metadata.name, e.object.spec.node_name) for e in m.batch or [m]]
    assert got == [
        (meta_pb2.MODIFIED, "a", "n1"), (meta_pb2.MODIFIED, "b", "n1"), (meta_pb2.ADDED, "c", "n1")]


def test_pack_builds_a_batch_message_from_encoded_events() -> None:
    evs = [pod_pb2.PodWatchEvent(type=meta_pb2.ADDED, object=pod(f"p{i}" * 40), resource_version=i)
           for i in range(300)]
    parts = [e.SerializeToString() for e in evs]
    assert pack(parts[:1]) == parts[0]
    msgs = [pod_pb2.PodWatchEvent.FromString(b) for b in batched(parts)]
    assert [e for m in msgs for e in m.batch] == evs
    # Lengths past the remembered prefixes (16 KiB and more), and twice over (remembered).
    big = [pod_pb2.PodWatchEvent(type=meta_pb2.ADDED, object=pod("b" * n), resource_version=n)
           for n in (1, 0x3FF0, 0x4000, 70_000)]
    for _ in range(2):
        got = pod_pb2.PodWatchEvent.FromString(pack([e.SerializeToString() for e in big]))
        assert list(got.batch) == big


def test_varint_lengths_match_protobuf_at_every_width() -> None:
    """`pack`'s length prefixes, fast paths included, are protobuf's own varints."""
    from google.protobuf.internal.encoder import _VarintBytes  # type: ignore[attr-defined]

    from controller.etcdwire import varint

    for n in (0, 1, 0x7F, 0x80, 300, 0x3FFF, 0x4000, 1 << 20, (1 << 28) + 5):
        assert varint(n) == _VarintBytes(n), n


def test_a_spliced_event_parses_as_the_decoded_object_in_an_event() -> None:
    """Streams send the stored bytes with a revision stamp appended (no decode, no encode);
    a client parses exactly what decode-then-encode gave, a stale stamp in the stored bytes
    included."""
    from controller.store import decode
    from controller.watch import spliced_event

    p = pod("a", node="n1", labels={"app": "x"})
    p.metadata.resource_version = 3
    p.status.phase = "Running"
    value = p.SerializeToString()
    for type_ in (meta_pb2.ADDED, meta_pb2.MODIFIED, meta_pb2.DELETED):
        got = pod_pb2.PodWatchEvent.FromString(
            spliced_event(pod_pb2.Pod, pod_pb2.PodWatchEvent, value, type_, 42, 41))
        want = pod_pb2.PodWatchEvent(type=type_, object=decode(pod_pb2.Pod, value, 42), resource_version=41)
        assert got == want
        assert got.object.metadata.resource_version == 42


def test_every_watch_event_has_object_in_field_2_and_batch_in_field_4() -> None:
    """What `spliced_event` and `pack` write by hand, for every kind's watch event."""
    import importlib
    import pkgutil

    import cowpod.v1

    seen = 0
    for mod in pkgutil.iter_modules(cowpod.v1.__path__):
        if not mod.name.endswith("_pb2"):
            continue
        desc = importlib.import_module(f"cowpod.v1.{mod.name}").DESCRIPTOR
        for name, msg in desc.message_types_by_name.items():
            if name.endswith("WatchEvent"):
                seen += 1
                assert msg.fields_by_name["object"].number == 2, name
                assert msg.fields_by_name["batch"].number == 4, name
    assert seen >= 5


async def test_streams_with_equal_filters_get_what_each_would_get_alone(env: Env) -> None:
    """The hub offers an event once per group of equal filters; every stream still gets
    exactly `HubEvent.outcome` of its own filter for every event after its own revision,
    bytes or objects, indexed or not."""
    from controller.store import decode
    from controller.watch import ObjectEvent, Subscription

    r0 = await env.put(pod("seed"))
    selectors = [("", ""), ("", ""), ("spec.nodeName=", ""), ("spec.nodeName=", ""),
                 ("spec.nodeName=n1", ""), ("spec.nodeName!=", ""), ("spec.nodeName!=", ""),
                 ("", "app=web"), ("spec.nodeName!=", "app"), ("spec.nodeName!=,spec.nodeName!=n1", "")]
    subs: list[Subscription] = []
    for objects in (False, True):
        for i, (fs, ls) in enumerate(selectors):
            flt = env.res.filter(meta_pb2.ListOptions(field_selector=fs, label_selector=ls))
            sub = env.hub.subscribe(flt, r0 + i % 3, 1.0, objects=objects)
            assert sub is not None
            subs.append(sub)
    assert env.hub.subscribers == len(subs)
    assert len(env.hub._groups) == 14  # 7 distinct filters, bytes and objects
    # Those on spec.nodeName alone are matched from the event's trigger values (4 of 7).
    assert sum(g.on_trigger is not None for g in env.hub._groups.values()) == 8
    await env.put(pod("a"))
    await env.put(pod("b", labels={"app": "web"}))
    await env.put(pod("a", node="n1"))
    await env.put(pod("b", node="n2", labels={"app": "web"}))
    await env.put(pod("a", node="n1", labels={"app": "web"}))
    await env.put(pod("b", node="n2"))
    await env.delete("a")
    await env.delete("b")
    await settle()
    events = [ev for ev in env.hub._buffer if ev.revision > r0]
    assert len(events) == 8
    seen_types = set()
    for sub in subs:
        want = [(out, ev) for ev in events if ev.revision > sub.after
                for out in [ev.outcome(sub.filter)] if out is not None]
        got = list(sub.pending)
        assert len(got) == len(want), sub.filter
        for item, (out, ev) in zip(got, want, strict=True):
            seen_types.add(out)
            if isinstance(item, ObjectEvent):
                stored = ev.raw.prev_value if out[1] else ev.raw.value
                assert (item.type, item.resource_version) == (out[0], ev.resume)
                assert stored is not None
                assert item.object == decode(pod_pb2.Pod, stored, ev.revision)
            else:
                assert item[0] == out and item[1] is ev
    # Every outcome occurred: added, modified, deleted, and moved out of a selector.
    assert {o[0] for o in seen_types} == {meta_pb2.ADDED, meta_pb2.MODIFIED, meta_pb2.DELETED}
    assert {o[1] for o in seen_types if o[0] == meta_pb2.DELETED} == {True, False}
    for sub in subs:
        env.hub.unsubscribe(sub)
        env.hub.unsubscribe(sub)  # twice is harmless (a failed stream's handler does it again)
    assert env.hub.subscribers == 0 and not env.hub._groups
    assert env.hub._unindexed == () and env.hub._by_trigger == {}


async def test_an_overflowing_stream_delivers_what_it_queued_without_a_gap_then_fails() -> None:
    """The queued events are a prefix of the stream (resuming after the last one loses
    nothing); the event that did not fit is not among them."""
    e = Env(queue_size=3)
    task = asyncio.create_task(e.hub.run())
    await e.hub.wait_ready()
    try:
        slow = Reader(e.res.watch(meta_pb2.WatchOptions()))
        first = asyncio.create_task(slow.next())
        await settle()
        await e.put(pod("p0"))
        assert (await first).object.metadata.name == "p0"
        for i in range(1, 6):
            await e.put(pod(f"p{i}"))
        await settle()
        got = [(await slow.next()).object.metadata.name for _ in range(3)]
        assert got == ["p1", "p2", "p3"]
        with pytest.raises(ResourceExhausted, match="fell more than 3 events behind"):
            await slow.next()
        assert e.hub.subscribers == 0
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_spliced_events_with_remembered_stamps_match_fresh_encodings() -> None:
    """`spliced_event` reuses the stamp of an equal (kind, type, revisions); every result,
    across more distinct stamps than it remembers, is the decode-then-encode one."""
    from controller.store import decode
    from controller.watch import _STAMPS_MAX, spliced_event

    value = pod("a", node="n1").SerializeToString()
    for round_ in range(2):
        for rev in range(1, _STAMPS_MAX + 40):
            for type_ in (meta_pb2.ADDED, meta_pb2.DELETED):
                for resume in (rev - 1, rev):
                    got = spliced_event(pod_pb2.Pod, pod_pb2.PodWatchEvent, value, type_, rev, resume)
                    want = pod_pb2.PodWatchEvent(type=type_, object=decode(pod_pb2.Pod, value, rev),
                                                 resource_version=resume)
                    assert pod_pb2.PodWatchEvent.FromString(got) == want, (round_, rev, type_, resume)


def test_a_filter_matches_exactly_as_its_namespace_and_selectors_do() -> None:
    """`Filter.matches` unrolls the selectors' own `matches`; same answers everywhere, and a
    field without a getter fails when matched, as the selector does."""
    from controller.selectors import (
        FieldRequirement,
        FieldSelector,
        parse_field_selector,
        parse_label_selector,
    )
    from controller.watch import Filter

    pods = [pod("a"), pod("b", node="n1", labels={"app": "web"}),
            pod("c", node="n2", labels={"app": "db", "t": "1"})]
    pods[2].metadata.namespace = "other"
    pods[2].status.phase = "Running"
    for ns in ("", "default", "other"):
        for ls in ("", "app", "!app", "app=web", "app!=web", "app in (web,db),t", "app notin (db)"):
            for fs in ("", "spec.nodeName=", "spec.nodeName!=", "spec.nodeName=n1",
                       "spec.nodeName!=n1,status.phase=", "metadata.name=c", "status.phase!=Running"):
                labels = parse_label_selector(ls)
                fields = parse_field_selector(fs, PODS.all_fields())
                flt = Filter(ns, labels, fields)
                assert flt.everything == (not ns and not ls and not fs)
                for p in pods:
                    want = ((not ns or p.metadata.namespace == ns) and labels.matches(p.metadata.labels)
                            and fields.matches(p))
                    assert flt.matches(p) == want, (ns, ls, fs, p.metadata.name)
    unknown: FieldSelector[pod_pb2.Pod] = FieldSelector((FieldRequirement("spec.x", "1", False),), {})
    broken = Filter("", parse_label_selector(""), unknown)
    assert not broken.everything
    with pytest.raises(KeyError):
        broken.matches(pods[0])


async def test_a_consumer_cancelled_while_waiting_does_not_break_the_hub(env: Env) -> None:
    """The hub wakes a stream's consumer through one future; a consumer cancelled while it
    waits leaves a cancelled future behind, which the next offer must pass over, and a new
    consumer of the same subscription gets what was queued."""
    sub = env.hub.subscribe(env.res.filter(meta_pb2.ListOptions()), env.store.revision, 1.0)
    assert sub is not None
    stream = sub.stream()
    waiting = asyncio.ensure_future(anext(stream))
    await settle()
    waiting.cancel()
    sub.tick()  # before the cancelled consumer has run again: its future is cancelled, not done
    await asyncio.gather(waiting, return_exceptions=True)
    assert waiting.cancelled()
    await env.put(pod("a"))
    await settle()
    again = sub.stream()
    ev = pod_pb2.PodWatchEvent.FromString(await asyncio.wait_for(anext(again), 5))
    assert (ev.type, ev.object.metadata.name) == (meta_pb2.ADDED, "a")
    env.hub.unsubscribe(sub)
