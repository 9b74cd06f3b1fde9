"""Group commit (controller.groupcommit): what may share a transaction, and how a merged
transaction's outcome is handed back to each member as if it had run alone."""

from __future__ import annotations

import asyncio
import random

import pytest
from aetcd import rpc

from controller import groupcommit
from controller.groupcommit import Member, holds, merge, settle, take
from controller.store import Compare, Delete, EtcdStore, Get, KeyValue, Op, Put, Target, TxnResult
from cowpod.errors import CowpodError, ResourceExhausted
from cowpod.v1 import pod_pb2


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


async def test_a_member_knows_its_keys_size_and_failure_reads_as_take_counts_them() -> None:
    """What `take` reads off a member: every key it touches, its rough request size and the
    failure-branch ops it adds to a merge (each distinct compare key once, its own failure ops)."""
    shapes: list[tuple[tuple[Compare, ...], tuple[Op, ...], tuple[Op, ...]]] = [
        ((Compare.absent("p"),), (Put("p", b"x" * 450),), ()),  # a create
        ((Compare.exists("n"), Compare.at("l", 9)), (Put("l", b"lease", 3),), (Get("n"),)),  # a renewal
        ((), tuple(Get(f"k{i}") for i in range(5)), ()),  # a read of many keys
        ((Compare.at("a", 1), Compare("a", Target.VERSION, ">", 0)), (Delete("a"), Put("b", b"")),
         (Get("a"), Put("c", b"12"))),  # one key compared twice, a put in the failure branch
    ]
    for compares, success, failure in shapes:
        m = member(*compares, success=success, failure=failure)
        ops = [*success, *failure]
        assert m.keys == {c.key for c in compares} | {o.key for o in ops}
        size = sum(len(o.key) + (len(o.value) if isinstance(o, Put) else 0) for o in ops)
        assert m.size == 64 * len(compares) + size
        assert m.reads == len({c.key for c in compares}) + len(failure)


async def test_take_counts_a_key_compared_twice_as_one_failure_read() -> None:
    # 64 members of two compares on one key and one failure read each: 128 failure ops, they fit.
    queue = [member(Compare.at(f"k{i}", 1), Compare.exists(f"k{i}"), success=(Put(f"k{i}", b""),),
                    failure=(Get(f"k{i}"),)) for i in range(65)]
    assert len(take(queue, max_ops=128)) == 64 and len(queue) == 1
    m = merge(queue)
    assert [op.key for op in m.failure] == ["k64", "k64"]


async def test_settle_refuses_too_few_results_before_resolving_anyone() -> None:
    a, b = member(success=(Put("a", b""),)), member(success=(Get("b"),))
    with pytest.raises(ValueError):
        settle(merge([a, b]), True, 3, [True])
    assert not a.future.done() and not b.future.done()


def _parsed_by_response_kind(store: EtcdStore, resp: rpc.TxnResponse) -> list[KeyValue | bool | None]:
    """How `_send` read a response before: by each response's kind."""
    out: list[KeyValue | bool | None] = []
    for r in resp.responses:
        if r.WhichOneof("response") == "response_range":
            kvs = r.response_range.kvs
            out.append(store._kv_of(kvs[0]) if kvs else None)
        else:
            out.append(True)
    return out


@pytest.mark.parametrize("succeeded", [True, False])
async def test_send_reads_only_the_get_responses_and_gives_what_reading_every_response_gave(
        succeeded: bool) -> None:
    store = EtcdStore(["127.0.0.1:1"], "/t")
    success: list[Op] = [Put("a", b"1"), Get("b"), Get("c"), Delete("d"), Get("e")]
    failure: list[Op] = [Get("a"), Put("z", b"2"), Get("c")]
    resp = rpc.TxnResponse(succeeded=succeeded)
    resp.header.revision = 41
    for op in success if succeeded else failure:
        r = resp.responses.add()
        if isinstance(op, Get):
            r.response_range.header.revision = 41  # etcd answers a range with a header, found or not
            if op.key != "c":  # "c" is absent
                r.response_range.kvs.add(key=b"/t/" + op.key.encode(), value=b"v" + op.key.encode(),
                                         mod_revision=40, create_revision=7, version=3, lease=11)
        elif isinstance(op, Put):
            r.response_put.header.revision = 41
        else:
            r.response_delete_range.deleted = 1
    sent: list[bytes] = []

    async def txn_call(request: bytes, timeout: float) -> rpc.TxnResponse:
        sent.append(request)
        return rpc.TxnResponse.FromString(resp.SerializeToString())

    store._txn_call = txn_call  # type: ignore[assignment]
    try:
        got = await store._send([Compare.at("a", 5)], success, failure)
    finally:
        await store.close()
    assert got == (succeeded, 41, _parsed_by_response_kind(store, resp))
    if succeeded:
        assert got[2] == [True, KeyValue("b", b"vb", 40, 7, 11, 3), None, True,
                          KeyValue("e", b"ve", 40, 7, 11, 3)]
    else:
        assert got[2] == [KeyValue("a", b"va", 40, 7, 11, 3), True, None]
    request = rpc.TxnRequest.FromString(sent[0])
    assert [c.key for c in request.compare] == [b"/t/a"] and len(request.success) == 5


async def test_get_many_reads_one_chunk_or_many_in_order() -> None:
    store = EtcdStore(["127.0.0.1:1"], "/t", group_commit=1)
    sizes: list[int] = []

    async def fake_send(compares: object, success: list[Get],
                        failure: object) -> tuple[bool, int, list[KeyValue | None]]:
        sizes.append(len(success))
        return True, 9, [KeyValue(op.key, b"", 9, 1) if op.key != "k3" else None for op in success]

    store._send = fake_send  # type: ignore[method-assign,assignment]
    try:
        assert await store.get_many([]) == [] and sizes == []
        for n in (1, 128, 129, 300):
            sizes.clear()
            keys = [f"k{i}" for i in range(n)]
            got = await store.get_many(keys)
            assert [kv.key if kv else None for kv in got] == [k if k != "k3" else None for k in keys]
            assert sorted(sizes) == sorted([128] * (n // 128) + ([n % 128] if n % 128 else []))
    finally:
        await store.close()


def _apply(target: object, op: str) -> object:
    """One call on a future or a slot: what it returned, or the type of what it raised."""
    args: tuple[object, ...] = ()
    if op == "set_result":
        args = (TxnResult(True, 4),)
    elif op == "set_exception":
        args = (CowpodError("refused"),)
    try:
        got = getattr(target, op)(*args)
    except BaseException as err:  # CancelledError is what some must raise
        return type(err)
    return repr(got) if isinstance(got, BaseException) else got


_OPS = ["set_result", "set_exception", "cancel"]
_READS = ["done", "cancelled", "result", "exception"]


@pytest.mark.parametrize("ops", [[], *([a] for a in _OPS), *([a, b] for a in _OPS for b in _OPS)],
                         ids=lambda ops: "+".join(ops) or "pending")
async def test_a_batch_slot_answers_as_a_future_does(ops: list[str]) -> None:
    """A slot stands in for a member's future (create_many): every call the group commit and
    the batch's caller make answers, or raises, what it would on an asyncio future."""
    fut: asyncio.Future[TxnResult] = asyncio.get_running_loop().create_future()
    slot = groupcommit.Batch(asyncio.get_running_loop().create_future(), 1).slot()
    for op in [*ops, *_READS]:
        assert _apply(slot, op) == _apply(fut, op), op
    if fut.done() and not fut.cancelled():
        fut.exception()  # retrieved: no "exception was never retrieved" warning


async def test_a_batch_is_done_when_its_last_slot_is_settled() -> None:
    loop = asyncio.get_running_loop()
    assert groupcommit.Batch(loop.create_future(), 0).future.done()
    batch = groupcommit.Batch(loop.create_future(), 3)
    a, b, c = batch.slot(), batch.slot(), batch.slot()
    a.set_result(TxnResult(True, 1))
    b.cancel()
    b.cancel()  # a second cancel settles nothing more
    assert not batch.future.done()
    c.set_exception(CowpodError("x"))
    assert batch.future.done() and batch.future.result() is None


async def test_a_cancelled_caller_leaves_its_unsent_slots_cancelled_for_take_to_drop() -> None:
    """create_many's caller cancelled before its members were sent: their slots are cancelled
    (the batch's future with the caller), and `take` skips them as it skips cancelled futures."""
    store = EtcdStore(["127.0.0.1:1"], "/t", group_commit=1)
    release = asyncio.Event()
    sent: list[int] = []

    async def fake_send(compares: object, success: list[Put],
                        failure: object) -> tuple[bool, int, list[bool]]:
        sent.append(len(success))
        await release.wait()
        return True, 10, [True] * len(success)

    store._send = fake_send  # type: ignore[method-assign,assignment]
    try:
        first = asyncio.ensure_future(store.txn([], [Put("busy", b"")]))  # holds the one slot
        await asyncio.sleep(0)
        batch = asyncio.ensure_future(store.create_many([(f"k{i}", _pod(f"k{i}")) for i in range(3)]))
        await asyncio.sleep(0)
        assert len(store._queue) == 3
        batch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await batch
        assert all(m.future.cancelled() for m in store._queue)
        release.set()
        assert (await first).succeeded
        assert take(store._queue) == [] and sent == [1]
    finally:
        await store.close()


def _pod(name: str) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    return p


async def test_settle_hands_out_what_each_members_own_ops_read() -> None:
    """Every member of a succeeded merge gets exactly its own Gets' results, in order (one op
    or several, reads found or absent, writes among them), as the ops-driven slow path did."""
    rnd = random.Random(17)
    for _ in range(200):
        members: list[Member] = []
        results: list[KeyValue | bool | None] = []
        want: list[list[KeyValue | None]] = []
        for i in range(rnd.randint(1, 6)):
            ops: list[Op] = []
            mine: list[KeyValue | None] = []
            for j in range(rnd.randint(1, 3)):
                key = f"m{i}o{j}"
                kind = rnd.choice(["put", "delete", "get", "get-absent"])
                if kind == "put":
                    ops.append(Put(key, b"v"))
                    results.append(True)
                elif kind == "delete":
                    ops.append(Delete(key))
                    results.append(True)
                else:
                    ops.append(Get(key))
                    found = kv(key, 5) if kind == "get" else None
                    results.append(found)
                    mine.append(found)
            members.append(member(success=tuple(ops)))
            want.append(mine)
        assert settle(merge(members), True, 8, results) == []
        assert [m.future.result() for m in members] == [TxnResult(True, 8, w) for w in want]
