"""Poll until something is true, with a progress line and a deadline.

Polling (rather than a watch) keeps waits correct across controller restarts
and simple to test: the check is a plain async function returning whether it
is done and a short status for the progress line.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from cowpod.cli.context import Ctx
from cowpod.cli.errors import CliError
from cowpod.cli.progress import Progress

Check = Callable[[], Awaitable[tuple[bool, str]]]

POLL_INTERVAL = 0.5


async def poll_until(
    ctx: Ctx,
    check: Check,
    *,
    timeout: float,
    what: str,
    progress: Progress | None = None,
    hint: str = "",
    interval: float = POLL_INTERVAL,
) -> str:
    """Return the final status once `check` says done; CliError naming `what` on timeout."""
    deadline = ctx.clock.monotonic() + timeout
    status = ""
    try:
        while True:
            done, status = await check()
            if done:
                return status
            if progress is not None:
                progress.update(f"waiting for {what}: {status}")
            if ctx.clock.monotonic() >= deadline:
                suffix = f"; {hint}" if hint else ""
                raise CliError(
                    f"timed out after {timeout:g}s waiting for {what} (last seen: {status}){suffix}"
                )
            await ctx.clock.sleep(interval)
    finally:
        if progress is not None:
            progress.done()
