"""The one task supervisor, in both of its ways: under a TaskGroup (critical failures stop
the group, others are logged) and on its own (close cancels and awaits)."""

from __future__ import annotations

import asyncio

import pytest

from cowpod.tasks import TaskSupervisor


async def boom() -> None:
    raise RuntimeError("bug")


async def forever() -> None:
    await asyncio.Event().wait()


async def test_a_failing_task_is_logged_and_forgotten(caplog: pytest.LogCaptureFixture) -> None:
    sup = TaskSupervisor("owner")
    t = sup.spawn(boom(), "b")
    await asyncio.gather(t, return_exceptions=True)
    assert not sup.running("b") and sup.names() == []
    assert "owner: task b failed" in caplog.text


async def test_close_cancels_and_awaits_what_still_runs() -> None:
    sup = TaskSupervisor("owner")
    t = sup.spawn(forever(), "f")
    await asyncio.sleep(0)
    assert sup.running("f") and len(sup) == 1
    await sup.close()
    assert t.cancelled() and len(sup) == 0


async def test_one_task_per_name_while_it_runs() -> None:
    sup = TaskSupervisor("owner")
    sup.spawn(forever(), "f")
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already running"):
        sup.spawn(forever(), "f")
    await sup.close()


async def test_in_a_group_only_a_critical_failure_stops_it() -> None:
    survived = asyncio.Event()

    async def lives() -> None:
        await asyncio.sleep(0)
        survived.set()

    async with asyncio.TaskGroup() as tg:
        sup = TaskSupervisor("agent", group=tg)
        sup.spawn(boom(), "minor")
        sup.spawn(lives(), "other")
    assert survived.is_set()
    with pytest.raises(ExceptionGroup):
        async with asyncio.TaskGroup() as tg:
            sup = TaskSupervisor("agent", group=tg)
            sup.spawn(forever(), "f")
            await asyncio.sleep(0)  # f is running when the critical one fails
            sup.spawn(boom(), "vital", critical=True)
