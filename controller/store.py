"""The etcd store: the only code in cowpod that talks to etcd.

Objects are stored as serialized protobuf under `<prefix>/<key>` where the
caller's key is relative (`registry/pods/default/web`). The etcd mod revision
*is* the object's `resource_version`: it is stripped before a write (so the
stored bytes never carry a stale one) and filled in on every read.

Why raw etcd RPCs (via the stubs `aetcd` ships) rather than `aetcd.Client`'s
convenience methods: we need reads that return the header revision, watches
that start at a revision with `prev_kv` and progress notifications, multi-op
transactions with arbitrary compares, and a deadline on *every* call so an
unreachable etcd becomes `Unavailable` within seconds instead of a hang. The
convenience layer exposes none of these.

Errors: etcd unreachable or too slow -> `Unavailable` naming the endpoints;
a compacted revision -> `OutOfRange`; a lost compare-and-swap -> `Conflict`;
an absent key -> `NotFound`; a create over an existing key -> `AlreadyExists`.
"""

from __future__ import annotations

import asyncio
import builtins
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import grpc
from aetcd import rpc  # the etcd v3 API stubs and messages
from google.protobuf.message import Message

from controller import etcdwire, groupcommit
from controller.store_types import (
    MAX_TXN_OPS,
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
)
from cowpod.errors import (
    AlreadyExists,
    Conflict,
    CowpodError,
    NotFound,
    OutOfRange,
    ResourceExhausted,
    Unavailable,
)
from cowpod.pki import ETCD_SERVER_NAME, TLSFiles

if TYPE_CHECKING:
    from controller.encryption import EncryptionConfig

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

# --- protobuf helpers -----------------------------------------------------------------------------


def encode(obj: Message) -> bytes:
    """Serialize without resource_version: the mod revision is the truth."""
    meta: Any = getattr(obj, "metadata", None)
    if meta is None or meta.resource_version == 0:
        return obj.SerializeToString(deterministic=True)
    rv = meta.resource_version
    meta.resource_version = 0
    try:
        return obj.SerializeToString(deterministic=True)
    finally:
        meta.resource_version = rv


def decode(cls: type[M], value: bytes, mod_revision: int) -> M:
    obj = cls.FromString(value)
    meta: Any = getattr(obj, "metadata", None)
    if meta is not None:
        meta.resource_version = mod_revision
    return obj


# --- the protocol ---------------------------------------------------------------------------------


class Store(Protocol):
    """What the API layer needs from a key-value store with revisions."""

    async def create(self, key: str, obj: M, *, lease: int = 0) -> M: ...

    async def create_many(self, items: Sequence[tuple[str, M]]) -> builtins.list[M | CowpodError]:
        """`create` of each (key, object), issued together; each gets its object or its own
        error, as its own `create` would."""

    async def get(self, key: str, cls: type[M]) -> M: ...

    async def get_raw(self, key: str) -> KeyValue | None: ...

    async def get_many(self, keys: Sequence[str]) -> builtins.list[KeyValue | None]: ...

    async def list(self, prefix: str, cls: type[M]) -> tuple[builtins.list[M], int]: ...

    async def list_raw(self, prefix: str) -> tuple[builtins.list[KeyValue], int]: ...

    async def update(self, key: str, obj: M, *, expected_revision: int, lease: int = 0) -> M: ...

    async def delete(self, key: str, cls: type[M], *, expected_revision: int = 0) -> M: ...

    async def txn(self, compares: Sequence[Compare], success: Sequence[Op],
                  failure: Sequence[Op] = (), *, linger: float = 0.0) -> TxnResult:
        """One transaction. `linger` > 0: the caller does not mind waiting up to that long,
        so the store may hold the transaction back to send it with others."""

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchBatch]: ...

    async def current_revision(self) -> int: ...

    async def grant_lease(self, ttl_seconds: int) -> int: ...

    async def compact(self, revision: int) -> None: ...

    async def close(self) -> None: ...


# --- etcd implementation --------------------------------------------------------------------------


def _channel_target(endpoints: Sequence[str]) -> str:
    """One gRPC target for one or several `host:port` endpoints.

    Several IP endpoints use the `ipv4:` resolver so gRPC fails over between
    members; a single host name is resolved by DNS as usual."""
    eps = [e.strip() for e in endpoints if e.strip()]
    if not eps:
        raise ValueError("no etcd endpoints given")
    if len(eps) == 1:
        return eps[0]
    hosts = [e.rsplit(":", 1)[0] for e in eps]
    try:
        for h in hosts:
            ipaddress.IPv4Address(h)
    except ValueError:
        log.warning("several etcd endpoints with host names; using the first, %s", eps[0])
        return eps[0]
    return "ipv4:" + ",".join(eps)


def _prefix_end(prefix: bytes) -> bytes:
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"


class EtcdStore:
    """`Store` on etcd v3. Every unary call has a deadline (`timeout`)."""

    def __init__(self, endpoints: Sequence[str], prefix: str = "/cowpod", *, timeout: float = 5.0,
                 group_commit: int = 0, tls: TLSFiles | None = None,
                 encryption: EncryptionConfig | None = None) -> None:
        self.endpoints = list(endpoints)
        # Encryption at rest (controller/encryption.py): values of its resources are
        # encrypted in `_send` and decrypted in `_kv_of` and the watch, so nothing above
        # this class sees ciphertext. None = stored as they are.
        self.encryption = encryption
        self.prefix = prefix.rstrip("/")
        self._p = (self.prefix + "/").encode()
        self.timeout = timeout
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", 512 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2_000),
        ]
        if tls is None:
            self._channel = grpc.aio.insecure_channel(_channel_target(self.endpoints), options=options)
        else:
            # etcd with --client-cert-auth: our certificate from etcd's CA, and its members
            # verified by the name every member certificate carries, whatever the address.
            creds = grpc.ssl_channel_credentials(
                tls.ca.read_bytes(), tls.key.read_bytes(), tls.cert.read_bytes()
            )
            options.append(("grpc.ssl_target_name_override", ETCD_SERVER_NAME))
            self._channel = grpc.aio.secure_channel(_channel_target(self.endpoints), creds, options=options)
        self._kv = rpc.KVStub(self._channel)
        # Txn with the request already in wire bytes (controller.etcdwire): no serializer.
        # Registered as the generated stubs register theirs (grpc's typing omits the argument).
        self._txn_call: grpc.aio.UnaryUnaryMultiCallable[bytes, Any] = self._channel.unary_unary(
            "/etcdserverpb.KV/Txn", request_serializer=None,
            response_deserializer=rpc.TxnResponse.FromString, _registered_method=True,  # type: ignore[call-arg]
        )
        self._leases = rpc.LeaseStub(self._channel)
        self._watch = rpc.WatchStub(self._channel)
        # Request queues of open watch streams, for progress requests.
        self._progress_queues: dict[int, asyncio.Queue[Any]] = {}
        # Group commit: at most this many transactions in flight; what queues meanwhile is
        # merged (controller.groupcommit). 0 sends every transaction on its own.
        self.group_commit = group_commit
        self._queue: builtins.list[groupcommit.Member] = []
        # Transactions whose callers said they may wait (`txn(linger=...)`): they go with the
        # next transaction sent, or when the first of them has waited its linger.
        self._lazy: builtins.list[groupcommit.Member] = []
        self._lazy_timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()
        # The event loop of every transaction: the one the first ran on (`_calls_loop`).
        self._loop: asyncio.AbstractEventLoop | None = None
        self.txns_sent = 0  # etcd transactions sent ...
        self.txns_shared = 0  # ... and callers' transactions that went in one with others

    # -- keys

    def _k(self, key: str) -> bytes:
        return self._p + key.encode()

    def _unk(self, raw: bytes) -> str:
        return raw[len(self._p):].decode()

    def _kv_of(self, kv: Any) -> KeyValue:
        """Raises `Undecryptable` (naming the object and key) for a value of an encrypted
        resource that the encryption config cannot read."""
        key = self._unk(kv.key)
        value = kv.value if self.encryption is None else self.encryption.decrypt(key, kv.value)
        return KeyValue(key, value, kv.mod_revision, kv.create_revision, kv.lease, kv.version)

    def _readable(self, kvs: Any) -> builtins.list[KeyValue]:
        """`_kv_of` of each; one that cannot be decrypted is left out, logged by name and key,
        so one object written with a dropped key does not break every list of its kind
        (a `get` of it says why)."""
        if self.encryption is None:
            return [self._kv_of(kv) for kv in kvs]
        out: builtins.list[KeyValue] = []
        for kv in kvs:
            try:
                out.append(self._kv_of(kv))
            except CowpodError as err:
                log.error("left out of a list: %s", err)
        return out

    # -- error translation

    def _translate(self, err: grpc.aio.AioRpcError, what: str) -> CowpodError:
        code = err.code()
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.CANCELLED):
            return Unavailable(
                f"etcd at {','.join(self.endpoints)} unreachable during {what}: "
                f"{code.name}: {err.details()}"
            )
        if code == grpc.StatusCode.OUT_OF_RANGE or "compacted" in (err.details() or ""):
            return OutOfRange(f"{what}: {err.details()}; relist")
        details = err.details() or ""
        if "database space exceeded" in details or "no space" in details.lower():
            # etcd's NOSPACE alarm: nothing more is written until an operator frees space, so
            # retrying is futile. (The write that crossed the quota was applied: see _landed.)
            return ResourceExhausted(
                f"etcd is out of space, {what} refused ({details}): compact and defragment etcd, "
                "then disarm its NOSPACE alarm (`etcdctl alarm disarm`); reads still work"
            )
        if "request is too large" in details:
            return ResourceExhausted(
                f"{what} refused: the request is too large for etcd ({details}; see etcd's "
                "--max-request-bytes); nothing was written"
            )
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return Unavailable(f"etcd refused {what}: {details}")
        return CowpodError(f"etcd {what} failed: {code.name}: {err.details()}")

    async def _call(self, what: str, fn: Callable[..., Any], request: Any) -> Any:
        try:
            return await fn(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as err:
            raise self._translate(err, what) from None

    # -- reads

    async def get_raw(self, key: str) -> KeyValue | None:
        resp = await self._call("get", self._kv.Range, rpc.RangeRequest(key=self._k(key)))
        return self._kv_of(resp.kvs[0]) if resp.kvs else None

    async def get(self, key: str, cls: type[M]) -> M:
        kv = await self.get_raw(key)
        if kv is None:
            raise NotFound(f"{_describe(key)} not found")
        return decode(cls, kv.value, kv.mod_revision)

    async def get_many(self, keys: Sequence[str]) -> builtins.list[KeyValue | None]:
        """Read many keys at one revision per chunk of 128 keys, the chunks concurrently."""
        if 0 < len(keys) <= MAX_TXN_OPS:  # one chunk (a BindBatch's reads): no task of its own
            return (await self.txn((), [Get(k) for k in keys])).gets
        chunks = [keys[i: i + MAX_TXN_OPS] for i in range(0, len(keys), MAX_TXN_OPS)]
        results = await asyncio.gather(*(self.txn((), [Get(k) for k in c]) for c in chunks))
        return [kv for res in results for kv in res.gets]

    async def list_raw(self, prefix: str) -> tuple[builtins.list[KeyValue], int]:
        start = self._k(prefix)
        resp = await self._call(
            "list", self._kv.Range, rpc.RangeRequest(key=start, range_end=_prefix_end(start))
        )
        return self._readable(resp.kvs), int(resp.header.revision)

    async def list(self, prefix: str, cls: type[M]) -> tuple[builtins.list[M], int]:
        kvs, rev = await self.list_raw(prefix)
        return [decode(cls, kv.value, kv.mod_revision) for kv in kvs], rev

    async def current_revision(self) -> int:
        resp = await self._call(
            "revision", self._kv.Range, rpc.RangeRequest(key=self._p, count_only=True)
        )
        return int(resp.header.revision)

    # -- writes

    async def create(self, key: str, obj: M, *, lease: int = 0) -> M:
        data = encode(obj)
        try:
            res = await self.txn([Compare.absent(key)], [Put(key, data, lease)])
        except ResourceExhausted as err:
            return await self._if_landed(key, obj, data, err)
        if not res.succeeded:
            raise AlreadyExists(f"{_describe(key)} already exists")
        _set_rv(obj, res.revision)
        return obj

    async def create_many(self, items: Sequence[tuple[str, M]]) -> builtins.list[M | CowpodError]:
        """`create` of each (key, object): with group commit on, every one is queued at once
        with no task or coroutine chain of its own (a 16-pod CreateBatch spent more on 16 tasks
        than on its share of the etcd call); each member is the transaction `create` sends,
        so each gets the same answer (AlreadyExists, a write that landed despite NOSPACE)."""
        if self.group_commit <= 0 or len(items) < 2:
            return list(await asyncio.gather(*(_created(self.create(key, obj)) for key, obj in items)))
        data = [encode(obj) for _, obj in items]
        batch = groupcommit.Batch((self._loop or self._calls_loop()).create_future(), len(items))
        members = [groupcommit.Member([Compare.absent(key)], [Put(key, d)], (), batch.slot())
                   for (key, _), d in zip(items, data, strict=True)]
        self._queue.extend(members)
        self._kick()
        try:
            await batch.future  # done when every member is answered (or cancelled)
        finally:
            for m in members:
                if not m.future.done():
                    m.future.cancel()  # not sent yet: `take` drops it
        out: builtins.list[M | CowpodError] = []
        for (key, obj), d, m in zip(items, data, members, strict=True):
            err = m.future.exception()
            if err is None:
                res = m.future.result()
                if res.succeeded:
                    _set_rv(obj, res.revision)
                    out.append(obj)
                else:
                    out.append(AlreadyExists(f"{_describe(key)} already exists"))
            elif isinstance(err, ResourceExhausted):
                out.append(await _created(self._if_landed(key, obj, d, err)))
            elif isinstance(err, CowpodError):
                out.append(err)
            else:
                raise err
        return out

    async def _if_landed(self, key: str, obj: M, data: bytes, err: ResourceExhausted) -> M:
        """`obj` at the revision its write of `data` landed at despite `err` (NOSPACE), else `err`."""
        revision = await self._landed(key, data)
        if revision is None:
            raise err
        _set_rv(obj, revision)
        return obj

    async def _landed(self, key: str, data: bytes) -> int | None:
        """The revision at which `data` was stored under `key`, if it was.

        etcd applies the write that takes it over its space quota and *then* answers
        NOSPACE for it (its quota applier checks before, reports after): refusing
        that write to the caller would leave an object stored that the caller was
        told does not exist. Every write carries a fresh uid or revision, so equal
        bytes are this write."""
        kv = await self.get_raw(key)
        return kv.mod_revision if kv is not None and kv.value == data else None

    async def update(self, key: str, obj: M, *, expected_revision: int, lease: int = 0) -> M:
        """Compare-and-swap on the mod revision; 0 = only require that the key exists."""
        cmp = Compare.at(key, expected_revision) if expected_revision else Compare.exists(key)
        data = encode(obj)
        try:
            res = await self.txn([cmp], [Put(key, data, lease)], [Get(key)])
        except ResourceExhausted as err:
            return await self._if_landed(key, obj, data, err)
        if not res.succeeded:
            current = res.gets[0] if res.gets else None
            if current is None:
                raise NotFound(f"{_describe(key)} not found")
            raise Conflict(
                f"{_describe(key)} was modified: resource_version {expected_revision} is stale "
                f"(now {current.mod_revision}); re-read and retry"
            )
        _set_rv(obj, res.revision)
        return obj

    async def delete(self, key: str, cls: type[M], *, expected_revision: int = 0) -> M:
        """Delete and return the last stored value (its resource_version = the deletion revision)."""
        cmp = Compare.at(key, expected_revision) if expected_revision else Compare.exists(key)
        res = await self.txn([cmp], [Get(key), Delete(key)], [Get(key)])
        current = res.gets[0] if res.gets else None
        if current is None:
            raise NotFound(f"{_describe(key)} not found")
        if not res.succeeded:
            raise Conflict(
                f"{_describe(key)} was modified: resource_version {expected_revision} is stale "
                f"(now {current.mod_revision})"
            )
        return decode(cls, current.value, res.revision)

    async def txn(self, compares: Sequence[Compare], success: Sequence[Op],
                  failure: Sequence[Op] = (), *, linger: float = 0.0) -> TxnResult:
        """One etcd transaction. With group commit on, it may share a round trip with
        transactions other callers issue at the same moment (`controller.groupcommit`).

        `linger` (seconds; group commit only): the transaction may wait that long for company.
        Node lease renewals use it: 5,000 nodes renew 500 times a second, each alone a round
        trip of its own when no other write is in flight (an idle cluster), which cost the
        controller more CPU than the heartbeat's own handling."""
        if self.group_commit <= 0:
            succeeded, rev, results = await self._send(compares, success, failure)
            return TxnResult(succeeded, rev, groupcommit.reads(results))
        loop = self._loop or self._calls_loop()
        fut: asyncio.Future[TxnResult] = loop.create_future()
        member = groupcommit.Member(compares, success, failure, fut)
        if linger > 0:
            self._lazy.append(member)
            if self._lazy_timer is None:
                self._lazy_timer = loop.call_later(linger, self._linger_over)
        else:
            self._queue.append(member)
            self._kick()
        try:
            return await fut
        finally:
            if not fut.done():
                fut.cancel()  # not sent yet: `take` drops it

    def _calls_loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, kept for every later transaction: grpc.aio binds the channel to
        one loop, so no call can run on another, and asking for the running loop costs a
        getpid() system call each time (Python 3.11), once per caller's transaction."""
        self._loop = asyncio.get_running_loop()
        return self._loop

    def _linger_over(self) -> None:
        self._lazy_timer = None
        self._queue.extend(self._lazy)
        self._lazy.clear()
        self._kick()

    def _kick(self) -> None:
        while self._queue and len(self._sending) < self.group_commit:
            if self._lazy:  # waiting ones ride along with whatever goes now
                self._queue.extend(self._lazy)
                self._lazy.clear()
            members = groupcommit.take(self._queue)
            if not members:
                return
            task = (self._loop or self._calls_loop()).create_task(self._send_merged(members),
                                                                  name="etcd-group-commit")
            self._sending.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("etcd group commit failed with a bug", exc_info=task.exception())
        self._kick()

    async def _send_merged(self, members: builtins.list[groupcommit.Member]) -> None:
        try:
            if len(members) == 1:
                await self._send_alone(members[0])
                return
            merged = groupcommit.merge(members)
            self.txns_shared += len(members)
            try:
                succeeded, rev, results = await self._send(merged.compares, merged.success, merged.failure)
            except Unavailable:
                raise
            except CowpodError:
                # etcd refused the merge for something one member may have caused (a request
                # larger than this etcd takes, a lease that expired): each goes on its own
                # and gets its own answer.
                for m in members:
                    await self._send_alone(m)
                return
        except Exception as err:  # etcd unreachable, refused: every member sees it, as if sent alone
            for m in members:
                if not m.future.done():
                    m.future.set_exception(err)
            return
        except asyncio.CancelledError:
            for m in members:
                m.future.cancel()
            raise
        # Members whose compares held go first in the next merge.
        self._queue[:0] = groupcommit.settle(merged, succeeded, rev, results)

    async def _send_alone(self, m: groupcommit.Member) -> None:
        if m.future.done():
            return
        try:
            succeeded, rev, results = await self._send(m.compares, m.success, m.failure)
        except CowpodError as err:
            if not m.future.done():
                m.future.set_exception(err)
            return
        if not m.future.done():
            m.future.set_result(TxnResult(succeeded, rev, groupcommit.reads(results)))

    async def _send(self, compares: Sequence[Compare], success: Sequence[Op],
                    failure: Sequence[Op]) -> tuple[bool, int, builtins.list[KeyValue | bool | None]]:
        """The raw transaction: (succeeded, revision, per op of the branch that ran: the
        KeyValue or None a read found, True for a write)."""
        enc = self.encryption
        req = etcdwire.txn_request(self._p, compares, success, failure,
                                   None if enc is None else enc.encrypt)
        self.txns_sent += 1
        resp = await self._call("transaction", self._txn_call, req)
        succeeded = bool(resp.succeeded)
        responses = resp.responses
        # etcd answers each op of the branch that ran, in order, a Get with a range response:
        # only those are looked at (a merge of creates has none; each response looked at
        # costs a message wrapper).
        results: builtins.list[KeyValue | bool | None] = [True] * len(responses)
        for i, op in enumerate(success if succeeded else failure):
            if not isinstance(op, Get):
                continue
            kvs = responses[i].response_range.kvs
            if not kvs:
                results[i] = None
                continue
            try:
                results[i] = self._kv_of(kvs[0])
            except CowpodError as err:
                # Not raised: this transaction may carry other callers' (group commit). Only
                # a delete reads an undecryptable value here; it deletes it, and says so.
                log.warning("read in a transaction: %s; its content is left out", err)
                results[i] = KeyValue(self._unk(kvs[0].key), b"", kvs[0].mod_revision,
                                      kvs[0].create_revision, kvs[0].lease, kvs[0].version)
        return succeeded, int(resp.header.revision), results

    # -- leases and maintenance

    async def grant_lease(self, ttl_seconds: int) -> int:
        resp = await self._call("lease grant", self._leases.LeaseGrant,
                                rpc.LeaseGrantRequest(TTL=ttl_seconds))
        return int(resp.ID)

    async def compact(self, revision: int) -> None:
        await self._call("compact", self._kv.Compact, rpc.CompactionRequest(revision=revision, physical=True))

    async def close(self) -> None:
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        for m in self._lazy:
            m.future.cancel()
        self._lazy.clear()
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        await self._channel.close()

    # -- watch

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchBatch]:
        """Changes under `prefix` from `start_revision` (inclusive; 0 = from now).

        Yields batches until cancelled. Raises `OutOfRange` when the start revision has
        been compacted and `Unavailable` when etcd goes away; the caller resumes from the
        last revision it saw. A progress request is sent when the consumer sends nothing:
        see `progress()` in `WatchHub`."""
        start = self._k(prefix)
        create = rpc.WatchCreateRequest(
            key=start,
            range_end=_prefix_end(start),
            start_revision=start_revision,
            prev_kv=True,
            progress_notify=True,
        )
        requests: asyncio.Queue[Any] = asyncio.Queue()
        requests.put_nowait(rpc.WatchRequest(create_request=create))

        async def request_iter() -> AsyncIterator[Any]:
            while True:
                item = await requests.get()
                if item is None:
                    return
                yield item

        call = self._watch.Watch(request_iter())
        self._progress_queues[id(call)] = requests
        created = False
        unk, delete = self._unk, rpc.Event.DELETE
        try:
            try:
                first = await asyncio.wait_for(call.read(), self.timeout)
            except TimeoutError:
                raise Unavailable(
                    f"etcd at {','.join(self.endpoints)} did not confirm a watch within {self.timeout:.0f}s"
                ) from None
            resp: Any = first
            while True:
                if resp is grpc.aio.EOF:
                    raise Unavailable(f"etcd at {','.join(self.endpoints)} closed the watch stream")
                if resp.compact_revision:
                    raise OutOfRange(
                        f"revision {start_revision} has been compacted (oldest available "
                        f"{resp.compact_revision}); relist"
                    )
                if resp.canceled:
                    raise Unavailable(f"etcd cancelled the watch: {resp.cancel_reason or 'no reason given'}")
                if resp.created and not created:
                    created = True
                    if not resp.events:
                        resp = await call.read()
                        continue
                # Each event's submessages read once (every pod change of the cluster passes here).
                events: builtins.list[RawEvent] = []
                for ev in resp.events:
                    kv = ev.kv
                    prev = ev.prev_kv.value if ev.HasField("prev_kv") else None
                    if ev.type == delete:
                        events.append(RawEvent(EventType.DELETE, unk(kv.key), kv.value, prev, kv.mod_revision,
                                               ev.prev_kv.create_revision))
                    else:
                        events.append(RawEvent(EventType.PUT, unk(kv.key), kv.value, prev, kv.mod_revision,
                                               kv.create_revision))
                if events:
                    # A batch may be a fragment of the revisions etcd will still send, so only
                    # the last event's revision is safe to report as "seen everything up to".
                    rev = events[-1].mod_revision
                    if self.encryption is not None:
                        events = self._decrypted(events)
                else:
                    rev = int(resp.header.revision)
                yield WatchBatch(rev, events)
                resp = await call.read()
        except grpc.aio.AioRpcError as err:
            raise self._translate(err, "watch") from None
        finally:
            self._progress_queues.pop(id(call), None)
            requests.put_nowait(None)
            call.cancel()

    def _decrypted(self, events: builtins.list[RawEvent]) -> builtins.list[RawEvent]:
        """Watch events with plaintext values. An object the encryption config cannot read
        is invisible, as in a list: its events are dropped (and logged), and a write over
        it with a readable value arrives as a creation."""
        enc = self.encryption
        assert enc is not None
        out: builtins.list[RawEvent] = []
        for e in events:
            if not enc.applies(e.key):
                out.append(e)
                continue
            prev: bytes | None = None
            if e.prev_value is not None:
                try:
                    prev = enc.decrypt(e.key, e.prev_value)
                except CowpodError as err:
                    if e.type == EventType.DELETE:
                        log.error("watch event dropped: %s", err)
                        continue
            value = e.value
            if e.type == EventType.PUT:
                try:
                    value = enc.decrypt(e.key, e.value)
                except CowpodError as err:
                    log.error("watch event dropped: %s", err)
                    continue
            out.append(RawEvent(e.type, e.key, value, prev, e.mod_revision, e.create_revision))
        return out

    def request_progress(self) -> None:
        """Ask etcd for a progress notification on every open watch (bookmarks move on)."""
        for q in self._progress_queues.values():
            q.put_nowait(rpc.WatchRequest(progress_request=rpc.WatchProgressRequest()))


async def _created(create: Awaitable[M]) -> M | CowpodError:
    """A create's object, or the CowpodError it raised (`create_many` answers per item)."""
    try:
        return await create
    except CowpodError as err:
        return err


def _set_rv(obj: Message, rev: int) -> None:
    meta: Any = getattr(obj, "metadata", None)
    if meta is not None:
        meta.resource_version = rev


def _describe(key: str) -> str:
    """`registry/pods/default/web` -> `pods "default/web"` for messages a user reads."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] == "registry":
        return f'{parts[1]} "{"/".join(parts[2:])}"'
    return f'"{key}"'


async def guaranteed_update(
    store: Store,
    key: str,
    cls: type[M],
    mutate: Callable[[M], M | None],
    *,
    attempts: int = 16,
) -> M:
    """Read-modify-CAS until it sticks. `mutate` returns None for "nothing to change"."""
    for _ in range(attempts):
        current = await store.get(key, cls)
        rv = current.metadata.resource_version  # type: ignore[attr-defined]
        new = mutate(current)
        if new is None:
            return current
        try:
            return await store.update(key, new, expected_revision=rv)
        except Conflict:
            continue
    raise Conflict(f"{_describe(key)} kept changing; gave up after {attempts} attempts")


# The plain values live in controller.store_types; callers import them from here.
__all__ = [
    "MAX_TXN_OPS",
    "Compare",
    "Delete",
    "EtcdStore",
    "EventType",
    "Get",
    "KeyValue",
    "M",
    "Op",
    "Put",
    "RawEvent",
    "Store",
    "Target",
    "TxnResult",
    "WatchBatch",
    "decode",
    "encode",
    "guaranteed_update",
]
