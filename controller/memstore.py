"""An in-memory `Store` with etcd's semantics, for unit tests of anything above the store.

Revisions, mod/create revisions and versions, compare-and-swap transactions,
prefix lists, watches from a revision (with prev values) and compaction
(`OutOfRange`) behave as on etcd; a lease must have been granted to be used,
but nothing expires. tests/integration/test_store_contract.py runs the same
tests on this and on `EtcdStore` with a real etcd: a difference fails there.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

from google.protobuf.message import Message

from controller.store import (
    Compare,
    Delete,
    EventType,
    Get,
    KeyValue,
    Op,
    Put,
    RawEvent,
    Target,
    TxnResult,
    WatchBatch,
    _describe,
    decode,
    encode,
)
from cowpod.errors import AlreadyExists, Conflict, CowpodError, NotFound, OutOfRange

M = TypeVar("M", bound=Message)


class MemoryStore:
    def __init__(self) -> None:
        self.revision = 1
        self.data: dict[str, KeyValue] = {}
        self.history: list[RawEvent] = []
        self.compacted = 0
        self._changed = asyncio.Condition()
        self._next_lease = 1
        self._leases: set[int] = set()

    # -- reads

    async def get_raw(self, key: str) -> KeyValue | None:
        return self.data.get(key)

    async def get(self, key: str, cls: type[M]) -> M:
        kv = self.data.get(key)
        if kv is None:
            raise NotFound(f"{_describe(key)} not found")
        return decode(cls, kv.value, kv.mod_revision)

    async def get_many(self, keys: Sequence[str]) -> builtins.list[KeyValue | None]:
        return [self.data.get(k) for k in keys]

    async def list_raw(self, prefix: str) -> tuple[builtins.list[KeyValue], int]:
        return [self.data[k] for k in sorted(self.data) if k.startswith(prefix)], self.revision

    async def list(self, prefix: str, cls: type[M]) -> tuple[builtins.list[M], int]:
        kvs, rev = await self.list_raw(prefix)
        return [decode(cls, kv.value, kv.mod_revision) for kv in kvs], rev

    async def current_revision(self) -> int:
        return self.revision

    # -- writes

    def _holds(self, c: Compare) -> bool:
        kv = self.data.get(c.key)
        if c.target is Target.MOD:
            actual = kv.mod_revision if kv else 0
        elif c.target is Target.CREATE:
            actual = kv.create_revision if kv else 0
        else:
            actual = kv.version if kv else 0
        return {"=": actual == c.value, "!=": actual != c.value,
                "<": actual < c.value, ">": actual > c.value}[c.op]

    async def txn(self, compares: Sequence[Compare], success: Sequence[Op],
                  failure: Sequence[Op] = (), *, linger: float = 0.0) -> TxnResult:
        for branch in (success, failure):
            written = [op.key for op in branch if isinstance(op, Put | Delete)]
            if len(written) != len(set(written)):
                # etcd checks both branches before the compares, and EtcdStore says so as this
                raise CowpodError("etcd transaction failed: INVALID_ARGUMENT: "
                                  "etcdserver: duplicate key given in txn request")
        ok = all(self._holds(c) for c in compares)
        ops = success if ok else failure
        for op in ops:
            if isinstance(op, Put) and op.lease and op.lease not in self._leases:
                # etcd refuses the whole transaction (NOT_FOUND), and EtcdStore says so as this
                raise CowpodError("etcd transaction failed: NOT_FOUND: etcdserver: requested lease not found")
        # As on etcd, only a change makes a revision: a delete of nothing writes none.
        rev = self.revision + 1
        writes = False
        gets: builtins.list[KeyValue | None] = []
        for op in ops:
            if isinstance(op, Get):
                gets.append(self.data.get(op.key))
            elif isinstance(op, Put):
                prev = self.data.get(op.key)
                kv = KeyValue(op.key, op.value, rev, prev.create_revision if prev else rev, op.lease,
                              prev.version + 1 if prev else 1)
                self.data[op.key] = kv
                self.history.append(RawEvent(EventType.PUT, op.key, op.value,
                                             prev.value if prev else None, rev, kv.create_revision))
                writes = True
            else:
                prev = self.data.pop(op.key, None)
                if prev is not None:
                    self.history.append(RawEvent(EventType.DELETE, op.key, b"", prev.value, rev,
                                                 prev.create_revision))
                    writes = True
        if not writes:
            rev = self.revision
        if writes:
            self.revision = rev
            async with self._changed:
                self._changed.notify_all()
        return TxnResult(ok, rev, gets)

    async def create(self, key: str, obj: M, *, lease: int = 0) -> M:
        res = await self.txn([Compare.absent(key)], [Put(key, encode(obj), lease)])
        if not res.succeeded:
            raise AlreadyExists(f"{_describe(key)} already exists")
        obj.metadata.resource_version = res.revision  # type: ignore[attr-defined]
        return obj

    async def create_many(self, items: Sequence[tuple[str, M]]) -> builtins.list[M | CowpodError]:
        out: builtins.list[M | CowpodError] = []
        for key, obj in items:
            try:
                out.append(await self.create(key, obj))
            except CowpodError as err:
                out.append(err)
        return out

    async def update(self, key: str, obj: M, *, expected_revision: int, lease: int = 0) -> M:
        cmp = Compare.at(key, expected_revision) if expected_revision else Compare.exists(key)
        res = await self.txn([cmp], [Put(key, encode(obj), lease)])
        if not res.succeeded:
            if key not in self.data:
                raise NotFound(f"{_describe(key)} not found")
            raise Conflict(f"{_describe(key)} was modified: resource_version {expected_revision} is stale")
        obj.metadata.resource_version = res.revision  # type: ignore[attr-defined]
        return obj

    async def delete(self, key: str, cls: type[M], *, expected_revision: int = 0) -> M:
        kv = self.data.get(key)
        if kv is None:
            raise NotFound(f"{_describe(key)} not found")
        if expected_revision and kv.mod_revision != expected_revision:
            raise Conflict(f"{_describe(key)} was modified")
        res = await self.txn([], [Delete(key)])
        return decode(cls, kv.value, res.revision)

    # -- watch, leases, maintenance

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchBatch]:
        start = start_revision or self.revision + 1
        if start < self.compacted:  # etcd keeps the compaction revision itself
            raise OutOfRange(f"revision {start} has been compacted; relist")
        seen = start - 1
        while True:
            events = [e for e in self.history if e.mod_revision > seen and e.key.startswith(prefix)]
            if events:
                seen = events[-1].mod_revision
                yield WatchBatch(seen, events)
            async with self._changed:
                if not [e for e in self.history if e.mod_revision > seen and e.key.startswith(prefix)]:
                    await self._changed.wait()

    async def grant_lease(self, ttl_seconds: int) -> int:
        self._next_lease += 1
        self._leases.add(self._next_lease)
        return self._next_lease

    async def compact(self, revision: int) -> None:
        if revision > self.revision:
            raise OutOfRange(f"compact: revision {revision} is a future revision (now {self.revision})")
        if revision <= self.compacted:
            raise OutOfRange(f"compact: revision {revision} has been compacted (at {self.compacted})")
        self.compacted = revision
        self.history = [e for e in self.history if e.mod_revision >= revision]

    async def close(self) -> None:
        return None
