"""Group commit: independent etcd transactions issued at the same time sent as one.

Under load the controller issues hundreds of small conditional writes a second
(pod creates, lease renewals, status writes), each an etcd round trip whose
fixed cost (a gRPC call in the controller, a raft entry in etcd) dwarfs its
work. `EtcdStore` keeps a few transactions in flight; whatever queues up
meanwhile goes out together:

    member txns ──► merged txn: compares ANDed, success ops concatenated,
                    failure = read back every compare key + each member's failure ops
        succeeded ──► every member succeeded, at the merged revision
        failed    ──► each member's compares are evaluated against the keys read back
                      (all at the failure's revision): a member whose compare is false
                      failed there (and gets its own failure ops' results); the others
                      go round again

This is exactly what each member's own transaction would have done at that
revision, so callers cannot tell the difference. Members in one merge touch
disjoint keys, and a merge stays within etcd's limits (128 compares, 128 ops
per branch) and well under its request size limit. A merge that etcd refuses
for anything but unavailability (an etcd with a smaller request limit, an
expired lease in one member's put) is sent again member by member
(`EtcdStore._send_merged`), so no member fails for another's sake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from controller.store_types import Compare, Get, KeyValue, Op, Put, Target, TxnResult

MAX_OPS = 128
# etcd refuses requests over --max-request-bytes (1.5 MiB by default); objects are <= 1 MiB.
MAX_BYTES = 1 << 20


class Batch:
    """Members whose caller awaits them together (`EtcdStore.create_many`): each member's
    outcome goes to a `Slot` of the batch, and the batch's one future completes when the last
    slot is settled: one future and one wake-up for the batch instead of a future per member
    and a callback for each (what `asyncio.wait` on their futures costs)."""

    __slots__ = ("_pending", "future")

    def __init__(self, future: asyncio.Future[None], size: int) -> None:
        self.future = future
        self._pending = size
        if size == 0:
            future.set_result(None)

    def slot(self) -> Slot:
        return Slot(self)

    def _settled(self) -> None:
        self._pending -= 1
        if self._pending == 0 and not self.future.done():
            self.future.set_result(None)


_PENDING, _RESULT, _ERROR, _CANCELLED = range(4)


class Slot:
    """One member's outcome in a `Batch`, with the part of `asyncio.Future`'s API that the
    group commit and the batch's caller use, and the same answers and errors."""

    __slots__ = ("_batch", "_state", "_value")

    def __init__(self, batch: Batch) -> None:
        self._batch = batch
        self._state = _PENDING
        self._value: TxnResult | BaseException | None = None

    def done(self) -> bool:
        return self._state != _PENDING

    def cancelled(self) -> bool:
        return self._state == _CANCELLED

    def _settle(self, state: int, value: TxnResult | BaseException | None) -> None:
        if self._state != _PENDING:
            raise asyncio.InvalidStateError(f"invalid state: {self!r} is done")
        self._state, self._value = state, value
        self._batch._settled()

    def set_result(self, result: TxnResult) -> None:
        self._settle(_RESULT, result)

    def set_exception(self, exception: BaseException) -> None:
        self._settle(_ERROR, exception)

    def cancel(self) -> bool:
        if self._state != _PENDING:
            return False
        self._settle(_CANCELLED, None)
        return True

    def result(self) -> TxnResult:
        value = self._value
        if self._state == _RESULT and isinstance(value, TxnResult):
            return value
        if self._state == _ERROR and isinstance(value, BaseException):
            raise value
        raise self._not_finished()

    def exception(self) -> BaseException | None:
        if self._state == _ERROR and isinstance(self._value, BaseException):
            return self._value
        if self._state == _RESULT:
            return None
        raise self._not_finished()

    def _not_finished(self) -> BaseException:
        if self._state == _CANCELLED:
            return asyncio.CancelledError()
        return asyncio.InvalidStateError("result is not set")


@dataclass(eq=False, slots=True, init=False)
class Member:
    """One caller's transaction waiting to be sent. Every caller's transaction becomes one,
    so its constructor does in one pass what `take` needs to know of it."""

    compares: Sequence[Compare]
    success: Sequence[Op]
    failure: Sequence[Op]
    future: asyncio.Future[TxnResult] | Slot
    keys: set[str]  # every key it touches (read only: members of one merge share none)
    size: int  # its bytes in a request, roughly: keys, values, 64 per compare
    reads: int  # failure-branch ops it adds to a merge: its distinct compare keys, its failure ops

    def __init__(self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op],
                 future: asyncio.Future[TxnResult] | Slot) -> None:
        self.compares = compares
        self.success = success
        self.failure = failure
        self.future = future
        keys = set()
        for c in compares:
            keys.add(c.key)
        self.reads = len(keys) + len(failure)
        size = 64 * len(compares)
        for o in success:
            keys.add(o.key)
            size += len(o.key) + len(o.value) if isinstance(o, Put) else len(o.key)
        for o in failure:
            keys.add(o.key)
            size += len(o.key) + len(o.value) if isinstance(o, Put) else len(o.key)
        self.keys = keys
        self.size = size


@dataclass(slots=True)
class Merged:
    members: list[Member]
    compares: list[Compare]
    success: list[Op]
    failure: list[Op]
    read_keys: list[str]  # the failure branch's first reads: every compare key, once


def take(queue: list[Member], max_ops: int = MAX_OPS, max_bytes: int = MAX_BYTES) -> list[Member]:
    """Remove from `queue` (in order) the members one merged transaction can carry.
    A member that shares a key with one already taken, or does not fit, waits for the
    next; the first live member is always taken."""
    taken: list[Member] = []
    keys: set[str] = set()
    ncmp = nsucc = nfail = size = 0
    rest: list[Member] = []
    for m in queue:
        if m.future.done():  # cancelled by its caller before it was sent
            continue
        if taken and (ncmp + len(m.compares) > max_ops or nsucc + len(m.success) > max_ops
                      or nfail + m.reads > max_ops or size + m.size > max_bytes
                      or not keys.isdisjoint(m.keys)):
            rest.append(m)  # does not fit, or shares a key with one taken
            continue
        taken.append(m)
        keys |= m.keys
        ncmp += len(m.compares)
        nsucc += len(m.success)
        nfail += m.reads
        size += m.size
    queue[:] = rest
    return taken


def merge(members: list[Member]) -> Merged:
    compares = [c for m in members for c in m.compares]
    read_keys = list(dict.fromkeys([c.key for c in compares]))
    success = [o for m in members for o in m.success]
    failure: list[Op] = [Get(k) for k in read_keys]
    failure.extend([o for m in members for o in m.failure])
    return Merged(members, compares, success, failure, read_keys)


def holds(c: Compare, kv: KeyValue | None) -> bool:
    """Evaluate a compare as etcd does; an absent key has revisions and version 0."""
    if kv is None:
        actual = 0
    elif c.target is Target.MOD:
        actual = kv.mod_revision
    elif c.target is Target.CREATE:
        actual = kv.create_revision
    else:
        actual = kv.version
    if c.op == "=":
        return actual == c.value
    if c.op == "!=":
        return actual != c.value
    if c.op == "<":
        return actual < c.value
    return actual > c.value


def reads(results: Sequence[KeyValue | bool | None]) -> list[KeyValue | None]:
    """The read results among a branch's per-op results (writes answer True)."""
    return [_kv(r) for r in results if r is not True]


def settle(merged: Merged, succeeded: bool, revision: int,
           results: Sequence[KeyValue | bool | None]) -> list[Member]:
    """Resolve the members of a sent merge from its per-op results (a `KeyValue | None`
    for a read, True for any other op). Returns the members to send again."""
    pos = 0
    if succeeded:
        if len(results) < len(merged.success):
            raise ValueError(f"{len(results)} results for {len(merged.success)} operations")
        for m in merged.members:
            n = len(m.success)
            if n == 1:  # most: a create, a renewal, a bind (no slice, no comprehension)
                r = results[pos]
                gets = [] if r is True else [_kv(r)]
            else:
                gets = reads(results[pos: pos + n])  # its Gets' results: the others answered True
            pos += n
            if not m.future.done():
                m.future.set_result(TxnResult(True, revision, gets))
        return []
    current: dict[str, KeyValue | None] = {}
    for k in merged.read_keys:
        current[k] = _kv(results[pos])
        pos += 1
    again: list[Member] = []
    for m in merged.members:
        n = len(m.failure)
        own = results[pos: pos + n]
        pos += n
        if all(holds(c, current[c.key]) for c in m.compares):
            again.append(m)
            continue
        gets = [_kv(r) for r, op in zip(own, m.failure, strict=True) if isinstance(op, Get)]
        _resolve(m, TxnResult(False, revision, gets))
    return again


def _kv(r: KeyValue | bool | None) -> KeyValue | None:
    return r if isinstance(r, KeyValue) else None


def _resolve(m: Member, result: TxnResult) -> None:
    if not m.future.done():
        m.future.set_result(result)


__all__ = ["MAX_BYTES", "MAX_OPS", "Batch", "Member", "Merged", "Slot", "holds", "merge", "reads", "settle",
           "take"]
