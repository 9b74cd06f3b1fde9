"""List-then-watch with resume: how every component keeps a local view.

An `Informer` calls Watch with `send_initial`, so the server sends the current
objects, a BOOKMARK, then changes with no gap. It remembers the last revision
it saw; when the stream breaks (controller restart, etcd outage) it resumes
from there with back-off, and when the server answers OUT_OF_RANGE (the
revision was compacted) it relists from scratch and reports the objects that
vanished meanwhile as deletions. Handlers see a consistent stream of
(type, object) whatever happened underneath.

The cache is keyed by (namespace, name). One informer per kind per process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

import grpc

from cowpod.backoff import Backoff, Retry
from cowpod.clock import Clock, RealClock
from cowpod.errors import CowpodError
from cowpod.v1 import meta_pb2

log = logging.getLogger(__name__)


class _Meta(Protocol):
    name: str
    namespace: str
    resource_version: int


class _Obj(Protocol):
    @property
    def metadata(self) -> Any: ...


ObjT = TypeVar("ObjT", bound=_Obj)

Key = tuple[str, str]
# Resuming a broken watch: from 0.1 s, doubling to 5 s, each pause between half and all of that.
RESUME_BACKOFF = Backoff(initial=0.1, cap=5.0, jitter=0.5)
Handler = Callable[[int, ObjT], Awaitable[None]]
"""Called with (meta_pb2.ADDED|MODIFIED|DELETED, object) for every change."""
_ADDED, _MODIFIED = meta_pb2.ADDED, meta_pb2.MODIFIED
_DELETED, _BOOKMARK = meta_pb2.DELETED, meta_pb2.BOOKMARK


def key_of(obj: _Obj) -> Key:
    return (obj.metadata.namespace, obj.metadata.name)


T_co = TypeVar("T_co", covariant=True)


class ObjectCache(Protocol[T_co]):
    """What in-process readers of an informer use (this module's `Informer`,
    `controller.pod_informer`): objects by (namespace, name), decoded with
    `metadata.resource_version` = their mod revision, shared: read only."""

    @property
    def synced(self) -> bool: ...

    @property
    def cache(self) -> Mapping[Key, T_co]: ...


class Informer(Generic[ObjT]):
    def __init__(
        self,
        watch: Callable[..., Any],
        *,
        list_options: meta_pb2.ListOptions | None = None,
        handler: Handler[ObjT] | None = None,
        clock: Clock | None = None,
        name: str = "informer",
        on_synced: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._watch = watch
        self._opts = list_options or meta_pb2.ListOptions()
        self._handler = handler
        self._clock = clock or RealClock()
        self._name = name
        self._on_synced = on_synced
        self.cache: dict[Key, ObjT] = {}
        self.resource_version = 0
        self.synced = False
        self._synced_event = asyncio.Event()

    async def _emit(self, type_: int, obj: ObjT) -> None:
        if self._handler is not None:
            await self._handler(type_, obj)

    async def wait_synced(self) -> None:
        """Return once the first full list has been delivered."""
        await self._synced_event.wait()

    async def run(self) -> None:
        """Run forever; cancel to stop."""
        retry = Retry(RESUME_BACKOFF, self._clock)
        while True:
            try:
                await self._stream(retry)
            except (grpc.aio.AioRpcError, CowpodError) as err:
                # A gRPC stream raises AioRpcError; an in-process one (the controller's own
                # watch hubs, controller/reconcile.py) raises the domain error itself.
                code = err.code() if isinstance(err, grpc.aio.AioRpcError) else err.code
                if code == grpc.StatusCode.OUT_OF_RANGE:
                    log.info("%s: revision %d compacted, relisting", self._name, self.resource_version)
                    self.resource_version = 0
                    continue
                details = err.details() if isinstance(err, grpc.aio.AioRpcError) else str(err)
                log.warning("%s: watch broke (%s: %s); retrying", self._name, code.name, details)
            else:
                log.info("%s: watch ended by server; resuming from %d", self._name, self.resource_version)
            await retry.sleep()

    async def _stream(self, retry: Retry) -> None:
        """One watch call until it ends or breaks; `retry` is reset after every event handled
        (the stream is making progress). A plain loop, not a generator yielding per event:
        every pod event of the controller passes here, and an async generator's round trip
        per event was most of this loop's own cost."""
        relist = self.resource_version == 0
        opts = meta_pb2.WatchOptions(
            list=self._opts, resource_version=self.resource_version, send_initial=relist, allow_batches=True
        )
        seen: set[Key] = set()
        in_initial = relist
        cache = self.cache
        handler = self._handler
        call = self._watch(opts)
        async for msg in call:
            # A server may pack the events that were ready at once into one message.
            for ev in msg.batch if len(msg.batch) else (msg,):
                type_ = ev.type
                if type_ == _BOOKMARK:
                    self.resource_version = max(self.resource_version, ev.resource_version)
                    if in_initial:
                        in_initial = False
                        # Objects we held that the fresh list did not mention were
                        # deleted while we were not watching.
                        for k in [k for k in cache if k not in seen]:
                            gone = cache.pop(k)
                            await self._emit(_DELETED, gone)
                        if not self.synced:
                            self.synced = True
                            self._synced_event.set()
                            if self._on_synced is not None:
                                await self._on_synced()
                    retry.reset()
                    continue
                obj: ObjT = ev.object
                meta = obj.metadata
                k = (meta.namespace, meta.name)  # key_of(obj)
                if not in_initial:
                    # During the initial list, objects arrive with their own (older)
                    # revisions; only the closing BOOKMARK says the list is complete.
                    # Resuming from one of them after a break would skip the rest.
                    rv = ev.resource_version
                    if rv > self.resource_version:
                        self.resource_version = rv
                if type_ == _DELETED:
                    if cache.pop(k, None) is not None or not in_initial:
                        if handler is not None:
                            await handler(_DELETED, obj)
                else:
                    if in_initial:
                        seen.add(k)
                    type_ = _MODIFIED if k in cache else _ADDED
                    cache[k] = obj
                    if handler is not None:
                        await handler(type_, obj)
                retry.reset()
