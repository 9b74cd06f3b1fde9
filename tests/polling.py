"""The one way a test waits for something to happen: poll a condition under a deadline.

A fixed sleep is wrong both ways: too short on a loaded machine (a flaky test),
too long on an idle one (a slow suite). Poll instead, and on timeout say what
was awaited and what was last seen, so a failure reads without a rerun.

    pod = await eventually(lambda: get_pod("web"), what="pod web exists")
    await eventually(ready, timeout=60, what="node Ready", retry_on=(grpc.RpcError,))
    eventually_sync(lambda: not path.exists(), what=f"{path} removed")

`check` may be sync or async; its first truthy result is returned. Errors in
`retry_on` count as "not yet" (a process restarting, a watch not caught up);
anything else fails the test at once. Time is the real monotonic clock: tests
on fake clocks advance the clock instead (e.g. the agent tests' `until`).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")

TIMEOUT_S = 30.0
INTERVAL_S = 0.05


def _timed_out(
    what: str, timeout: float, last: object, err: BaseException | None, explain: str
) -> AssertionError:
    seen = f"; last error: {err!r}" if err is not None else f"; last seen: {last!r}"
    more = f"\n{explain}" if explain else ""
    return AssertionError(f"timed out after {timeout:g}s waiting for {what or 'the condition'}{seen}{more}")


@overload
async def eventually(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str = ...,
    retry_on: tuple[type[BaseException], ...] = ...,
    explain: Callable[[], str] | None = ...,
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T | None],
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str = ...,
    retry_on: tuple[type[BaseException], ...] = ...,
    explain: Callable[[], str] | None = ...,
) -> T: ...


async def eventually(
    check: Callable[[], Awaitable[T | None] | T | None],
    *,
    timeout: float = TIMEOUT_S,
    interval: float = INTERVAL_S,
    what: str = "",
    retry_on: tuple[type[BaseException], ...] = (),
    explain: Callable[[], str] | None = None,
) -> T:
    """Await `check()` until it is truthy and return it; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: object = None
    err: BaseException | None = None
    while True:
        try:
            got = check()
            value: T | None = await got if inspect.isawaitable(got) else got
            if value:
                return value
            last, err = value, None
        except retry_on as e:
            err = e
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, last, err, explain() if explain is not None else "")
        await asyncio.sleep(interval)


def eventually_sync(
    check: Callable[[], T | None],
    *,
    timeout: float = TIMEOUT_S,
    interval: float = INTERVAL_S,
    what: str = "",
    retry_on: tuple[type[BaseException], ...] = (),
    explain: Callable[[], str] | None = None,
) -> T:
    """`eventually` for code without an event loop (it blocks the thread while it waits)."""
    deadline = time.monotonic() + timeout
    last: object = None
    err: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
            last, err = value, None
        except retry_on as e:
            err = e
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, last, err, explain() if explain is not None else "")
        time.sleep(interval)


__all__ = ["eventually", "eventually_sync"]
