"""Events: what happened to an object. Duplicates fold; everything expires.

An event with the same involved object, reason and message as an existing one
is folded into it (count += 1, last_timestamp = now), as Kubernetes does, so a
crash-looping pod makes one event with a growing count rather than thousands.
The folded event's name is derived from those fields, which makes folding one
conditional write instead of a search.

Expiry: every event is written with an etcd lease so it vanishes about an hour
after it last happened. Leases are shared per minute of expiry (one lease grant
per minute, not per event) and re-attached on every fold.
"""

from __future__ import annotations

import hashlib

from controller import validation
from controller.kinds import DEFAULT_NAMESPACE, EVENTS
from controller.resource import Resource, set_time
from controller.store import Store
from cowpod.clock import Clock
from cowpod.errors import AlreadyExists, Conflict, NotFound
from cowpod.v1 import event_pb2

EVENT_TTL_SECONDS = 3600
_BUCKET_SECONDS = 60


def fold_name(ev: event_pb2.Event) -> str:
    o = ev.involved_object
    digest = hashlib.sha256(
        "\x00".join((o.kind, o.namespace, o.name, o.uid, ev.reason, ev.message)).encode()
    ).hexdigest()[:16]
    base = o.name.lower()[:200] or "event"
    return f"{base}.{digest}"


class Events:
    def __init__(self, res: Resource[event_pb2.Event], store: Store, clock: Clock,
                 *, ttl_seconds: int = EVENT_TTL_SECONDS) -> None:
        self.res = res
        self.store = store
        self.clock = clock
        self.ttl = ttl_seconds
        self._leases: dict[int, int] = {}  # expiry bucket -> etcd lease id

    async def _lease(self) -> int:
        bucket = int(self.clock.monotonic() // _BUCKET_SECONDS)
        lid = self._leases.get(bucket)
        if lid is None:
            # TTL counted from the bucket's end so no event lives less than `ttl`.
            lid = await self.store.grant_lease(self.ttl + _BUCKET_SECONDS)
            self._leases = {bucket: lid}
        return lid

    async def create(self, ev: event_pb2.Event) -> event_pb2.Event:
        validation.validate_event(ev)
        now = self.clock.now()
        ns = ev.metadata.namespace or ev.involved_object.namespace or DEFAULT_NAMESPACE
        ev.metadata.namespace = ns
        if not ev.metadata.name:
            ev.metadata.name = fold_name(ev)
        if not ev.type:
            ev.type = "Normal"
        key = EVENTS.key(ns, ev.metadata.name)
        lease = await self._lease()
        for _ in range(16):
            try:
                cur = await self.store.get(key, event_pb2.Event)
            except NotFound:
                new = event_pb2.Event()
                new.CopyFrom(ev)
                self.res.prepare_new(new)
                if not new.HasField("first_timestamp"):
                    set_time(new.first_timestamp, now)
                if not new.HasField("last_timestamp"):
                    set_time(new.last_timestamp, now)
                new.count = new.count or 1
                try:
                    return await self.store.create(key, new, lease=lease)
                except AlreadyExists:
                    continue
            cur.count += max(ev.count, 1)
            if ev.HasField("last_timestamp"):
                cur.last_timestamp.CopyFrom(ev.last_timestamp)
            else:
                set_time(cur.last_timestamp, now)
            cur.type = ev.type
            try:
                return await self.store.update(key, cur, expected_revision=cur.metadata.resource_version,
                                               lease=lease)
            except (Conflict, NotFound):
                continue
        raise Conflict(f'events "{ns}/{ev.metadata.name}" kept changing; retry')

    async def list(self, req: event_pb2.ListEventsRequest) -> tuple[list[event_pb2.Event], int]:
        want = req.involved_object

        def about(ev: event_pb2.Event) -> bool:
            o = ev.involved_object
            return ((not want.kind or o.kind == want.kind)
                    and (not want.namespace or o.namespace == want.namespace)
                    and (not want.name or o.name == want.name)
                    and (not want.uid or o.uid == want.uid))

        items, rev = await self.res.list(req.list, about)
        items.sort(key=lambda e: (e.last_timestamp.seconds, e.last_timestamp.nanos))
        return items, rev
