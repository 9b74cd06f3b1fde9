"""The start gate: a bounded number of holders, handed out oldest pod first."""

from __future__ import annotations

import asyncio

import pytest

from agent.startgate import StartGate


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_holds_at_most_slots_and_serves_the_oldest_waiter_first() -> None:
    gate = StartGate(2)
    order: list[str] = []
    release: dict[str, asyncio.Event] = {}

    async def hold(name: str, priority: float) -> None:
        release[name] = asyncio.Event()
        async with gate.slot(priority):
            order.append(name)
            await release[name].wait()

    tasks = [asyncio.ensure_future(hold("a", 5)), asyncio.ensure_future(hold("b", 6))]
    await settle()
    assert order == ["a", "b"] and gate.busy == 2
    # Newer pods first in time, then an older pod's second container: the older goes first.
    tasks += [asyncio.ensure_future(hold("new-1", 9)), asyncio.ensure_future(hold("new-2", 8))]
    await settle()
    tasks.append(asyncio.ensure_future(hold("old", 1)))
    await settle()
    assert gate.waiting == 3 and order == ["a", "b"]
    for name in ("a", "b", "old", "new-2", "new-1"):
        release[name].set()
        await settle()
    await asyncio.gather(*tasks)
    assert order == ["a", "b", "old", "new-2", "new-1"]
    assert gate.busy == 0 and gate.waiting == 0


async def test_a_cancelled_waiter_does_not_leak_its_slot() -> None:
    gate = StartGate(1)
    holder_done = asyncio.Event()

    async def holder() -> None:
        async with gate.slot(0):
            await holder_done.wait()

    async def waiter() -> None:
        async with gate.slot(1):
            pass

    h = asyncio.ensure_future(holder())
    await settle()
    w = asyncio.ensure_future(waiter())
    await settle()
    w.cancel()
    await asyncio.gather(w, return_exceptions=True)
    holder_done.set()
    await h
    assert gate.busy == 0
    # The slot is free for the next one.
    async with gate.slot(2):
        assert gate.busy == 1


async def test_a_slot_granted_to_a_cancelled_waiter_passes_on() -> None:
    gate = StartGate(1)
    got: list[str] = []

    async def take(name: str, priority: float) -> None:
        async with gate.slot(priority):
            got.append(name)

    async with gate.slot(0):
        first = asyncio.ensure_future(take("first", 1))
        second = asyncio.ensure_future(take("second", 2))
        await settle()
    # The slot was handed to `first` on release; cancel it before it runs.
    first.cancel()
    await asyncio.gather(first, second, return_exceptions=True)
    assert got == ["second"] and gate.busy == 0


def test_needs_at_least_one_slot() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        StartGate(0)
