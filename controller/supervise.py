"""Keep a background loop of the controller running through its own bugs.

The controller's TaskGroup cancels every task when one raises, so a bug in a
reconciler (ReplicaSet, eviction) would take the API server down with it. A
loop started through `supervise` is logged with its traceback and started
again after a back-off instead; cancellation still stops it at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from cowpod.backoff import Backoff, Retry
from cowpod.clock import Clock

log = logging.getLogger(__name__)


async def supervise(name: str, run: Callable[[], Awaitable[None]], clock: Clock, *,
                    initial_delay: float = 1.0, max_delay: float = 30.0) -> None:
    """Run `run` until cancelled, starting it again after a crash: `initial_delay`, doubling
    up to `max_delay`; a run that lasted longer than `max_delay` starts the count over."""
    retry = Retry(Backoff(initial=initial_delay, cap=max_delay), clock)
    while True:
        started = clock.monotonic()
        try:
            await run()
            failure = "returned unexpectedly"
        except Exception:
            log.exception("%s raised", name)
            failure = "failed"
        if clock.monotonic() - started > max_delay:
            retry.reset()  # it ran a good while: not a crash loop
        delay = retry.next_delay()
        log.error("%s %s; starting it again in %.0fs", name, failure, delay)
        await clock.sleep(delay)
