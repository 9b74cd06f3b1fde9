"""Group commit on a real etcd: many concurrent conditional writes share transactions,
and each caller gets exactly the answer its own transaction would have had."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from controller.store import Compare, EtcdStore, Get, Put, Target
from cowpod.errors import AlreadyExists, Conflict
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import pod_pb2

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(etcd: EtcdMember, etcd_prefix: str) -> AsyncIterator[EtcdStore]:
    s = EtcdStore([etcd.endpoint], etcd_prefix, group_commit=2)
    yield s
    await s.close()


def pod(name: str) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    return p


async def test_concurrent_creates_and_updates_keep_their_own_outcomes(store: EtcdStore) -> None:
    # Half the names twice: exactly one create of each wins.
    names = [f"p{i}" for i in range(150)] + [f"p{i}" for i in range(0, 150, 2)]

    async def create(name: str) -> str:
        try:
            await store.create(f"registry/pods/default/{name}", pod(name))
            return "created"
        except AlreadyExists:
            return "exists"

    got = await asyncio.gather(*(create(n) for n in names))
    assert got.count("created") == 150 and got.count("exists") == 75
    assert store.txns_shared > 0 and store.txns_sent < len(names)  # they did share transactions

    current = {n: (await store.get_raw(f"registry/pods/default/{n}")) for n in (f"p{i}" for i in range(150))}

    async def update(name: str, stale: bool) -> str:
        kv = current[name]
        assert kv is not None
        try:
            await store.update(f"registry/pods/default/{name}", pod(name),
                               expected_revision=kv.mod_revision - 1 if stale else kv.mod_revision)
            return "updated"
        except Conflict:
            return "conflict"

    got = await asyncio.gather(*(update(f"p{i}", stale=i % 3 == 0) for i in range(150)))
    assert got == ["conflict" if i % 3 == 0 else "updated" for i in range(150)]


async def test_reads_and_failure_branches_come_back_to_their_caller(store: EtcdStore) -> None:
    await store.txn([], [Put(f"k{i}", str(i).encode()) for i in range(20)])

    async def swap(i: int) -> tuple[bool, bytes]:
        # Succeeds for even i (version 1), fails for odd (compares version 2) and reads k{i} back.
        want = 1 if i % 2 == 0 else 2
        res = await store.txn([Compare(f"k{i}", Target.VERSION, "=", want)],
                              [Put(f"k{i}", b"new"), Get(f"k{i}")], [Get(f"k{i}")])
        kv = res.gets[0]
        assert kv is not None
        return res.succeeded, kv.value

    got = await asyncio.gather(*(swap(i) for i in range(20)))
    assert got == [(True, b"new") if i % 2 == 0 else (False, str(i).encode()) for i in range(20)]


async def test_a_lingering_transaction_rides_with_the_next_one_sent(store: EtcdStore) -> None:
    """A transaction whose caller may wait (`linger`, lease renewals) goes out with the next
    transaction anyone sends, in the same round trip, and gets its own answer."""
    key, other = "registry/leases/cowpod-node-lease/n1", "registry/pods/default/urgent"
    lazy = asyncio.create_task(store.txn([Compare.absent(key)], [Put(key, b"renewed")], linger=600))
    await asyncio.sleep(0)
    assert not lazy.done()
    sent = store.txns_sent
    # Nothing else is going on: the urgent write goes at once and takes the lingering one along
    # (its 600 s would outlast the test's deadline).
    urgent = await asyncio.wait_for(store.txn([Compare.absent(other)], [Put(other, b"now")]), 30)
    res = await asyncio.wait_for(lazy, 30)
    assert urgent.succeeded and res.succeeded and res.revision == urgent.revision
    assert store.txns_sent == sent + 1
    kv = await store.get_raw(key)
    assert kv is not None and kv.value == b"renewed"


async def test_a_lingering_transaction_alone_goes_after_its_linger(store: EtcdStore) -> None:
    key = "registry/leases/cowpod-node-lease/alone"
    first = await asyncio.wait_for(store.txn([Compare.absent(key)], [Put(key, b"1")], linger=0.05), 30)
    assert first.succeeded
    # A lost compare is reported as such, with the failure branch's reads.
    again = await asyncio.wait_for(
        store.txn([Compare.absent(key)], [Put(key, b"2")], [Get(key)], linger=0.05), 30)
    assert not again.succeeded and again.gets[0] is not None and again.gets[0].value == b"1"


async def test_close_cancels_lingering_transactions(etcd: EtcdMember, etcd_prefix: str) -> None:
    s = EtcdStore([etcd.endpoint], etcd_prefix, group_commit=1)
    lazy = asyncio.create_task(s.txn([], [Put("registry/x/never", b"1")], linger=600))
    await asyncio.sleep(0)
    await s.close()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(lazy, 30)
