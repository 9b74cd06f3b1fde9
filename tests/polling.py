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


class _Waiting:
    """What both loops keep between attempts: the deadline and what was seen last."""

    def __init__(self, timeout: float, what: str, explain: Callable[[], str] | None) -> None:
        self.timeout, self.what, self.explain = timeout, what, explain
        self.deadline = time.monotonic() + timeout
        self.last: object = None
        self.err: BaseException | None = None

    def not_yet(self, value: object = None, err: BaseException | None = None) -> None:
        """Record a falsy result (or a retried error); raise once the deadline has passed."""
        self.last, self.err = value, err
        if time.monotonic() <= self.deadline:
            return
        seen = f"; last error: {err!r}" if err is not None else f"; last seen: {value!r}"
        more = f"\n{self.explain()}" if self.explain is not None else ""
        raise AssertionError(
            f"timed out after {self.timeout:g}s waiting for {self.what or 'the condition'}{seen}{more}"
        )


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
    waiting = _Waiting(timeout, what, explain)
    while True:
        try:
            got = check()
            value: T | None = await got if inspect.isawaitable(got) else got
        except retry_on as e:
            waiting.not_yet(err=e)
        else:
            if value:
                return value
            waiting.not_yet(value)
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
    """`eventually` for code without an event loop: it runs on a loop of its own
    (from inside a running loop, await `eventually` instead)."""
    waited = eventually(
        check, timeout=timeout, interval=interval, what=what, retry_on=retry_on, explain=explain
    )
    return asyncio.run(waited)


__all__ = ["eventually", "eventually_sync"]
