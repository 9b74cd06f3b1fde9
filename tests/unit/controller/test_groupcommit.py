"""Group commit (controller.groupcommit): what may share a transaction, and how a merged
transaction's outcome is handed back to each member as if it had run alone."""

from __future__ import annotations

import asyncio

import pytest

from controller import groupcommit
from controller.groupcommit import Member, holds, merge, settle, take
from controller.store import Compare, EtcdStore, Get, KeyValue, Put, Target, TxnResult
from cowpod.errors import CowpodError, ResourceExhausted


def member(*compares: Compare, success: tuple[object, ...] = (), failure: tuple[object, ...] = ()) -> Member:
    fut: asyncio.Future[TxnResult] = asyncio.get_running_loop().create_future()
    return Member(compares, success, failure, fut)  # type: ignore[arg-type]


def kv(key: str, mod: int, create: int = 1, version: int = 1) -> KeyValue:
    return KeyValue(key, b"v", mod, create, 0, version)


@pytest.mark.parametrize(("c", "current", "want"), [
    (Compare.absent("k"), None, True),
    (Compare.absent("k"), kv("k", 5), False),
    (Compare.exists("k"), kv("k", 5), True),
    (Compare.at("k", 5), kv("k", 5), True),
    (Compare.at("k", 4), kv("k", 5), False),
    (Compare.at("k", 0), None, True),
    (Compare.created_at("k", 3), kv("k", 9, create=3), True),
    (Compare("k", Target.MOD, "<", 6), kv("k", 5), True),
    (Compare("k", Target.VERSION, "!=", 2), kv("k", 5, version=2), False),
])
def test_compares_are_evaluated_as_etcd_does(c: Compare, current: KeyValue | None, want: bool) -> None:
    assert holds(c, current) is want


async def test_take_keeps_keys_disjoint_and_within_limits() -> None:
    a = member(Compare.absent("a"), success=(Put("a", b"1"),))
    a2 = member(Compare.at("a", 3), success=(Put("a", b"2"),))  # same key: next transaction
    b = member(Compare.absent("b"), success=(Put("b", b"1"),))
    big = member(*(Compare.absent(f"x{i}") for i in range(128)), success=(Put("x0", b""),))
    gone = member(Compare.absent("c"), success=(Put("c", b""),))
    gone.future.cancel()  # its caller gave up before it was sent
    queue = [a, a2, gone, b, big]
    first = take(queue, max_ops=128)
    assert first == [a, b] and queue == [a2, big]
    assert take(queue, max_ops=128) == [a2]  # 1 + 128 compares would be too many
    assert take(queue, max_ops=128) == [big] and queue == []


async def test_a_member_alone_is_always_taken_even_when_large() -> None:
    huge = member(success=(Put("k", b"x" * (groupcommit.MAX_BYTES + 1)),))
    queue = [huge, member(success=(Put("j", b""),))]
    assert take(queue) == [huge] and len(queue) == 1


async def test_success_hands_each_member_its_own_reads() -> None:
    a = member(Compare.absent("a"), success=(Put("a", b"1"), Get("a")))
    b = member(success=(Get("b"), Get("c")))
    m = merge([a, b])
    assert [c.key for c in m.compares] == ["a"]
    assert settle(m, True, 7, [True, kv("a", 7), kv("b", 2), None]) == []
    assert a.future.result() == TxnResult(True, 7, [kv("a", 7)])
    assert b.future.result() == TxnResult(True, 7, [kv("b", 2), None])


async def test_failure_fails_only_the_members_whose_compares_are_false() -> None:
    create = member(Compare.absent("a"), success=(Put("a", b"1"),))  # "a" exists: fails
    update = member(Compare.at("b", 4), success=(Put("b", b"2"),), failure=(Get("b"),))  # stale: fails
    fine = member(Compare.at("c", 3), success=(Put("c", b"3"),))  # holds: goes again
    m = merge([create, update, fine])
    assert [op.key for op in m.failure] == ["a", "b", "c", "b"]  # compare keys first, then own reads
    again = settle(m, False, 9, [kv("a", 2), kv("b", 6), kv("c", 3), kv("b", 6)])
    assert again == [fine] and not fine.future.done()
    assert create.future.result() == TxnResult(False, 9, [])
    assert update.future.result() == TxnResult(False, 9, [kv("b", 6)])


@pytest.mark.parametrize("refusal", [
    ResourceExhausted("transaction refused: the request is too large for etcd"),  # small --max-request-bytes
    CowpodError("etcd transaction failed: NOT_FOUND: etcdserver: requested lease not found"),
])
async def test_a_merge_etcd_refuses_is_sent_member_by_member(refusal: CowpodError) -> None:
    """etcd refused the merge for what one member may have caused: each member alone."""
    store = EtcdStore(["127.0.0.1:1"], "/t", group_commit=1)
    sent: list[int] = []
    release = asyncio.Event()

    async def fake_send(compares: object, success: list[Put],
                        failure: object) -> tuple[bool, int, list[bool]]:
        sent.append(len(success))
        if len(sent) == 1:
            await release.wait()  # hold the one slot so the next three queue up and merge
        if len(success) > 1:
            raise refusal
        return True, 10 + len(sent), [True] * len(success)

    store._send = fake_send  # type: ignore[method-assign,assignment]
    try:
        calls = [asyncio.ensure_future(store.txn([], [Put(f"k{i}", b"v")])) for i in range(4)]
        await asyncio.sleep(0)
        release.set()
        results = await asyncio.gather(*calls)
    finally:
        await store.close()
    assert sent == [1, 3, 1, 1, 1]  # alone, the merge (refused), then each of its three
    assert all(r.succeeded for r in results)
