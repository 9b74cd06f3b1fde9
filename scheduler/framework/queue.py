"""The scheduling queue: active heap, back-off heap, unschedulable set.

    add/update ──► active (heap by the queue-sort plugin: priority, then age)
                      │ pop
                      ▼
                  in flight ──► scheduled: gone from the queue (the cache holds it)
                      │
          rejected    │    error (bind failed, RPC error)
      ┌───────────────┴─────────────┐
      ▼                             ▼
  unschedulable ──relevant event──► back-off heap ──expiry──► active
      └──────── waited max_unschedulable_s ─────┘

A pod that fits nowhere is parked in the unschedulable set with the names of
the plugins that rejected it. A cluster event moves it only if one of those
plugins registered for it (a node added, a pod deleted...), so thousands of
pending pods cost nothing while nothing relevant happens. Back-off doubles
from `initial_backoff` to `max_backoff` with each attempt, so a pod that is
moved often is not retried in a tight loop. A parked pod is also retried after
`max_unschedulable_s` in case an event was missed. Nothing polls: `pop` sleeps
until a pod arrives or the earliest back-off expires.

When nothing is active, a pod that an event moved into back-off is popped at
once instead of idling out its back-off (Kubernetes' SchedulerPopFromBackoffQ,
KEP-5142, on by default since 1.33): back-off exists to stop unschedulable pods
from starving others, and with an empty active heap there is no one to starve.
That is what lets a pod land on a freshly cloned node the moment it is Ready.
Pods backing off after an *error* (a failed bind) still wait the whole back-off.

Time comes from an injected `Clock`; tests drive it with `FakeClock`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cowpod.backoff import Backoff
from cowpod.clock import Clock
from scheduler.framework.events import ClusterEvent, Resource
from scheduler.framework.types import PodInfo, PodUID

if TYPE_CHECKING:
    from scheduler.framework.interfaces import QueueSortPlugin

WILDCARD_REJECTOR = "*"
"""Rejector recorded when no node exists at all: any node event may help."""


@dataclass(slots=True)
class QueuedPod:
    pod: PodInfo
    # When the pod entered the queue (monotonic), for latency metrics.
    enqueued: float
    attempts: int = 0
    backoff_until: float = 0.0
    unschedulable_since: float = 0.0
    rejectors: frozenset[str] = field(default_factory=frozenset)
    # Where it is now: active | backoff | unschedulable | inflight
    where: str = ""
    seq: int = 0


class SchedulingQueue:
    def __init__(
        self,
        sort: QueueSortPlugin,
        clock: Clock,
        *,
        events_by_plugin: Mapping[str, Sequence[ClusterEvent]] | None = None,
        initial_backoff: float = 1.0,
        max_backoff: float = 10.0,
        max_unschedulable_s: float = 60.0,
        pop_from_backoff: bool = True,
    ) -> None:
        self._sort = sort
        self._clock = clock
        self._events = dict(events_by_plugin or {})
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_unschedulable_s = max_unschedulable_s
        self.pop_from_backoff = pop_from_backoff
        self._pods: dict[PodUID, QueuedPod] = {}
        # Heaps hold (key, seq, uid); an entry whose seq no longer matches the
        # pod's is stale (the pod moved or was updated) and is skipped.
        self._active: list[tuple[tuple[float, ...], int, PodUID]] = []
        self._backoff: list[tuple[float, int, PodUID]] = []
        # Pods backing off after an error: never popped before their time.
        self._error_backoff: list[tuple[float, int, PodUID]] = []
        self._unschedulable: dict[PodUID, QueuedPod] = {}
        self._counts = {"active": 0, "backoff": 0, "unschedulable": 0, "inflight": 0}
        self._seq = itertools.count(1)
        self._wake = asyncio.Event()

    # ---- introspection -----------------------------------------------------------

    def depth(self) -> dict[str, int]:
        return dict(self._counts)

    def __len__(self) -> int:
        return len(self._pods)

    def __contains__(self, uid: object) -> bool:
        return uid in self._pods

    def get(self, uid: PodUID) -> QueuedPod | None:
        return self._pods.get(uid)

    def backoff_duration(self, attempts: int) -> float:
        return Backoff(initial=self.initial_backoff, cap=self.max_backoff).delay(attempts)

    # ---- moving pods -------------------------------------------------------------

    def _set_where(self, qp: QueuedPod, where: str) -> None:
        if qp.where:
            self._counts[qp.where] -= 1
        qp.where = where
        if where:
            self._counts[where] += 1

    def _to_active(self, qp: QueuedPod) -> None:
        self._unschedulable.pop(qp.pod.uid, None)
        self._set_where(qp, "active")
        qp.seq = next(self._seq)
        heapq.heappush(self._active, (self._sort.sort_key(qp), qp.seq, qp.pod.uid))
        self._wake.set()

    def _to_backoff(self, qp: QueuedPod, *, error: bool = False) -> None:
        self._unschedulable.pop(qp.pod.uid, None)
        self._set_where(qp, "backoff")
        qp.seq = next(self._seq)
        heap = self._error_backoff if error else self._backoff
        heapq.heappush(heap, (qp.backoff_until, qp.seq, qp.pod.uid))
        self._wake.set()

    def _to_active_or_backoff(self, qp: QueuedPod) -> None:
        if self._clock.monotonic() < qp.backoff_until:
            self._to_backoff(qp)
        else:
            self._to_active(qp)

    def add(self, pod: PodInfo) -> None:
        """A pending pod appeared or changed."""
        qp = self._pods.get(pod.uid)
        if qp is None:
            qp = QueuedPod(pod=pod, enqueued=self._clock.monotonic())
            self._pods[pod.uid] = qp
            self._to_active(qp)
            return
        relevant = qp.pod.scheduling_signature() != pod.scheduling_signature()
        qp.pod = pod
        if qp.where == "active" and relevant:
            self._to_active(qp)  # re-sort: priority may have changed
        elif qp.where == "unschedulable" and relevant:
            self._to_active_or_backoff(qp)

    def delete(self, uid: PodUID) -> None:
        qp = self._pods.pop(uid, None)
        if qp is not None:
            self._unschedulable.pop(uid, None)
            self._set_where(qp, "")

    def done(self, uid: PodUID) -> None:
        """The pod was placed (assumed in the cache): it leaves the queue."""
        self.delete(uid)

    def unschedulable(self, qp: QueuedPod, rejectors: Iterable[str]) -> None:
        """The pod fits nowhere now; park it until a relevant event."""
        if self._pods.get(qp.pod.uid) is not qp:
            return  # deleted while in flight
        now = self._clock.monotonic()
        qp.rejectors = frozenset(rejectors)
        qp.backoff_until = now + self.backoff_duration(qp.attempts)
        qp.unschedulable_since = now
        self._set_where(qp, "unschedulable")
        self._unschedulable[qp.pod.uid] = qp

    def error(self, qp: QueuedPod) -> None:
        """Something failed that no cluster event announces (a bind RPC): retry after back-off."""
        if self._pods.get(qp.pod.uid) is not qp:
            if qp.pod.uid in self._pods:
                return
            # A failed bind hands back a pod that had left the queue: re-admit it.
            self._pods[qp.pod.uid] = qp
            qp.where = ""
        qp.backoff_until = self._clock.monotonic() + self.backoff_duration(max(qp.attempts, 1))
        self._to_backoff(qp, error=True)

    def on_event(self, event: ClusterEvent) -> int:
        """Move parked pods that `event` may help. Returns how many moved."""
        if not self._unschedulable:
            return 0
        moved = 0
        for qp in list(self._unschedulable.values()):
            if self._helps(qp, event):
                self._to_active_or_backoff(qp)
                moved += 1
        return moved

    def _helps(self, qp: QueuedPod, event: ClusterEvent) -> bool:
        if WILDCARD_REJECTOR in qp.rejectors:
            return event.resource is Resource.NODE
        for name in qp.rejectors:
            for reg in self._events.get(name, ()):
                if reg.matches(event):
                    return True
        return False

    # ---- timers ------------------------------------------------------------------

    def flush(self) -> None:
        """Move pods whose back-off expired to active, and pods parked too long to back-off."""
        now = self._clock.monotonic()
        for heap in (self._backoff, self._error_backoff):
            while heap and heap[0][0] <= now:
                qp = self._live_backoff(heapq.heappop(heap))
                if qp is not None:
                    self._to_active(qp)
        if self._unschedulable:
            for qp in list(self._unschedulable.values()):
                if now - qp.unschedulable_since >= self.max_unschedulable_s:
                    self._to_active_or_backoff(qp)

    def _live_backoff(self, entry: tuple[float, int, PodUID]) -> QueuedPod | None:
        _, seq, uid = entry
        qp = self._pods.get(uid)
        if qp is not None and qp.seq == seq and qp.where == "backoff":
            return qp
        return None

    def _next_deadline(self) -> float | None:
        deadlines: list[float] = []
        for heap in (self._backoff, self._error_backoff):
            while heap:
                if self._live_backoff(heap[0]) is not None:
                    deadlines.append(heap[0][0])
                    break
                heapq.heappop(heap)
        if self._unschedulable:
            deadlines.append(
                min(q.unschedulable_since for q in self._unschedulable.values()) + self.max_unschedulable_s
            )
        return min(deadlines) if deadlines else None

    # ---- popping -----------------------------------------------------------------

    def pop_nowait(self) -> QueuedPod | None:
        self.flush()
        while self._active:
            _, seq, uid = heapq.heappop(self._active)
            qp = self._pods.get(uid)
            if qp is None or qp.seq != seq or qp.where != "active":
                continue
            return self._take(qp)
        while self.pop_from_backoff and self._backoff:
            # Active is empty: the back-off has no one to protect (see the module doc).
            qp = self._live_backoff(heapq.heappop(self._backoff))
            if qp is not None:
                return self._take(qp)
        return None

    def _take(self, qp: QueuedPod) -> QueuedPod:
        qp.attempts += 1
        self._set_where(qp, "inflight")
        return qp

    async def pop_many(self, max_n: int) -> list[QueuedPod]:
        """Wait for at least one pod; return up to `max_n` in queue order."""
        while True:
            out: list[QueuedPod] = []
            while len(out) < max_n:
                qp = self.pop_nowait()
                if qp is None:
                    break
                out.append(qp)
            if out:
                return out
            self._wake.clear()
            deadline = self._next_deadline()
            if deadline is None:
                await self._wake.wait()
            else:
                await self._sleep_or_wake(max(0.0, deadline - self._clock.monotonic()))

    async def _sleep_or_wake(self, seconds: float) -> None:
        # A scoped race, not a background task: both are awaited or cancelled here.
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sleeper, waker):
                if not t.done():
                    t.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)
