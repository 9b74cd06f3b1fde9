"""Watch fan-out: one etcd watch per kind, shared by every client stream.

    etcd ──watch(prefix, prev_kv)──► WatchHub(kind) ──► ring buffer of recent HubEvents
                                          │
                        index by trigger field (pods: spec.nodeName)
                                          │
                  ┌───────────────┬───────┴───────┬───────────────┐
              Subscription    Subscription    Subscription     (bounded queue each)
                  │                │               │
             client stream    client stream   client stream  (gRPC Watch handlers)

Each etcd event is decoded once and, per outgoing event type, encoded once:
all streams share the bytes. Streams with equal filters form a group (`_Group`): an
event's outcome and queue item are worked out once per group, not once per stream,
and a stream's queue wakes its consumer once per dispatch, not once per event.
A subscriber is matched against the event's new and previous object, so an object
moving *into* a stream's selector arrives as ADDED, one moving *out* as DELETED,
like the Kubernetes watch cache.

A stream asking to resume from a revision the ring buffer still covers is served
from it; an older revision falls back to a dedicated etcd watch for that stream
(etcd answers OUT_OF_RANGE when it is compacted). A stream whose queue overflows
is closed with RESOURCE_EXHAUSTED; its informer resumes from its last revision.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from google.protobuf.message import Message

from controller.etcdwire import varint
from controller.kinds import Kind, WatchEventClass
from controller.selectors import FieldSelector, LabelSelector, Requirement
from controller.store import EventType, RawEvent, Store, WatchBatch, decode
from cowpod.backoff import Backoff, Retry
from cowpod.clock import Clock
from cowpod.errors import CowpodError, OutOfRange, ResourceExhausted, Unavailable
from cowpod.v1 import meta_pb2

log = logging.getLogger(__name__)

# Re-establishing the etcd watch after UNAVAILABLE: from 0.2 s, doubling up to 5 s.
HUB_RETRY = Backoff(initial=0.2, cap=5.0)

M = TypeVar("M", bound=Message)

ADDED = meta_pb2.ADDED
MODIFIED = meta_pb2.MODIFIED
DELETED = meta_pb2.DELETED
BOOKMARK = meta_pb2.BOOKMARK


@dataclass(frozen=True)
class Filter(Generic[M]):
    """What one stream wants: a namespace, a label selector and a field selector."""

    namespace: str
    labels: LabelSelector
    fields: FieldSelector[M]
    # Facts the hub asks for every event and every stream, computed once (set in __post_init__):
    # the label requirements, and each field requirement as (getter, value, negate).
    everything: bool = field(init=False, repr=False, compare=False)
    _labels: tuple[Requirement, ...] = field(init=False, repr=False, compare=False)
    _fields: tuple[tuple[Callable[[Any], Any], Any, bool], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        getters = self.fields._getters
        reqs = self.fields.requirements
        checks: tuple[tuple[Callable[[Any], Any], Any, bool], ...]
        if all(r.field in getters for r in reqs):
            checks = tuple((getters[r.field], r.value, r.negate) for r in reqs)
        else:  # a field without a getter fails as FieldSelector.matches fails: when matched
            checks = ((self.fields.matches, True, False),)
        object.__setattr__(self, "_labels", self.labels.requirements)
        object.__setattr__(self, "_fields", checks)
        object.__setattr__(self, "everything", not self.namespace and not self._labels and not checks)

    def matches(self, obj: Any) -> bool:
        """`LabelSelector.matches` and `FieldSelector.matches` as they are, unrolled (the hub
        calls this for every event and every filter of a stream)."""
        if self.namespace and obj.metadata.namespace != self.namespace:
            return False
        if self._labels:
            labels = obj.metadata.labels
            for r in self._labels:
                if not r.matches(labels):
                    return False
        for get, value, negate in self._fields:
            if (get(obj) == value) == negate:
                return False
        return True

    def trigger_checks(self, get: Callable[[Any], Any] | None) -> tuple[tuple[Any, bool], ...] | None:
        """When every requirement of this filter is on the field `get` reads (a hub's trigger
        field: `spec.nodeName=` of the scheduler's queue and the agents, `spec.nodeName!=`),
        its (value, negate) pairs: `matches(obj)` is then `_passes(get(obj), pairs)`, and the
        hub reads that field once per event for every such filter. Else None."""
        if get is None or self.namespace or self._labels or not self._fields:
            return None
        if any(g is not get for g, _, _ in self._fields):
            return None
        return tuple((v, negate) for _, v, negate in self._fields)

    def group_key(self) -> tuple[Any, ...]:
        """Equal for two filters that select exactly the same objects: the namespace, the label
        requirements, and each field requirement with the getter that reads its field (so two
        filters bound to different getters never share, whatever their text)."""
        getters = self.fields._getters
        return (self.namespace, self.labels,
                tuple((r, getters[r.field]) for r in self.fields.requirements))


# What `HubEvent.outcome` answers: (type to send, send the previous object?). One shared tuple
# each, so a queued item and `HubEvent.encoded`'s cache key are the same object.
Outcome = tuple[meta_pb2.WatchEventType, bool]
_ADDED: Outcome = (ADDED, False)
_MODIFIED: Outcome = (MODIFIED, False)
_GONE: Outcome = (DELETED, True)  # deleted: the last state it had
_LEFT: Outcome = (DELETED, False)  # moved out of the selector: the object as it is now


def _outcome_of(new_ok: bool, prev_ok: bool, deleted: bool) -> Outcome | None:
    """What a stream gets, given whether the event's new and previous object match its filter."""
    if new_ok:
        return _MODIFIED if prev_ok else _ADDED
    if prev_ok:
        # Deleted, or moved out of the selector: the client forgets it.
        return _GONE if deleted else _LEFT
    return None


def _passes(value: Any, checks: tuple[tuple[Any, bool], ...]) -> bool:
    """`Filter.matches` of a filter whose `trigger_checks` are `checks`, given the field's value."""
    for v, negate in checks:
        if (value == v) == negate:
            return False
    return True


class HubEvent:
    """One etcd change, decoded lazily and encoded at most once per outgoing type."""

    __slots__ = ("_cls", "_enc", "_new", "_prev", "_triggers", "_wcls", "raw", "resume", "revision")

    def __init__(self, raw: RawEvent, cls: type[Message], wcls: WatchEventClass[Any]) -> None:
        self.raw = raw
        self._cls = cls
        self._wcls = wcls
        self._new: Message | None = None
        self._prev: Message | None = None
        self._triggers: tuple[Any, Any] | None = None
        self._enc: dict[Outcome, bytes] = {}
        self.revision = raw.mod_revision
        # The revision a client that has seen this event may resume after. One transaction
        # can change many objects at one revision (BindBatch, group commit): every event but
        # the last of its revision says revision - 1, so a stream cut between two of them
        # resumes with the rest (and sees a few again) instead of skipping them.
        self.resume = raw.mod_revision

    def new(self) -> Message | None:
        if self._new is None:
            if self.raw.type is EventType.DELETE:
                return None
            self._new = decode(self._cls, self.raw.value, self.raw.mod_revision)
        return self._new

    def prev(self) -> Message | None:
        if self._prev is None:
            if self.raw.prev_value is None:
                return None
            # The deleted/replaced object, stamped with this event's revision so a
            # client resuming from it does not see the event again.
            self._prev = decode(self._cls, self.raw.prev_value, self.raw.mod_revision)
        return self._prev

    def triggers(self, get: Callable[[Any], Any]) -> tuple[Any, Any]:
        """`get` (the hub's trigger field) of the new and the previous object, None for one
        the event has not; read once per event, for the index and every trigger-only filter."""
        t = self._triggers
        if t is None:
            new = self.new()
            prev = self.prev()
            t = self._triggers = (None if new is None else get(new), None if prev is None else get(prev))
        return t

    def encoded(self, type_: meta_pb2.WatchEventType, use_prev: bool) -> bytes:
        return self.encoded_as((type_, use_prev))

    def encoded_as(self, out: Outcome) -> bytes:
        """`encoded(*out)`: what a stream queue holds is the outcome tuple itself."""
        b = self._enc.get(out)
        if b is None:
            raw = self.raw
            value = raw.prev_value if out[1] else raw.value
            assert value is not None
            b = spliced_event(self._cls, self._wcls, value, out[0], raw.mod_revision, self.resume)
            self._enc[out] = b
        return b

    def forget_decoded(self) -> None:
        """Drop the decoded objects once dispatched: the ring buffer keeps only bytes
        (raw and encoded), so a full buffer costs megabytes, not gigabytes."""
        self._new = None
        self._prev = None
        self._triggers = None

    def outcome(self, flt: Filter[Any]) -> Outcome | None:
        """(type to send, send the previous object?) for a stream with `flt`, or None."""
        raw = self.raw
        if flt.everything:  # from the raw event alone: nothing to decode
            if raw.type is EventType.DELETE:
                return _GONE if raw.prev_value is not None else None
            return _ADDED if raw.prev_value is None else _MODIFIED
        new = self.new()
        new_ok = new is not None and flt.matches(new)
        prev_ok = raw.prev_value is not None and flt.matches(self.prev())
        return _outcome_of(new_ok, prev_ok, new is None)


_OBJECT_TAG = bytes([2 << 3 | 2])  # field 2 (`object`) of every *WatchEvent, length-delimited


def spliced_event(cls: type[Message], wcls: WatchEventClass[Any], value: bytes,
                  type_: meta_pb2.WatchEventType, obj_revision: int, event_revision: int) -> bytes:
    """A watch event carrying the stored bytes `value` as its object, stamped with
    `obj_revision`, built without decoding or re-encoding the object.

    Why: streams are encoded after the hub has forgotten its decoded objects, so each
    encoding decoded the stored bytes again and serialized them back (a bind reaches the
    scheduler's two filtered streams and any unfiltered one: three decodes and three encodes).
    Protobuf merges repeated occurrences of a message field, and the last scalar wins: the
    stored bytes followed by an event whose object holds only `metadata.resource_version`
    parse exactly as `decode(cls, value, obj_revision)` wrapped in an event."""
    return b"".join((_OBJECT_TAG, varint(len(value)), value,
                     _stamp_bytes(cls, wcls, type_, obj_revision, event_revision)))


_STAMPS: dict[tuple[Any, ...], bytes] = {}
_STAMPS_MAX = 256


def _stamp_bytes(cls: type[Message], wcls: WatchEventClass[Any], type_: meta_pb2.WatchEventType,
                 obj_revision: int, event_revision: int) -> bytes:
    """The tail `spliced_event` appends: a pure function of its arguments, and the same for
    every event of one transaction (one revision, one type), so it is built once for them and
    remembered (a few recent ones: revisions only grow)."""
    k = (cls, wcls, type_, obj_revision, event_revision)
    b = _STAMPS.get(k)
    if b is None:
        if len(_STAMPS) >= _STAMPS_MAX:
            _STAMPS.clear()
        b = _STAMPS[k] = wcls(type=type_, object=_stamp(cls, obj_revision),
                              resource_version=event_revision).SerializeToString()
    return b


def _stamp(cls: type[Message], revision: int) -> Message:
    """An object holding only what `store.decode` adds to the stored one."""
    obj = cls()
    meta: Any = getattr(obj, "metadata", None)
    if meta is not None:
        meta.resource_version = revision
    return obj


def hub_events(batch: WatchBatch, cls: type[Message], wcls: WatchEventClass[Any]) -> list[HubEvent]:
    """A batch's events, each knowing whether a later one shares its revision (`resume`)."""
    out = [HubEvent(raw, cls, wcls) for raw in batch.events]
    for a, b in itertools.pairwise(out):
        if a.raw.mod_revision == b.raw.mod_revision:
            a.resume = a.raw.mod_revision - 1
    return out


_TICK = object()


class HubObserver(Protocol):
    """Keeps an index over every object of the kind in step with the hub (controller.node_usage)."""

    async def resync(self) -> int:
        """Rebuild from a full list; return the revision of the list (the watch resumes after it)."""

    def observe(self, ev: HubEvent) -> None:
        """One change, in revision order, before any stream sees it."""


class Subscription:
    """One client stream's view of a hub: a bounded queue of outcomes, each `(outcome, event)`.

    The queue is a deque the hub appends to and the stream's one consumer pops from, with a
    single future to wake that consumer (asyncio.Queue's put/get bookkeeping, per event and
    stream, was a visible share of the fan-out). At most `maxsize` items wait; the event that
    would be one more closes the stream with RESOURCE_EXHAUSTED."""

    def __init__(self, hub: WatchHub[Any], flt: Filter[Any], after: int, queue_size: int,
                 bookmark_interval: float) -> None:
        self.hub = hub
        self.filter = flt
        self.after = after  # events at or below this revision are not for us
        self.maxsize = queue_size
        self.pending: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.error: CowpodError | None = None
        self.bookmark_interval = bookmark_interval
        self.trigger: str | None = None
        self.group: _Group | None = None  # set by the hub
        self.last_sent = hub.clock.monotonic()

    def offer(self, ev: HubEvent) -> None:
        """One event for this stream alone (a replay from the buffer); the hub's fan-out offers
        each event to a `_Group` of streams with equal filters at once, by the same rules."""
        if self.error is not None or ev.revision <= self.after:
            return
        out = ev.outcome(self.filter)
        if out is not None:
            self.put(self.item(out, ev))

    @staticmethod
    def item(out: Outcome, ev: HubEvent) -> Any:
        """What the queue holds for one event: the outcome and the event (encoded when sent)."""
        return (out, ev)

    def put(self, item: Any) -> None:
        if len(self.pending) >= self.maxsize:
            self.overflow()
            return
        self.pending.append(item)
        if self._waiter is not None:
            self._wake()

    def overflow(self) -> None:
        self.fail(ResourceExhausted(
            f"watch stream fell more than {self.maxsize} events behind; "
            "it was closed so the client can resume or relist"
        ))

    def fail(self, err: CowpodError) -> None:
        """Close the stream: the consumer gets what is queued (a prefix without gaps, so
        resuming from its last revision loses nothing), then `err`."""
        if self.error is None:
            self.error = err
            self.hub.unsubscribe(self)
            self.pending.append(None)  # past maxsize if need be: it only wakes the consumer
            self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():  # cancelled with its consumer
                w.set_result(None)

    async def _wait(self) -> None:
        """Until something is queued (one consumer per subscription). The loop is asked for
        once (as asyncio.Queue does): on Python 3.11 that question costs a getpid()."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiter = fut
        try:
            await fut
        finally:
            if self._waiter is fut:
                self._waiter = None

    def tick(self) -> None:
        if not self.pending:
            self.pending.append(_TICK)
            self._wake()

    async def stream(self, batches: bool = False) -> AsyncIterator[bytes]:
        """The encoded events, one message each; with `batches`, everything already queued
        goes out in one message (see `pack`)."""
        wcls = self.hub.kind.watch_event
        assert wcls is not None
        clock = self.hub.clock
        pending = self.pending
        while True:
            if not pending:
                await self._wait()
                continue
            item = pending.popleft()
            if item is None:
                assert self.error is not None
                raise self.error
            if item is _TICK:
                if clock.monotonic() - self.last_sent >= self.bookmark_interval:
                    self.last_sent = clock.monotonic()
                    yield bookmark(wcls, max(self.after, self.hub.position))
                continue
            self.last_sent = clock.monotonic()
            first = item[1].encoded_as(item[0])
            if not batches or not pending:
                yield first
                continue
            parts = [first]
            size = len(first)
            failed = False
            while len(parts) < MAX_BATCH_EVENTS and size < MAX_BATCH_BYTES and pending:
                nxt = pending.popleft()
                if nxt is None:
                    failed = True
                    break
                if nxt is _TICK:
                    continue
                b = nxt[1].encoded_as(nxt[0])
                parts.append(b)
                size += len(b)
            yield pack(parts)
            if failed:
                assert self.error is not None
                raise self.error


class ObjectEvent:
    """A watch event as an in-process consumer gets it: the object the hub decoded, shared with
    every other in-process consumer (read only), and the revision to resume after. Has the
    attributes `cowpod.informer.Informer` reads of a generated `*WatchEvent`."""

    __slots__ = ("object", "resource_version", "type")

    def __init__(self, type_: int, obj: Any, resource_version: int) -> None:
        self.type = type_
        self.object = obj
        self.resource_version = resource_version


class ObjectBatch:
    """Several `ObjectEvent`s delivered at once (a batch message's shape: only `batch`)."""

    __slots__ = ("batch",)

    def __init__(self, batch: list[ObjectEvent]) -> None:
        self.batch = batch


class ObjectSubscription(Subscription):
    """An in-process stream's view of a hub: decoded objects instead of bytes.

    Why: the hub decodes each event once already (its observer and trigger index need the
    object); a byte stream read in process made every in-process informer encode-then-parse
    the same pod again and hold its own copy. Here the queue keeps the object the hub
    decoded, taken at offer time (before the hub forgets it), so nothing is encoded or
    parsed for the consumer."""

    @staticmethod
    def item(out: Outcome, ev: HubEvent) -> Any:
        return ObjectEvent(out[0], ev.prev() if out[1] else ev.new(), ev.resume)

    async def objects(self) -> AsyncIterator[ObjectBatch]:
        """Everything queued at once as one batch; BOOKMARKs at the stream's interval."""
        clock = self.hub.clock
        pending = self.pending
        while True:
            if not pending:
                await self._wait()
                continue
            item = pending.popleft()
            out: list[ObjectEvent] = []
            failed = item is None
            if item is _TICK:
                if clock.monotonic() - self.last_sent >= self.bookmark_interval:
                    out.append(ObjectEvent(BOOKMARK, None, max(self.after, self.hub.position)))
            elif item is not None:
                out.append(item)
            while not failed and len(out) < MAX_BATCH_EVENTS and pending:
                nxt = pending.popleft()
                if nxt is None:
                    failed = True
                elif nxt is not _TICK:
                    out.append(nxt)
            if out:
                self.last_sent = clock.monotonic()
                yield ObjectBatch(out)
            if failed:
                assert self.error is not None
                raise self.error


class _Group:
    """The subscriptions of one hub with equal filters (`Filter.group_key`) and the same queue
    item type: the hub works out an event's outcome and queue item once for all of them
    (the scheduler's and a bench's `spec.nodeName!=` streams, many clients of one selector).
    `subs` is replaced, never changed in place, so a fan-out may iterate it while a
    subscription it offers to fails and leaves."""

    __slots__ = ("flt", "item", "key", "on_trigger", "subs", "trigger_get")

    def __init__(self, sub: Subscription, key: tuple[Any, ...],
                 trigger_get: Callable[[Any], Any] | None) -> None:
        self.key = key
        self.flt = sub.filter
        self.item = type(sub).item  # every member's class is the same
        self.subs: tuple[Subscription, ...] = ()
        self.trigger_get = trigger_get
        self.on_trigger = sub.filter.trigger_checks(trigger_get)

    def offer(self, ev: HubEvent) -> None:
        """`Subscription.offer` for every member, the outcome and item computed once."""
        checks = self.on_trigger
        if checks is None:
            out = ev.outcome(self.flt)
        else:  # HubEvent.outcome from the event's trigger values (`Filter.trigger_checks`)
            assert self.trigger_get is not None
            tnew, tprev = ev.triggers(self.trigger_get)
            out = _outcome_of(tnew is not None and _passes(tnew, checks),
                              tprev is not None and _passes(tprev, checks), tnew is None)
        if out is None:
            return
        item = self.item(out, ev)
        rev = ev.revision
        for sub in self.subs:
            if sub.error is not None or rev <= sub.after:
                continue
            pending = sub.pending
            if len(pending) >= sub.maxsize:
                sub.overflow()
                continue
            pending.append(item)
            if sub._waiter is not None:
                sub._wake()


# A batch message carries at most this many events / bytes (clients accept 4 MiB by default).
MAX_BATCH_EVENTS = 512
MAX_BATCH_BYTES = 1 << 20
_BATCH_TAG = bytes([4 << 3 | 2])  # field 4 (`batch`), length-delimited
_BATCH_PREFIXES: dict[int, bytes] = {}  # event length -> its tag and length prefix in a batch


def _batch_prefix(n: int) -> bytes:
    p = _BATCH_PREFIXES.get(n)
    if p is None:
        p = _BATCH_TAG + varint(n)
        if n < 0x4000:  # bounded: at most 16,384 entries
            _BATCH_PREFIXES[n] = p
    return p


def pack(events: list[bytes]) -> bytes:
    """Encoded watch events as one watch event whose `batch` holds them, built from the
    shared bytes without decoding anything; a single event goes as it is. Each event's
    bytes are copied once, into the result (not first into a prefixed copy)."""
    if len(events) == 1:
        return events[0]
    parts: list[bytes] = []
    for e in events:
        parts.append(_batch_prefix(len(e)))
        parts.append(e)
    return b"".join(parts)


def batched(messages: list[bytes]) -> list[bytes]:
    """`messages` regrouped into batch messages within the size limits."""
    out: list[bytes] = []
    cur: list[bytes] = []
    size = 0
    for m in messages:
        if cur and (len(cur) >= MAX_BATCH_EVENTS or size + len(m) > MAX_BATCH_BYTES):
            out.append(pack(cur))
            cur, size = [], 0
        cur.append(m)
        size += len(m)
    if cur:
        out.append(pack(cur))
    return out


def bookmark(wcls: WatchEventClass[Any], revision: int) -> bytes:
    return wcls(type=BOOKMARK, resource_version=revision).SerializeToString()


class WatchHub(Generic[M]):
    """The shared etcd watch of one kind. Owned by the server's TaskGroup via `run`."""

    def __init__(self, store: Store, kind: Kind[M], clock: Clock, *, buffer_size: int = 20_000,
                 queue_size: int = 50_000, observer: HubObserver | None = None) -> None:
        self.store = store
        self.kind = kind
        self.clock = clock
        self.queue_size = queue_size
        self.observer = observer
        self.position = 0  # every event up to here has been dispatched
        # (revision, tiebreak, future) of callers waiting for `position` to reach a revision
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tiebreak = itertools.count()
        self.buffer_start = 0  # the buffer holds every event with revision > buffer_start
        self._buffer: collections.deque[HubEvent] = collections.deque(maxlen=buffer_size)
        # Subscriptions in groups of equal filters; the groups whose filter pins the trigger field
        # are found by its value (`_by_trigger`), the others get every event (`_unindexed`).
        # The tuples are replaced, never changed in place, so a fan-out can iterate them while
        # a subscription fails and leaves.
        self._groups: dict[tuple[Any, ...], _Group] = {}
        self._unindexed: tuple[_Group, ...] = ()
        self._by_trigger: dict[str, tuple[_Group, ...]] = {}
        self._trigger_get = kind.all_fields().get(kind.trigger_field) if kind.trigger_field else None
        self._ready = asyncio.Event()

    @property
    def subscribers(self) -> int:
        return sum(len(g.subs) for g in self._groups.values())

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def run(self) -> None:
        retry = Retry(HUB_RETRY, self.clock)
        while True:
            try:
                if not self._ready.is_set():
                    if self.observer is not None:
                        rev = await self.observer.resync()
                    else:
                        rev = await self.store.current_revision()
                    self.position = max(self.position, rev)
                    self.buffer_start = self.position
                    self._ready.set()
                    self._wake_waiters()
                async for batch in self.store.watch(self.kind.prefix(), self.position + 1):
                    self._dispatch(batch)
                    retry.reset()
            except OutOfRange as err:
                # We were away longer than etcd keeps history: nobody can be served
                # from our buffer any more. Every stream relists.
                log.warning("%s watch hub: %s; resetting and closing %d streams",
                            self.kind.resource, err, self.subscribers)
                self._reset(OutOfRange(f"the controller's {self.kind.resource} watch was reset; relist"))
                continue
            except Unavailable as err:
                log.warning("%s watch hub: %s; retrying", self.kind.resource, err)
            await retry.sleep()

    async def run_ticker(self, period: float = 1.0) -> None:
        """Wake idle streams so they can send BOOKMARKs at their interval."""
        while True:
            await self.clock.sleep(period)
            for sub in list(self._all()):
                sub.tick()

    def _all(self) -> list[Subscription]:
        return [s for g in self._groups.values() for s in g.subs]

    def _reset(self, err: CowpodError) -> None:
        for sub in self._all():
            sub.fail(err)
        self._buffer.clear()
        self._ready.clear()

    def _dispatch(self, batch: WatchBatch) -> None:
        wcls = self.kind.watch_event
        assert wcls is not None
        observer = self.observer
        buf = self._buffer
        for ev in hub_events(batch, self.kind.message, wcls):
            if len(buf) == buf.maxlen:
                self.buffer_start = buf[0].revision
            buf.append(ev)
            if observer is not None:
                observer.observe(ev)
            for g in self._unindexed:
                g.offer(ev)
            if self._by_trigger and self._trigger_get is not None:
                for g in self._indexed(ev):
                    g.offer(ev)
            ev.forget_decoded()
        self.position = max(self.position, batch.revision)
        self._wake_waiters()

    async def wait_position(self, revision: int, timeout: float) -> None:
        """Return once every event up to `revision` has been dispatched (and observed).
        Raises `Unavailable` after `timeout` seconds (the etcd watch is stuck or down)."""
        if self.position >= revision and self._ready.is_set():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (revision, next(self._tiebreak), fut))
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            raise Unavailable(
                f"the controller's {self.kind.resource} watch has not reached revision {revision} "
                f"within {timeout:.0f}s (at {self.position}); retry"
            ) from None
        finally:
            fut.cancel()

    def _wake_waiters(self) -> None:
        if not self._ready.is_set():
            return
        w = self._waiters
        while w and w[0][0] <= self.position:
            _, _, fut = heapq.heappop(w)
            if not fut.done():
                fut.set_result(None)

    def _indexed(self, ev: HubEvent) -> list[_Group]:
        """The groups whose pinned trigger value is the event's new or previous object's."""
        get = self._trigger_get
        assert get is not None
        tnew, tprev = ev.triggers(get)
        by = self._by_trigger
        if tnew == tprev or tprev is None:
            return list(by.get(tnew, ()))
        if tnew is None:
            return list(by.get(tprev, ()))
        return [*by.get(tnew, ()), *by.get(tprev, ())]

    def subscribe(self, flt: Filter[M], after: int, bookmark_interval: float, *,
                  objects: bool = False) -> Subscription | None:
        """A subscription for events after `after`, or None when the buffer no longer covers it.
        With `objects`, an `ObjectSubscription` (in-process consumers: decoded objects)."""
        if after < self.buffer_start or not self._ready.is_set():
            return None
        cls = ObjectSubscription if objects else Subscription
        sub = cls(self, flt, after, self.queue_size, bookmark_interval)
        trig = flt.fields.required(self.kind.trigger_field) if self._trigger_get else None
        sub.trigger = trig
        key = (trig, cls, flt.group_key())
        g = self._groups.get(key)
        if g is None:
            g = self._groups[key] = _Group(sub, key, self._trigger_get)
            if trig is None:
                self._unindexed = (*self._unindexed, g)
            else:
                self._by_trigger[trig] = (*self._by_trigger.get(trig, ()), g)
        g.subs = (*g.subs, sub)
        sub.group = g
        # Replay what the buffer holds after `after`: no await between this and
        # registration, so no event can slip between replay and live delivery.
        if after < self.position:
            for ev in self._buffer:
                if ev.revision > after:
                    sub.offer(ev)
                    ev.forget_decoded()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        g = sub.group
        if g is None or sub not in g.subs:
            return
        g.subs = tuple(s for s in g.subs if s is not sub)
        if g.subs:
            return
        del self._groups[g.key]
        if sub.trigger is None:
            self._unindexed = tuple(x for x in self._unindexed if x is not g)
            return
        rest = tuple(x for x in self._by_trigger.get(sub.trigger, ()) if x is not g)
        if rest:
            self._by_trigger[sub.trigger] = rest
        else:
            self._by_trigger.pop(sub.trigger, None)


async def dedicated_stream(store: Store, kind: Kind[M], flt: Filter[M], after: int,
                           clock: Clock, bookmark_interval: float,
                           batches: bool = False) -> AsyncIterator[bytes]:
    """Serve a stream that resumes from before the hub's buffer with its own etcd watch."""
    wcls = kind.watch_event
    assert wcls is not None
    last_sent = clock.monotonic()
    async for batch in store.watch(kind.prefix(flt.namespace), after + 1):
        out: list[bytes] = []
        for ev in hub_events(batch, kind.message, wcls):
            o = ev.outcome(flt)
            if o is not None:
                out.append(ev.encoded(o[0], o[1]))
        if not out and clock.monotonic() - last_sent >= bookmark_interval:
            out.append(bookmark(wcls, batch.revision))
        if out:
            last_sent = clock.monotonic()
        for b in batched(out) if batches else out:
            yield b
