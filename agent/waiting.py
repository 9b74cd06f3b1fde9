"""Waiting on an event or an injected clock, whichever comes first."""

from __future__ import annotations

import asyncio

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
            t.cancel()
        # gather, not `suppress(CancelledError)`: a cancellation of *this*
        # task arriving now must propagate, not be swallowed.
        await asyncio.gather(ev, tm, return_exceptions=True)
    return event.is_set()
