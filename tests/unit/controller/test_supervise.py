"""controller.supervise: a crashing loop is started again after a growing back-off, on the
clock; a loop that ran a good while starts the count over."""

from __future__ import annotations

import asyncio
import itertools

from controller.supervise import supervise
from cowpod.clock import FakeClock


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_restarts_after_a_growing_back_off_and_resets_after_a_long_run() -> None:
    clock = FakeClock()
    starts: list[float] = []
    hold = asyncio.Event()

    async def run() -> None:
        starts.append(clock.monotonic())
        if len(starts) == 4:
            await clock.sleep(100)  # a good, long run before this crash
        if len(starts) == 6:
            await hold.wait()
        raise RuntimeError("bug")

    task = asyncio.ensure_future(supervise("loop", run, clock, initial_delay=1.0, max_delay=8.0))
    try:
        await settle()
        for _ in range(200):
            if len(starts) >= 6:
                break
            await clock.advance(1.0)
        # 1, 2, 4 after the first three crashes; the long 4th run resets the count: 1, then 2.
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert gaps == [1.0, 2.0, 4.0, 100.0 + 1.0, 2.0]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
