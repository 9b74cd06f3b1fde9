"""One pod cache per controller process, many handlers (client-go's SharedIndexInformer).

    pods watch hub ──(decoded objects, controller.reconcile.hub_objects)──► SharedPodInformer
                                                                               │ cache + indexes:
                                                                               │  by namespace,
                                                                               │  by controller owner
                                                                               │  (kind -> uid -> pods)
              ┌─────────────────┬──────────────────┬────────────────┬──────────┴──────┐
          PodHandle          PodHandle          PodHandle        PodHandle        PodHandle
        (ReplicaSets)       (Deployments)        (Jobs)        (DaemonSets)      (Endpoints)

Why: every in-process loop that watches pods had its own `Informer`: each parsed every pod
event again from the hub's bytes and each held every pod (a decoded pod is ~2.5 KB: ~375 MB
per informer at 150,000 pods). Here the events are decoded once (by the hub), the cache and
the indexes the loops read are kept once, and each loop gets a `PodHandle`: its handler, called
for every event after the cache and indexes show it (as client-go notifies after the indexer),
and a `cowpod.reconcile.Source` for its driver (`synced`, `wait_synced`, `run`).

Rules for readers: the cached pods are shared by every loop, so they are read only (a plan that
needs a changed pod copies it); the index views are live dicts, read only too.

A handle registered once the shared informer has delivered events gets the cache replayed to
its handler as ADDED (client-go's AddEventHandler does the same) before any later event, and
only then says it is synced; the events that arrive during the replay wait and follow it in
order. A loop given a plain watch function instead (tests, a loop out of process) gets a
private `SharedPodInformer` that its handle runs (`pod_handle`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from controller.replicaset_plan import controller_ref
from cowpod.clock import Clock, RealClock
from cowpod.informer import Informer
from cowpod.v1 import meta_pb2, pod_pb2

log = logging.getLogger(__name__)

Key = tuple[str, str]
PodHandler = Callable[[int, pod_pb2.Pod], Awaitable[None]]
_DELETED = meta_pb2.DELETED
# kind -> owner uid -> (namespace, name) -> pod
_Owned = dict[str, dict[str, dict[Key, pod_pb2.Pod]]]


class SharedPodInformer:
    """The pods of the cluster, listed and watched once; see the module docstring.
    `run()` is called by one owner (the controller's TaskGroup, or a private handle)."""

    def __init__(self, watch: Callable[..., Any], clock: Clock | None = None, *,
                 name: str = "shared-pod-informer") -> None:
        self.name = name
        self._informer: Informer[pod_pb2.Pod] = Informer(
            watch, handler=self.deliver, clock=clock or RealClock(), name=name)
        self._handles: list[PodHandle] = []
        self._by_ns: dict[str, dict[str, pod_pb2.Pod]] = {}
        self._owned: _Owned = {}
        # (kind, uid) of the controller owner each indexed pod was filed under, so an event
        # replacing or deleting it unfiles it without walking the old pod's owner references
        # again (cached pods are read only: the answer cannot have changed).
        self._owner_of: dict[Key, tuple[str, str]] = {}
        self._delivered = False

    # -- what readers use

    @property
    def cache(self) -> Mapping[Key, pod_pb2.Pod]:
        """Every pod by (namespace, name)."""
        return self._informer.cache

    @property
    def synced(self) -> bool:
        return self._informer.synced

    async def wait_synced(self) -> None:
        await self._informer.wait_synced()

    def in_namespace(self, namespace: str) -> Iterable[pod_pb2.Pod]:
        """The pods of one namespace (a live view: iterate it before awaiting)."""
        return self._by_ns.get(namespace, {}).values()

    def owned(self, kind: str) -> Mapping[str, Mapping[Key, pod_pb2.Pod]]:
        """Pods by the uid of their controller owner of `kind` (a live view, read only)."""
        return self._owned.setdefault(kind, {})

    def handle(self, handler: PodHandler | None = None, *, name: str,
               runs_informer: bool = False) -> PodHandle:
        """Register a loop's handler; see `PodHandle`. `runs_informer`: the handle's `run` runs
        this informer too (a private one: nobody else does)."""
        h = PodHandle(self, handler, name=name, replay=self._delivered, runs_informer=runs_informer)
        self._handles.append(h)
        return h

    async def run(self) -> None:
        await self._informer.run()

    # -- the stream's side

    async def deliver(self, type_: int, pod: pod_pb2.Pod) -> None:
        """One event (the informer's handler; tests call it to feed pods): update the cache and
        the indexes, then every handle in registration order."""
        self._delivered = True
        meta = pod.metadata
        ns, name = meta.namespace, meta.name
        key = (ns, name)
        in_ns = self._by_ns.get(ns)
        if self._owner_of and in_ns is not None and name in in_ns:
            self._unindex_owner(key)
        if type_ == _DELETED:
            self._informer.cache.pop(key, None)
            if in_ns is not None and in_ns.pop(name, None) is not None and not in_ns:
                del self._by_ns[ns]
        else:
            self._informer.cache[key] = pod
            if in_ns is None:
                in_ns = self._by_ns[ns] = {}
            in_ns[name] = pod
            ref = controller_ref(pod)
            if ref is not None and ref.uid:
                self._owned.setdefault(ref.kind, {}).setdefault(ref.uid, {})[key] = pod
                self._owner_of[key] = (ref.kind, ref.uid)
        for h in self._handles:
            # `await h.deliver(type_, pod)`, one coroutine fewer per handle and event.
            if h._held is not None:
                h._held.append((type_, pod))
            elif h._handler is not None:
                await h._handler(type_, pod)

    def _unindex_owner(self, key: Key) -> None:
        """Unfile the pod cached under `key` from its controller owner's index, if it has one."""
        owner = self._owner_of.pop(key, None)
        if owner is None:
            return
        kind, uid = owner
        by_uid = self._owned.get(kind)
        if by_uid is None:
            return
        owned = by_uid.get(uid)
        if owned is None:
            return
        owned.pop(key, None)
        if not owned:
            del by_uid[uid]


class PodHandle:
    """One loop's registration on a `SharedPodInformer`: its handler, and a
    `cowpod.reconcile.Source` for its driver. The loop reads the pods through `shared`."""

    def __init__(self, shared: SharedPodInformer, handler: PodHandler | None, *, name: str, replay: bool,
                 runs_informer: bool) -> None:
        self.shared = shared
        self.name = name
        self._handler = handler
        self._runs_informer = runs_informer
        # Events that arrive while the cache is being replayed to this handler wait here.
        self._held: list[tuple[int, pod_pb2.Pod]] | None = [] if replay else None
        self.synced = False
        self._synced = asyncio.Event()

    @property
    def cache(self) -> Mapping[Key, pod_pb2.Pod]:
        return self.shared.cache

    async def deliver(self, type_: int, pod: pod_pb2.Pod) -> None:
        if self._held is not None:
            self._held.append((type_, pod))
        elif self._handler is not None:
            await self._handler(type_, pod)

    async def wait_synced(self) -> None:
        await self._synced.wait()

    async def run(self) -> None:
        """Until cancelled: once the shared cache has synced (and been replayed to this handler
        if it came late), say synced. Runs the shared informer too when it is private."""
        if self._runs_informer:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.shared.run(), name=self.shared.name)
                await self._follow()
        else:
            await self._follow()

    async def _follow(self) -> None:
        await self.shared.wait_synced()
        if self._held is not None:
            # The cache as it is now; what arrived before this moment is in it already.
            snapshot = list(self.shared.cache.values())
            self._held = []
            if self._handler is not None:
                for pod in snapshot:
                    await self._handler(meta_pb2.ADDED, pod)
                while self._held:
                    type_, pod = self._held.pop(0)
                    await self._handler(type_, pod)
            self._held = None
        self.synced = True
        self._synced.set()
        await asyncio.Future()  # until cancelled


def pod_handle(pods: SharedPodInformer | Callable[..., Any], handler: PodHandler | None, *, name: str,
               clock: Clock | None = None) -> PodHandle:
    """A loop's handle on the controller's shared informer, or on a private one over a plain
    watch function (tests, a loop that runs out of process)."""
    if isinstance(pods, SharedPodInformer):
        return pods.handle(handler, name=name)
    return SharedPodInformer(pods, clock, name=name).handle(handler, name=name, runs_informer=True)
