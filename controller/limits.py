"""Limits that keep one client from hurting the controller or everyone else.

- Request size: gRPC itself refuses a message over `max_request_bytes`
  (`server_options`) with RESOURCE_EXHAUSTED before any of our code runs.
- Object ("manifest") size, label count, annotation size, string and list
  lengths: `check_message` walks a request and raises `Invalid` naming the
  field path, so a hostile or accidental giant object is INVALID_ARGUMENT and
  is never stored (etcd would refuse a value over 1.5 MiB anyway, less clearly).
- Rate: a token bucket per client identity (`RateLimiter`), with more room
  for system components than for people; over it, RESOURCE_EXHAUSTED with
  how long to wait. An identity's bucket is charged only once the caller has
  proven it (a token checked, a certificate verified): otherwise anyone could
  drain another user's bucket with junk under that user's token id. Failed
  authentications are charged to their source address instead
  (`failed_auth_rate`, `source_address`). Streams (watches, logs) count once when they open, and
  their number per client is capped (`StreamCounter`).

Time comes from an injected `Clock`, so tests drain and refill buckets
without sleeping.
"""

from __future__ import annotations

import math
import sys
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from cowpod.clock import Clock
from cowpod.errors import Invalid, ResourceExhausted

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int = 4 * MiB
    # A stored object (pod, node, VM...) serialized; etcd's own limit is 1.5 MiB.
    max_object_bytes: int = 1 * MiB
    max_labels: int = 64
    # Kubernetes: all annotations of an object together at most 256 KiB.
    max_annotations_bytes: int = 256 * 1024
    # Any single string field other than annotation values.
    max_string_bytes: int = 16 * 1024
    # Items in any one repeated or map field (BindBatch can be large).
    max_items: int = 10_000
    # Requests per second and burst, per client identity.
    user_rate: float = 50.0
    user_burst: int = 200
    system_rate: float = 2000.0
    system_burst: int = 10_000
    # Failed authentications (bad or unknown tokens) per source address: past this the
    # source gets RESOURCE_EXHAUSTED for tokens this controller has not seen succeed.
    failed_auth_rate: float = 1.0
    failed_auth_burst: int = 20
    # Concurrent streams (watch, logs, exec, heartbeat) per client.
    max_streams: int = 128
    # How many clients' buckets to remember (least recently used are dropped).
    max_clients: int = 100_000


def server_options(limits: Limits) -> list[tuple[str, Any]]:
    """gRPC server options that enforce the request size limit."""
    return [("grpc.max_receive_message_length", limits.max_request_bytes)]


# --- object limits --------------------------------------------------------------------------------


def _size(n: int) -> str:
    if n >= MiB:
        return f"{n / MiB:.1f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} bytes"


def check_message(msg: Message, limits: Limits, *, wire_size: int | None = None) -> None:
    """Raise `Invalid` (field path + reason) if `msg` breaks an object limit.

    `wire_size` is the length of the bytes `msg` was parsed from, when known. Every string,
    item and annotation of `msg` was read from those bytes, so they bound it as its own
    serialized size does (`_Plan`); for a request that is no object (no `metadata`: the
    object size limit is not for it) the message is then not serialized to be measured."""
    plan = _plan(limits)
    desc: Any = msg.DESCRIPTOR
    harmless, is_object = plan.top.get(desc) or plan.top_facts(desc, msg)
    if wire_size is None or is_object:
        size = msg.ByteSize()
        if size > limits.max_object_bytes and is_object:
            raise Invalid("", f"object is {_size(size)}; the maximum is {_size(limits.max_object_bytes)}")
    else:
        size = wire_size
    if size > harmless:
        _walk(msg, "", plan, size)


# What a message type's fields can break, found once per type over every type it reaches.
_STRING, _ITEMS, _LABELS, _ANNOTATIONS = "string", "items", "labels", "annotations"
_ALWAYS = "always"  # extensions: fields the descriptor does not list; such a message is always walked


def _breakable(desc: Descriptor) -> frozenset[str]:
    """The kinds of limit `_walk` checks somewhere in a message of type `desc` (itself and every
    message type below it, cycles included): what its fields, as `_walk` and `_check_map` treat
    them, are measured against."""
    kinds: set[str] = set()
    seen: set[Descriptor] = set()
    todo = [desc]
    while todo:
        d = todo.pop()
        if d in seen:
            continue
        seen.add(d)
        if d.extension_ranges:
            kinds.add(_ALWAYS)
        for fd in d.fields:
            mt = fd.message_type
            if mt is not None and mt.GetOptions().map_entry:
                kinds.add(_ITEMS)
                if fd.name == "labels":
                    kinds.add(_LABELS)
                if fd.name == "annotations":
                    kinds.add(_ANNOTATIONS)
                    continue  # only the total of keys and values is measured
                if mt.fields_by_name["key"].type == FieldDescriptor.TYPE_STRING:
                    kinds.add(_STRING)
                fd = mt.fields_by_name["value"]  # checked as a singular field of its type
                mt = fd.message_type
            elif fd.is_repeated:
                kinds.add(_ITEMS)
            if fd.type == FieldDescriptor.TYPE_STRING:
                kinds.add(_STRING)
            elif mt is not None:
                todo.append(mt)
    return frozenset(kinds)


_BREAKABLE: dict[Descriptor, frozenset[str]] = {}


class _Plan:
    """check_message's facts for one `Limits`, worked out once per message type and field.

    A message serialized in at most `harmless(type)` bytes cannot break any limit its type can
    break, so it is not walked: a string is no longer than its bytes, every list item or map
    entry takes at least one byte (a map entry two), and annotations' keys and values are
    among the bytes. Labels are counted by distinct key: every entry takes its field's tag and
    length, and a non-empty key its own tag, length and a character, so max_labels + 1 labels
    (one key may be empty) take at least 2 + 5 * max_labels bytes. The same holds of the bytes
    a message was parsed from (`check_message`'s `wire_size`): whatever was parsed was read
    from them. The bound is per type: a PodSpec has no `labels` map, so only its strings
    and lists bound it, not the (much smaller) label count. A sub-message is never larger than
    the message holding it, so a message no larger than its field's bound skips the field
    without measuring it. Every request is checked (a CreateBatch of 16 pods is ~200 fields):
    building each field's path and asking the descriptor for its options on every visit cost
    more than the checks; paths are built only on the way into a message and when a limit is
    broken."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._types: dict[Descriptor, int] = {}
        # Per type of a message checked whole: (its harmless size, is it an object).
        self.top: dict[Descriptor, tuple[int, bool]] = {}
        # Per field: (shape, is a message, is a string, the harmless size of its message type).
        self.fields: dict[FieldDescriptor, tuple[int, bool, bool, int]] = {}

    def harmless(self, desc: Descriptor) -> int:
        bound = self._types.get(desc)
        if bound is None:
            kinds = _BREAKABLE.get(desc)
            if kinds is None:
                kinds = _BREAKABLE[desc] = _breakable(desc)
            lim = self.limits
            bounds = {_STRING: lim.max_string_bytes, _ITEMS: lim.max_items, _LABELS: 5 * lim.max_labels + 1,
                      _ANNOTATIONS: lim.max_annotations_bytes, _ALWAYS: -1}
            bound = self._types[desc] = min((bounds[k] for k in kinds), default=sys.maxsize)
        return bound

    def top_facts(self, desc: Descriptor, msg: Message) -> tuple[int, bool]:
        facts = self.top[desc] = (self.harmless(desc), hasattr(msg, "metadata"))
        return facts

    def field(self, fd: FieldDescriptor) -> tuple[int, bool, bool, int]:
        facts = self.fields.get(fd)
        if facts is None:
            mt = fd.message_type
            if mt is not None and mt.GetOptions().map_entry:
                shape = _MAP
            else:
                shape = _REPEATED if fd.is_repeated else _SINGLE
            is_msg = fd.type == FieldDescriptor.TYPE_MESSAGE
            bound = self.harmless(mt) if is_msg and mt is not None and shape != _MAP else sys.maxsize
            facts = self.fields[fd] = (shape, is_msg, fd.type == FieldDescriptor.TYPE_STRING, bound)
        return facts


# Plans by the identity of their Limits (hashing a Limits per request would cost more than the
# lookup saves); each plan holds its Limits, so no other object can take that id meanwhile.
_PLANS: dict[int, _Plan] = {}
_last: _Plan | None = None  # the plan used last: a controller has one Limits


def _plan(limits: Limits) -> _Plan:
    global _last
    plan = _last
    if plan is not None and plan.limits is limits:
        return plan
    plan = _PLANS.get(id(limits))
    if plan is None or plan.limits is not limits:
        if len(_PLANS) >= 64:  # tests make many Limits
            _PLANS.clear()
        plan = _PLANS[id(limits)] = _Plan(limits)
    _last = plan
    return plan


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


_MAP, _REPEATED, _SINGLE = 0, 1, 2


def _too_long(path: str, value: str, limits: Limits) -> Invalid:
    return Invalid(path, f"must be no more than {_size(limits.max_string_bytes)} (got {_size(len(value))})")


def _walk(msg: Message, path: str, plan: _Plan, size: int) -> None:
    """Check the fields of `msg`, serialized in `size` bytes (or fewer: sys.maxsize when unknown)."""
    limits = plan.limits
    longest = limits.max_string_bytes
    fields = plan.fields
    for fd, value in msg.ListFields():
        shape, is_msg, is_str, harmless = fields.get(fd) or plan.field(fd)
        if shape == _SINGLE:
            if is_msg:
                if size > harmless:
                    sub = value.ByteSize()
                    if sub > harmless:
                        _walk(value, _join(path, fd.json_name), plan, sub)
            elif is_str and len(value) > longest:
                raise _too_long(_join(path, fd.json_name), value, limits)
        elif shape == _REPEATED:
            if len(value) > limits.max_items:
                raise Invalid(_join(path, fd.json_name),
                              f"at most {limits.max_items} items (got {len(value)})")
            if is_msg:
                if size > harmless:
                    p = _join(path, fd.json_name)
                    for i, item in enumerate(value):
                        sub = item.ByteSize()
                        if sub > harmless:
                            _walk(item, f"{p}[{i}]", plan, sub)
            elif is_str:
                for i, item in enumerate(value):
                    if len(item) > longest:
                        raise _too_long(f"{_join(path, fd.json_name)}[{i}]", item, limits)
        else:
            _check_map(fd, value, _join(path, fd.json_name), plan, size)


def _check_value(fd: FieldDescriptor, value: Any, path: str, plan: _Plan) -> None:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        _walk(value, path, plan, sys.maxsize)
    elif fd.type == FieldDescriptor.TYPE_STRING and len(value) > plan.limits.max_string_bytes:
        raise _too_long(path, value, plan.limits)


def _check_map(fd: FieldDescriptor, value: Any, path: str, plan: _Plan, size: int) -> None:
    """Check a map field of a message serialized in `size` bytes (or fewer)."""
    limits = plan.limits
    n = len(value)
    if fd.name == "labels" and n > limits.max_labels:
        raise Invalid(path, f"at most {limits.max_labels} labels (got {n})")
    if n > limits.max_items:
        raise Invalid(path, f"at most {limits.max_items} entries (got {n})")
    if fd.name == "annotations":
        if size <= limits.max_annotations_bytes:
            return  # its keys and values are among the bytes of the message holding them
        total = sum(len(k) + len(value[k]) for k in value)
        if total > limits.max_annotations_bytes:
            most = _size(limits.max_annotations_bytes)
            raise Invalid(path, f"annotations total {_size(total)}; the maximum is {most}")
        return
    entry: Any = fd.message_type
    value_fd = entry.fields_by_name["value"]
    is_msg = value_fd.type == FieldDescriptor.TYPE_MESSAGE
    if size <= limits.max_string_bytes and not is_msg:
        return  # no key or value is longer than the message holding them
    longest = limits.max_string_bytes
    is_str = value_fd.type == FieldDescriptor.TYPE_STRING
    for k in value:  # a path per entry only where one is needed: a message value, an error
        if isinstance(k, str) and len(k) > longest:
            raise Invalid(path, f"key of {_size(len(k))} is too long")
        if is_msg or (is_str and len(value[k]) > longest):
            _check_value(value_fd, value[k], f"{path}[{k}]" if len(str(k)) <= 80 else f"{path}[...]", plan)


# --- rate limits ----------------------------------------------------------------------------------


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def available(self, now: float) -> float:
        """How many tokens there would be at `now`, taking none."""
        return min(self.burst, self._tokens + (now - self._at) * self.rate)

    def take(self, now: float) -> float:
        """Take one token: 0.0 if granted, else the seconds until one is available."""
        self._tokens = self.available(now)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate if self.rate > 0 else math.inf


class RateLimiter:
    """One bucket per client key; raises `ResourceExhausted` when one is empty."""

    def __init__(self, limits: Limits, clock: Clock) -> None:
        self._limits = limits
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    @staticmethod
    def for_failures(limits: Limits, clock: Clock) -> RateLimiter:
        """The limiter of failed authentications: the user budget is the failure budget."""
        return RateLimiter(
            replace(limits, user_rate=limits.failed_auth_rate, user_burst=limits.failed_auth_burst), clock
        )

    def exhausted(self, key: str) -> bool:
        """Would `check(key)` refuse now? Looks without taking a token."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return False
        return bucket.available(self._clock.monotonic()) < 1.0

    def check(self, key: str, *, system: bool = False) -> None:
        now = self._clock.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            lim = self._limits
            rate, burst = (lim.system_rate, lim.system_burst) if system else (lim.user_rate, lim.user_burst)
            bucket = TokenBucket(rate, burst, now)
            self._buckets[key] = bucket
            while len(self._buckets) > lim.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        wait = bucket.take(now)
        if wait > 0:
            raise ResourceExhausted(
                f"rate limit for {key}: {bucket.rate:g} requests/s (burst {bucket.burst}); "
                f"retry in {wait:.2f}s"
            )


def source_address(peer: str) -> str:
    """The caller's address without its port, from gRPC's `context.peer()`.

    `ipv4:10.0.0.7:51234` -> `10.0.0.7`, `ipv6:[::1]:4000` -> `::1`; a unix socket
    peer is `unix` whatever its path (every VM of a host shares that socket). The
    port must go: a fresh connection has a fresh port, and a limit per port is none.
    """
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0] if rest.startswith("[") else rest
        return host.strip("[]") or rest
    return kind or "unknown"


class StreamCounter:
    """Caps concurrent streams per client key."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open: dict[str, int] = {}

    @contextmanager
    def opened(self, key: str) -> Iterator[None]:
        n = self._open.get(key, 0)
        if n >= self._limit:
            raise ResourceExhausted(f"{key} already has {n} open streams (the maximum); close some first")
        self._open[key] = n + 1
        try:
            yield
        finally:
            left = self._open[key] - 1
            if left:
                self._open[key] = left
            else:
                del self._open[key]
