"""One owner for every task of the agent process (kopf's rule: no
fire-and-forget). The Supervisor wraps the single `asyncio.TaskGroup` that
`Agent.run` opens: it names each task, keeps a handle to cancel it, logs one
that fails instead of letting it tear the whole agent down, and forgets it
when it ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, group: asyncio.TaskGroup) -> None:
        self._group = group
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def spawn(
        self, name: str, coro: Coroutine[Any, Any, None], *, critical: bool = False
    ) -> asyncio.Task[None]:
        """Run `coro` under the group. A critical task's failure stops the
        agent (the group cancels everything); any other's is logged."""
        old = self._tasks.get(name)
        if old is not None and not old.done():
            coro.close()
            raise RuntimeError(f"task {name!r} is already running")
        task = self._group.create_task(self._guard(name, coro, critical), name=name)
        self._tasks[name] = task
        return task

    async def _guard(self, name: str, coro: Coroutine[Any, Any, None], critical: bool) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("task %s failed", name)
            if critical:
                raise
        finally:
            if self._tasks.get(name) is asyncio.current_task():
                del self._tasks[name]

    def running(self, name: str) -> bool:
        t = self._tasks.get(name)
        return t is not None and not t.done()

    def cancel(self, name: str) -> None:
        t = self._tasks.get(name)
        if t is not None:
            t.cancel()

    def names(self) -> list[str]:
        return sorted(self._tasks)
