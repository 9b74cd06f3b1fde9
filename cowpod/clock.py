"""Time as a dependency.

Leases, back-off and probes ask a `Clock` rather than the `time` module so that
tests advance a `FakeClock` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (wall clock: stored in timestamps)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for intervals)."""

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock that moves only when a test calls `advance`.

    Sleepers wake in deadline order once `advance` passes their deadline, so a
    test drives back-off and lease expiry deterministically.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall0 = start
        self._t = 0.0
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._wall0 + self._t

    def monotonic(self) -> float:
        return self._t

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._t + seconds, next(self._seq), fut))
        await fut

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking every sleeper whose deadline has passed."""
        target = self._t + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            self._t = max(self._t, deadline)
            if not fut.done():
                fut.set_result(None)
            # Let the woken task run before waking the next one.
            for _ in range(5):
                await asyncio.sleep(0)
        self._t = target
        for _ in range(5):
            await asyncio.sleep(0)
