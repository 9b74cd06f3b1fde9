"""The store contract: `MemoryStore` (the fake unit tests run on) against `EtcdStore`
on a real etcd, the same tests on both, so the fake cannot drift from etcd's
semantics without a test failing here (#16).

Revisions are compared relative to a revision read in the test: the session's etcd
is shared by every test (each under its own key prefix), and its revision is global.
Compaction is global too, so those tests get an etcd member of their own.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator

import pytest

from controller.memstore import MemoryStore
from controller.store import (
    Compare,
    Delete,
    EtcdStore,
    EventType,
    Get,
    KeyValue,
    Put,
    RawEvent,
    Store,
    Target,
)
from cowpod.errors import AlreadyExists, Conflict, CowpodError, NotFound, OutOfRange
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import pod_pb2
from tests.polling import eventually

pytestmark = pytest.mark.integration

KINDS = ["memory", "etcd"]


def pod(name: str, image: str = "img") -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    p.metadata.namespace = "default"
    p.spec.containers.add(name="app", image=image)
    return p


def key(name: str) -> str:
    return f"registry/pods/default/{name}"


@pytest.fixture(params=KINDS)
async def store(request: pytest.FixtureRequest, etcd_prefix: str) -> AsyncIterator[Store]:
    s: Store
    if request.param == "memory":
        s = MemoryStore()
    else:
        member: EtcdMember = request.getfixturevalue("etcd")
        s = EtcdStore([member.endpoint], etcd_prefix)
    yield s
    await s.close()


@pytest.fixture(params=KINDS)
async def compactable(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> AsyncIterator[Store]:
    """A store whose history this test may compact: etcd compacts every prefix at once."""
    if request.param == "memory":
        yield MemoryStore()
        return
    member = EtcdMember(data_dir=tmp_path / "etcd", log_path=tmp_path / "etcd.log")
    member.start()
    try:
        await asyncio.to_thread(member.wait_ready)
        s = EtcdStore([member.endpoint], "/contract")
        yield s
        await s.close()
    finally:
        member.stop()


async def collect(store: Store, prefix: str, start: int, until: int) -> list[RawEvent]:
    """Every event under `prefix` from revision `start` until one at `until` has arrived."""
    out: list[RawEvent] = []

    async def run() -> None:
        async for batch in store.watch(prefix, start):
            out.extend(batch.events)
            if any(e.mod_revision >= until for e in batch.events):
                return

    await asyncio.wait_for(run(), 10)
    return out


# -- reads and writes -----------------------------------------------------------------------------


async def test_create_get_and_the_revisions_of_a_key(store: Store) -> None:
    before = await store.current_revision()
    made = await store.create(key("a"), pod("a"))
    assert made.metadata.resource_version == before + 1
    kv = await store.get_raw(key("a"))
    assert kv is not None
    assert (kv.mod_revision, kv.create_revision, kv.version) == (before + 1, before + 1, 1)
    got = await store.get(key("a"), pod_pb2.Pod)
    assert got.metadata.resource_version == before + 1 and got.spec.containers[0].image == "img"
    with pytest.raises(AlreadyExists):
        await store.create(key("a"), pod("a"))
    assert await store.current_revision() == before + 1  # a refused create writes nothing


async def test_update_moves_mod_revision_and_version_not_create_revision(store: Store) -> None:
    made = await store.create(key("a"), pod("a"))
    rv = made.metadata.resource_version
    updated = await store.update(key("a"), pod("a", "img2"), expected_revision=rv)
    assert updated.metadata.resource_version == rv + 1
    kv = await store.get_raw(key("a"))
    assert kv is not None and (kv.mod_revision, kv.create_revision, kv.version) == (rv + 1, rv, 2)
    with pytest.raises(Conflict):
        await store.update(key("a"), pod("a", "img3"), expected_revision=rv)
    with pytest.raises(NotFound):
        await store.update(key("b"), pod("b"), expected_revision=rv)
    with pytest.raises(NotFound):
        await store.update(key("b"), pod("b"), expected_revision=0)
    await store.update(key("a"), pod("a", "img4"), expected_revision=0)  # 0: only "it exists"
    assert (await store.get(key("a"), pod_pb2.Pod)).spec.containers[0].image == "img4"


async def test_delete_returns_the_last_value_at_the_deletion_revision(store: Store) -> None:
    made = await store.create(key("a"), pod("a"))
    rv = made.metadata.resource_version
    await store.update(key("a"), pod("a", "img2"), expected_revision=rv)
    with pytest.raises(Conflict):
        await store.delete(key("a"), pod_pb2.Pod, expected_revision=rv)
    gone = await store.delete(key("a"), pod_pb2.Pod, expected_revision=rv + 1)
    assert gone.spec.containers[0].image == "img2" and gone.metadata.resource_version == rv + 2
    assert await store.get_raw(key("a")) is None
    with pytest.raises(NotFound):
        await store.get(key("a"), pod_pb2.Pod)
    with pytest.raises(NotFound):
        await store.delete(key("a"), pod_pb2.Pod)
    assert await store.current_revision() == rv + 2
    made = await store.create(key("a"), pod("a"))  # created anew: a new create revision, version 1
    kv = await store.get_raw(key("a"))
    assert kv is not None and (kv.create_revision, kv.version) == (made.metadata.resource_version, 1)


async def test_list_is_by_prefix_in_key_order_at_the_current_revision(store: Store) -> None:
    for name in ("b", "a", "ab"):
        await store.create(key(name), pod(name))
    await store.create("registry/pods/other/a", pod("a"))
    items, rev = await store.list("registry/pods/default/", pod_pb2.Pod)
    assert [p.metadata.name for p in items] == ["a", "ab", "b"]
    assert rev == await store.current_revision()
    kvs, _ = await store.list_raw("registry/pods/default/a")
    assert [kv.key for kv in kvs] == [key("a"), key("ab")]
    assert await store.list_raw("registry/nothing/") == ([], rev)
    many = await store.get_many([key("b"), key("zz"), key("a")])
    assert [kv.key if kv else None for kv in many] == [key("b"), None, key("a")]


# -- transactions ---------------------------------------------------------------------------------


async def test_txn_runs_the_branch_its_compares_pick(store: Store) -> None:
    made = await store.create(key("a"), pod("a"))
    rv = made.metadata.resource_version
    res = await store.txn([Compare.at(key("a"), rv)], [Put(key("b"), b"x"), Get(key("a"))], [Get(key("b"))])
    assert res.succeeded and res.revision == rv + 1
    assert [kv.key if kv else None for kv in res.gets] == [key("a")]
    res = await store.txn([Compare.at(key("a"), rv - 1)], [Put(key("b"), b"y")], [Get(key("b"))])
    assert not res.succeeded and res.revision == rv + 1
    assert [kv.value if kv else None for kv in res.gets] == [b"x"]
    # Compares on create revision and version, with every operator.
    assert (await store.txn([Compare.created_at(key("a"), rv)], [])).succeeded
    assert (await store.txn([Compare(key("a"), Target.VERSION, "=", 1)], [])).succeeded
    assert (await store.txn([Compare(key("a"), Target.MOD, "<", rv + 1)], [])).succeeded
    assert (await store.txn([Compare(key("b"), Target.MOD, ">", rv)], [])).succeeded
    assert (await store.txn([Compare(key("b"), Target.MOD, "!=", rv)], [])).succeeded
    assert not (await store.txn([Compare.absent(key("b"))], [])).succeeded
    assert (await store.txn([Compare.absent(key("zz"))], [])).succeeded


async def test_version_counts_the_writes_since_creation(store: Store) -> None:
    await store.txn([], [Put(key("v"), b"1")])
    await store.txn([], [Put(key("v"), b"2")])
    await store.txn([], [Put(key("v"), b"3")])
    kv = await store.get_raw(key("v"))
    assert kv is not None and kv.version == 3
    assert (await store.txn([Compare(key("v"), Target.VERSION, "=", 3)], [])).succeeded
    assert (await store.txn([Compare(key("v"), Target.VERSION, ">", 2)], [])).succeeded


async def test_a_txn_that_changes_nothing_keeps_the_revision(store: Store) -> None:
    await store.create(key("a"), pod("a"))
    rev = await store.current_revision()
    res = await store.txn([], [Get(key("a")), Get(key("zz"))])
    assert res.revision == rev
    res = await store.txn([], [Delete(key("zz"))])  # deletes nothing: etcd writes no revision
    assert res.revision == rev and await store.current_revision() == rev
    res = await store.txn([], [Delete(key("a")), Delete(key("zz"))])
    assert res.revision == rev + 1


async def test_a_txn_writing_one_key_twice_is_refused(store: Store) -> None:
    """etcd refuses it in either branch, whichever would run (group commit must never
    merge two writes of one key into one transaction; the fake must not hide that)."""
    rev = await store.current_revision()
    for ops in ([Put(key("a"), b"1"), Put(key("a"), b"2")], [Put(key("a"), b"1"), Delete(key("a"))]):
        with pytest.raises(CowpodError, match="duplicate key"):
            await store.txn([], ops)
        with pytest.raises(CowpodError, match="duplicate key"):
            await store.txn([Compare.absent(key("a"))], [], ops)
    assert await store.current_revision() == rev and await store.get_raw(key("a")) is None
    await store.txn([], [Get(key("a")), Get(key("a")), Put(key("b"), b"x")])  # reads may repeat


async def test_create_many_answers_each_item_as_its_own_create_would(store: Store) -> None:
    """One result per item, in order: the object at the revision it was stored at, or the
    error its own `create` would raise (an existing key; of two items with one key, exactly
    one is created: which one is up to the store, as for two concurrent creates)."""
    await store.create(key("old"), pod("old"))
    items = [(key("a"), pod("a")), (key("old"), pod("old", "new")), (key("b"), pod("b")),
             (key("a"), pod("a", "again"))]
    out = await store.create_many(items)
    assert [type(o).__name__ for o in out[1:3]] == ["AlreadyExists", "Pod"]
    assert str(out[1]) == 'pods "default/old" already exists'
    assert sorted(type(o).__name__ for o in (out[0], out[3])) == ["AlreadyExists", "Pod"]
    won = out[0] if isinstance(out[0], pod_pb2.Pod) else out[3]
    for name, made in (("a", won), ("b", out[2])):
        assert isinstance(made, pod_pb2.Pod)
        kv = await store.get_raw(key(name))
        assert kv is not None and kv.mod_revision == made.metadata.resource_version
        stored = await store.get(key(name), pod_pb2.Pod)
        assert stored.spec.containers[0].image == made.spec.containers[0].image
    assert (await store.get(key("old"), pod_pb2.Pod)).spec.containers[0].image == "img"
    assert await store.create_many([]) == []


async def test_a_put_with_a_lease_etcd_never_granted_is_refused(store: Store) -> None:
    lease = await store.grant_lease(30)
    await store.create(key("a"), pod("a"), lease=lease)
    kv = await store.get_raw(key("a"))
    assert kv is not None and kv.lease == lease
    rev = await store.current_revision()
    with pytest.raises(CowpodError, match="lease"):
        await store.txn([], [Put(key("b"), b"x", lease=lease + 1_000_000)])
    assert await store.get_raw(key("b")) is None and await store.current_revision() == rev


# -- watch ----------------------------------------------------------------------------------------


async def test_watch_replays_from_a_revision_with_prev_values(store: Store) -> None:
    start = await store.current_revision() + 1
    a = await store.create(key("a"), pod("a"))
    await store.create("registry/nodes/n1", pod("n1"))  # another prefix: not in the watch
    await store.update(key("a"), pod("a", "img2"), expected_revision=a.metadata.resource_version)
    gone = await store.delete(key("a"), pod_pb2.Pod)
    end = gone.metadata.resource_version
    events = await collect(store, "registry/pods/", start, end)
    created = a.metadata.resource_version
    assert [(e.type, e.key, e.mod_revision, e.create_revision) for e in events] == [
        (EventType.PUT, key("a"), created, created),
        (EventType.PUT, key("a"), created + 2, created),
        (EventType.DELETE, key("a"), end, created),
    ]
    assert events[0].prev_value is None
    assert pod_pb2.Pod.FromString(events[1].prev_value or b"").spec.containers[0].image == "img"
    assert events[2].value == b""
    assert pod_pb2.Pod.FromString(events[2].prev_value or b"").spec.containers[0].image == "img2"


async def test_watch_from_now_sees_only_later_changes(store: Store) -> None:
    await store.create(key("old"), pod("old"))
    seen: list[RawEvent] = []

    async def watch() -> None:
        async for batch in store.watch("registry/pods/", 0):
            seen.extend(batch.events)
            return

    task = asyncio.create_task(watch())
    written = 0

    async def a_write_reported() -> bool:
        # "From now" begins once the store has set the watch up: write until one is reported.
        nonlocal written
        await store.create(key(f"new{written}"), pod(f"new{written}"))
        written += 1
        await asyncio.wait({task}, timeout=0.1)
        return task.done()

    await eventually(a_write_reported, timeout=10, what="the watch to report a write")
    task.result()
    assert seen and all(e.key.startswith(key("new")) for e in seen)


async def test_a_compacted_revision_cannot_be_watched(compactable: Store) -> None:
    s = compactable
    for i in range(3):
        await s.create(key(f"p{i}"), pod(f"p{i}"))
    rev = await s.current_revision()
    await s.compact(rev - 1)
    with pytest.raises(OutOfRange):
        await collect(s, "registry/", rev - 2, rev)
    # The compaction revision itself is kept (etcd keeps it; only older ones go).
    events = await collect(s, "registry/", rev - 1, rev)
    assert [e.mod_revision for e in events] == [rev - 1, rev]
    # A future revision, or one compacted already, cannot be compacted.
    with pytest.raises(OutOfRange):
        await s.compact(rev + 100)
    with pytest.raises(OutOfRange):
        await s.compact(rev - 2)


def test_the_contract_covers_the_whole_store_protocol() -> None:
    """A method added to the Store protocol needs a contract test above; this names it."""
    covered = {
        "create",
        "create_many",
        "get",
        "get_raw",
        "get_many",
        "list",
        "list_raw",
        "update",
        "delete",
        "txn",
        "watch",
        "current_revision",
        "grant_lease",
        "compact",
        "close",
    }
    protocol = {n for n in vars(Store) if not n.startswith("_")}
    assert protocol == covered
    assert KeyValue.__slots__ == ("key", "value", "mod_revision", "create_revision", "lease", "version")
