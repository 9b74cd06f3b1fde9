"""How many container creates/starts run at once, and in which order.

Creating and starting a container is CPU work for the engine (containerd, a
shim, runc). When twenty pods land at once and every worker starts its
containers together, the engine shares the CPU between all of them and every
pod becomes Running near the end of the burst. With a few slots, handed out
oldest pod first, the same work finishes in the same total time but pods
become Running one after another: the first in a fraction of a second, the
median at about half the burst. Two slots already keep the engine busy (one
container's start has pauses the other fills).

Oldest pod first, not first come first served: a pod whose sandbox is up gets
the next slot for its app container before a newer pod's sandbox, so pods
finish in order instead of all sandboxes first and all apps last. Image pulls
and hooks run outside the gate; only the engine's create and start are gated.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator


class StartGate:
    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self._busy = 0
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, f in self._waiters if not f.done())

    @contextlib.asynccontextmanager
    async def slot(self, priority: float) -> AsyncIterator[None]:
        """Hold one slot; a lower `priority` (the pod's first sight) goes first."""
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: float) -> None:
        if self._busy < self.slots and not self.waiting:
            self._busy += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # granted and cancelled in the same breath: pass it on
            raise

    def _release(self) -> None:
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)  # the slot passes straight to the waiter
                return
        self._busy -= 1
