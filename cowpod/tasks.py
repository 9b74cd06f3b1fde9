"""The one asyncio task supervisor: no fire-and-forget tasks (kopf's rule).

A `TaskSupervisor` spawns, names, tracks, cancels and awaits background tasks,
and logs one that fails instead of losing its exception. It works in two
ways, for the two kinds of owner cowpod has:

- inside a `TaskGroup` (`TaskSupervisor("agent", group=tg)`): the group owns
  the tasks and awaits them when it exits; a `critical` task's failure stops
  the group (the agent's informer, status loop), any other's is only logged
  (one pod's worker must not take the agent down);
- on its own (`TaskSupervisor("docker-provider")`): for a component handed a
  place to run background work (a provider's pool refills), which `close()`
  cancels and awaits when the owner stops.

Not to be confused with `cowpod.local.supervisor`, which supervises
*processes* (`cowpod up`'s etcd, controller, scheduler), nor with
`controller.supervise`, which restarts one loop after a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskSupervisor:
    def __init__(self, owner: str, group: asyncio.TaskGroup | None = None) -> None:
        self._owner = owner
        self._group = group
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def spawn(self, coro: Coroutine[Any, Any, None], name: str, *,
              critical: bool = False) -> asyncio.Task[None]:
        """Run `coro` as the task `name` (unique while it runs). A critical task's failure
        is raised into the group (which then cancels everything); any other's is logged."""
        old = self._tasks.get(name)
        if old is not None and not old.done():
            coro.close()
            raise RuntimeError(f"{self._owner}: task {name!r} is already running")
        guarded = self._guard(name, coro, critical)
        full = f"{self._owner}/{name}" if self._owner else name
        task = (self._group.create_task(guarded, name=full) if self._group is not None
                else asyncio.create_task(guarded, name=full))
        self._tasks[name] = task
        return task

    async def _guard(self, name: str, coro: Coroutine[Any, Any, None], critical: bool) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: task %s failed", self._owner, name)
            if critical and self._group is not None:
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

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel every task still running and wait for them to end."""
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
