"""Waiting on an event or an injected clock, whichever comes first."""

from __future__ import annotations

import asyncio
import contextlib

from cowpod.clock import Clock


async def wait_event(event: asyncio.Event, clock: Clock, timeout: float) -> bool:
    """True if `event` was set before `timeout` seconds passed on `clock`.

    Both waits are child tasks awaited and cancelled right here, so nothing
    outlives the call."""
    if event.is_set():
        return True
    if timeout <= 0:
        await asyncio.sleep(0)
        return event.is_set()
    ev = asyncio.ensure_future(event.wait())
    tm = asyncio.ensure_future(clock.sleep(timeout))
    try:
        await asyncio.wait({ev, tm}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (ev, tm):
            if not t.done():
                t.cancel()
        for t in (ev, tm):
            with contextlib.suppress(asyncio.CancelledError):
                await t
    return event.is_set()
