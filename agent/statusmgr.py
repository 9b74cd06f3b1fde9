"""Pod status writes, coalesced and paced.

Workers call `set` as often as they like; only the newest status per pod is
kept, and only one that differs from what the controller already has is
sent. One flusher task sends dirty pods with at most `concurrency` calls in
flight and at most `qps` per second, so 100 pods changing at once become a
steady trickle of writes, not a flood. `flush` sends one pod's status right
now (before finalizing a deleted pod, so its last state is recorded).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from agent.controlplane import ControlPlane
from agent.metrics import AgentMetrics
from agent.status import same_status
from agent.waiting import wait_event
from cowpod.backoff import Backoff
from cowpod.clock import Clock
from cowpod.v1 import meta_pb2, pod_pb2

log = logging.getLogger(__name__)

# A status write that failed is retried after 1 s, doubling up to 30 s.
STATUS_RETRY = Backoff(initial=1.0, cap=30.0)


@dataclass
class _Entry:
    namespace: str
    name: str
    uid: str
    status: pod_pb2.PodStatus
    sent: pod_pb2.PodStatus | None = None
    dirty: bool = False
    retry_at: float = 0.0
    failures: int = 0


class StatusManager:
    def __init__(
        self, cp: ControlPlane, clock: Clock, *, concurrency: int = 4, qps: float = 50.0,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._cp = cp
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._wake = asyncio.Event()
        self._sem = asyncio.Semaphore(concurrency)
        self._interval = 1.0 / qps if qps > 0 else 0.0
        self.writes = 0

    def seed(self, pod: pod_pb2.Pod) -> None:
        """What the controller already stores, so an unchanged status after an
        agent restart is not written again."""
        e = self._entries.get(pod.metadata.uid)
        if e is None:
            self._entries[pod.metadata.uid] = _Entry(
                pod.metadata.namespace, pod.metadata.name, pod.metadata.uid, pod.status, sent=pod.status
            )

    def get(self, uid: str) -> pod_pb2.PodStatus | None:
        e = self._entries.get(uid)
        return e.status if e is not None else None

    def set(self, namespace: str, name: str, uid: str, status: pod_pb2.PodStatus) -> None:
        e = self._entries.get(uid)
        if e is None:
            e = self._entries[uid] = _Entry(namespace, name, uid, status)
        e.status = status
        if e.sent is not None and same_status(e.sent, status):
            e.dirty = False
            return
        if not e.dirty:
            e.dirty = True
            self._wake.set()

    def forget(self, uid: str) -> None:
        self._entries.pop(uid, None)

    def pending(self) -> int:
        return sum(1 for e in self._entries.values() if e.dirty)

    async def flush(self, uid: str) -> None:
        e = self._entries.get(uid)
        if e is not None and e.dirty:
            await self._send(e)

    async def _send(self, e: _Entry) -> None:
        status = e.status
        e.dirty = False
        pod = pod_pb2.Pod(
            metadata=meta_pb2.ObjectMeta(namespace=e.namespace, name=e.name, uid=e.uid), status=status
        )
        try:
            async with self._sem:
                res = await self._cp.update_pod_status(pod)
            self.writes += 1
        except Exception as err:
            if self._metrics is not None:
                self._metrics.status_written("error")
            e.failures += 1
            delay = STATUS_RETRY.delay(e.failures)
            log.warning(
                "status of %s/%s not written (%s); retrying in %.1fs", e.namespace, e.name, err, delay
            )
            e.retry_at = self._clock.monotonic() + delay
            if e.status is status:
                e.dirty = True
            return
        e.failures = 0
        if self._metrics is not None:
            self._metrics.status_written("ok" if res is not None else "gone")
        if res is None:  # the pod is gone
            if self._entries.get(e.uid) is e:
                del self._entries[e.uid]
            return
        e.sent = status
        if e.status is not status and not same_status(e.status, status):
            e.dirty = True

    async def run(self) -> None:
        while True:
            now = self._clock.monotonic()
            due = [e for e in self._entries.values() if e.dirty and e.retry_at <= now]
            if not due:
                later = [e.retry_at for e in self._entries.values() if e.dirty]
                self._wake.clear()
                timeout = (min(later) - now) if later else 3600.0
                await wait_event(self._wake, self._clock, max(timeout, 0.01))
                continue
            async with asyncio.TaskGroup() as tg:
                for e in due:
                    tg.create_task(self._send(e))
                    if self._interval:
                        await self._clock.sleep(self._interval)
