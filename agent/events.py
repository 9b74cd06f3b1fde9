"""Events about pods ("Pulled", "Created", "Started", "Killing", "BackOff",
"Unhealthy"...), sent to the controller off the hot path.

`record` never blocks and never fails: events go into a bounded queue that
one sender task drains; when the controller is slow the oldest are dropped
(events are advisory, pods are not). The controller folds repeats into one
event with a count.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass

from agent.controlplane import ControlPlane
from agent.status import ts
from cowpod.clock import Clock
from cowpod.v1 import event_pb2, meta_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PodRef:
    namespace: str
    name: str
    uid: str


class EventRecorder:
    def __init__(self, cp: ControlPlane, clock: Clock, node_name: str, *, capacity: int = 1000) -> None:
        self._cp = cp
        self._clock = clock
        self._node = node_name
        self._queue: asyncio.Queue[event_pb2.Event] = asyncio.Queue(maxsize=capacity)
        self.dropped = 0
        # Kept for tests and `describe`-like debugging in the agent's log.
        self.recent: list[tuple[str, str, str, str]] = []

    def record(self, pod: PodRef, reason: str, message: str, *, warning: bool = False) -> None:
        now = self._clock.now()
        ev = event_pb2.Event(
            api_version="v1",
            kind="Event",
            metadata=meta_pb2.ObjectMeta(name=f"{pod.name}.{secrets.token_hex(6)}", namespace=pod.namespace),
            involved_object=event_pb2.ObjectReference(
                kind="Pod", namespace=pod.namespace, name=pod.name, uid=pod.uid
            ),
            reason=reason,
            message=message,
            type="Warning" if warning else "Normal",
            source=event_pb2.EventSource(component="cowpod-agent", host=self._node),
            first_timestamp=ts(now),
            last_timestamp=ts(now),
            count=1,
        )
        log.log(
            logging.WARNING if warning else logging.INFO,
            "%s/%s %s: %s",
            pod.namespace,
            pod.name,
            reason,
            message,
        )
        self.recent.append((pod.name, reason, message, ev.type))
        del self.recent[:-200]
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(ev)

    async def run(self) -> None:
        while True:
            ev = await self._queue.get()
            try:
                await self._cp.create_event(ev)
            except Exception as err:  # advisory: log and move on
                log.debug("event %s for %s not sent: %s", ev.reason, ev.involved_object.name, err)
