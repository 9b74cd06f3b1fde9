"""`EtcdStore.create_many` with group commit on (how the controller runs): the items of a
batch are queued at once and each answered as its own `create` would be, on a real etcd.
(The contract test runs the same answers on the fake and on etcd without group commit.)"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Sequence

import pytest

from controller.store import Compare, EtcdStore, KeyValue, Op, Put, encode
from cowpod.errors import AlreadyExists, ResourceExhausted
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import pod_pb2
from tests.integration.test_store_contract import key, pod

pytestmark = pytest.mark.integration


class NoSpaceAfter(EtcdStore):
    """etcd's NOSPACE for a transaction that puts `key`: alone, after applying it (`landed`,
    as etcd's quota applier does for the write that fills it) or instead of sending it; merged
    with others, instead of sending it (the store then sends each member alone)."""

    def __init__(self, endpoint: str, prefix: str, key: str, *, landed: bool) -> None:
        super().__init__([endpoint], prefix, group_commit=1)
        self.key, self.landed = key, landed

    async def _send(self, compares: Sequence[Compare], success: Sequence[Op],
                    failure: Sequence[Op]) -> tuple[bool, int, builtins.list[KeyValue | bool | None]]:
        if not any(isinstance(op, Put) and op.key == self.key for op in success):
            return await super()._send(compares, success, failure)
        if self.landed and len(success) == 1:
            await super()._send(compares, success, failure)
        raise ResourceExhausted("etcd transaction failed: RESOURCE_EXHAUSTED: etcdserver: mvcc: "
                                "database space exceeded")


@pytest.fixture
async def store(etcd: EtcdMember, etcd_prefix: str) -> AsyncIterator[EtcdStore]:
    s = EtcdStore([etcd.endpoint], etcd_prefix, group_commit=1)
    yield s
    await s.close()


async def test_a_batch_goes_in_one_transaction_and_each_item_gets_its_answer(store: EtcdStore) -> None:
    await store.create(key("old"), pod("old"))
    items = [(key(f"p{i}"), pod(f"p{i}")) for i in range(16)]
    items[5] = (key("old"), pod("old", "new"))
    sent = store.txns_sent
    out = await store.create_many(items)
    # All 16 queued at once: one merged transaction (it failed on "old"), then the other 15.
    assert store.txns_sent - sent == 2
    assert isinstance(out[5], AlreadyExists) and str(out[5]) == 'pods "default/old" already exists'
    revisions = set()
    for i, made in enumerate(out):
        if i == 5:
            continue
        assert isinstance(made, pod_pb2.Pod) and made is items[i][1]
        kv = await store.get_raw(key(f"p{i}"))
        assert kv is not None and kv.mod_revision == made.metadata.resource_version
        assert kv.value == encode(made)
        revisions.add(kv.mod_revision)
    assert len(revisions) == 1  # committed together
    stored_old = await store.get(key("old"), pod_pb2.Pod)
    assert stored_old.spec.containers[0].image == "img"


async def test_two_items_with_one_key_the_first_wins(store: EtcdStore) -> None:
    out = await store.create_many([(key("a"), pod("a", "first")), (key("b"), pod("b")),
                                   (key("a"), pod("a", "second"))])
    assert isinstance(out[0], pod_pb2.Pod) and isinstance(out[1], pod_pb2.Pod)
    assert isinstance(out[2], AlreadyExists)
    assert (await store.get(key("a"), pod_pb2.Pod)).spec.containers[0].image == "first"


@pytest.mark.parametrize("landed", [True, False])
async def test_nospace_answers_as_create_does(etcd: EtcdMember, etcd_prefix: str, landed: bool) -> None:
    """A write etcd applied and then answered NOSPACE for is created (the caller must not be
    told it does not exist); one it did not apply gets the RESOURCE_EXHAUSTED. The other items
    of the batch are not affected either way."""
    s = NoSpaceAfter(etcd.endpoint, etcd_prefix, key("full"), landed=landed)
    try:
        out = await s.create_many([(key("x"), pod("x")), (key("full"), pod("full")), (key("y"), pod("y"))])
        assert isinstance(out[0], pod_pb2.Pod) and isinstance(out[2], pod_pb2.Pod)
        kv = await s.get_raw(key("full"))
        if landed:
            made = out[1]
            assert isinstance(made, pod_pb2.Pod)
            assert kv is not None and made.metadata.resource_version == kv.mod_revision
        else:
            assert isinstance(out[1], ResourceExhausted) and kv is None
    finally:
        await s.close()


async def test_without_group_commit_the_answers_are_the_same(etcd: EtcdMember, etcd_prefix: str) -> None:
    s = EtcdStore([etcd.endpoint], etcd_prefix)
    try:
        await s.create(key("old"), pod("old"))
        out = await s.create_many([(key("a"), pod("a")), (key("old"), pod("old"))])
        assert isinstance(out[0], pod_pb2.Pod) and isinstance(out[1], AlreadyExists)
    finally:
        await s.close()


class FullAfterMerge(EtcdStore):
    """etcd whose quota the merged transaction that puts `key` fills: it applies it and answers
    NOSPACE, having raised the NOSPACE alarm first; from then on it refuses every transaction
    with a put (etcd's capped applier), so no write lands twice."""

    def __init__(self, endpoint: str, prefix: str, key: str) -> None:
        super().__init__([endpoint], prefix, group_commit=1)
        self.key, self.full = key, False
        self.sends = 0

    async def _send(self, compares: Sequence[Compare], success: Sequence[Op],
                    failure: Sequence[Op]) -> tuple[bool, int, builtins.list[KeyValue | bool | None]]:
        self.sends += 1
        puts = any(isinstance(op, Put) for op in success) or any(isinstance(op, Put) for op in failure)
        if not self.full and not any(isinstance(op, Put) and op.key == self.key for op in success):
            return await super()._send(compares, success, failure)
        if not self.full:
            await super()._send(compares, success, failure)
            self.full = True
        elif not puts:
            return await super()._send(compares, success, failure)
        raise ResourceExhausted("etcd transaction failed: RESOURCE_EXHAUSTED: etcdserver: mvcc: "
                                "database space exceeded")


async def test_a_merge_etcd_applied_and_answered_nospace_for_is_created_for_every_item(
        etcd: EtcdMember, etcd_prefix: str) -> None:
    """Each member is then sent alone and refused (the alarm is up), so each runs its own
    'did it land' read: every item of the merge is created, none told AlreadyExists."""
    s = FullAfterMerge(etcd.endpoint, etcd_prefix, key("full"))
    try:
        items = [(key("x"), pod("x")), (key("full"), pod("full")), (key("y"), pod("y"))]
        out = await s.create_many(items)
        assert s.sends == 4  # the merge, then each alone
        for (k, _), made in zip(items, out, strict=True):
            assert isinstance(made, pod_pb2.Pod)
            kv = await s.get_raw(k)
            assert kv is not None and made.metadata.resource_version == kv.mod_revision
            assert kv.value == encode(made)
    finally:
        await s.close()
