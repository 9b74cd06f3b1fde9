"""The one back-off rule: exponential, capped, jittered by an injected source, on an
injected clock."""

from __future__ import annotations

import asyncio

import pytest

from cowpod.backoff import Backoff, KeyedBackoff, Retry
from cowpod.clock import FakeClock


def test_doubles_from_initial_up_to_the_cap() -> None:
    b = Backoff(initial=0.5, cap=30.0)
    assert [b.delay(n) for n in range(0, 9)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_a_cap_below_initial_caps_every_delay() -> None:
    assert [Backoff(initial=30.0, cap=10.0).delay(n) for n in (1, 2)] == [10.0, 10.0]


def test_a_key_failing_for_days_stays_at_the_cap() -> None:
    assert Backoff(initial=1.0, cap=300.0, factor=3.0).delay(100_000) == 300.0


def test_jitter_takes_off_at_most_its_fraction() -> None:
    b = Backoff(initial=4.0, cap=4.0, jitter=0.5)
    assert b.delay(1, rand=lambda: 0.0) == 4.0
    assert b.delay(1, rand=lambda: 1.0) == 2.0
    assert b.delay(1, rand=lambda: 0.5) == 3.0


@pytest.mark.parametrize("kw", [
    {"initial": -1.0, "cap": 1.0}, {"initial": 1.0, "cap": -1.0},
    {"initial": 1.0, "cap": 2.0, "factor": 0.5}, {"initial": 1.0, "cap": 2.0, "jitter": 1.5},
])
def test_impossible_policies_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="back-off"):
        Backoff(**kw)


async def test_retry_counts_failures_in_a_row_and_waits_on_the_clock() -> None:
    clock = FakeClock()
    r = Retry(Backoff(initial=1.0, cap=4.0), clock)
    assert [r.next_delay() for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
    r.reset()
    assert r.next_delay() == 1.0
    r.reset()
    sleeper = asyncio.ensure_future(r.sleep())
    await asyncio.sleep(0)  # it starts sleeping now, at t=0
    await clock.advance(0.5)
    assert not sleeper.done()
    await clock.advance(0.5)
    assert sleeper.done() and sleeper.result() == 1.0


def test_keyed_backoff_is_per_key_and_due_on_the_clock() -> None:
    clock = FakeClock()
    kb: KeyedBackoff[str] = KeyedBackoff(Backoff(initial=0.5, cap=30.0), clock)
    assert kb.ready("a") and kb.due("a") == 0.0
    assert kb.failed("a") == 0.5
    assert kb.failed("a") == 1.0
    assert kb.failures("a") == 2 and kb.failures("b") == 0
    assert not kb.ready("a") and kb.ready("b")
    assert kb.due("a") == clock.monotonic() + 1.0
    kb.forget("a")
    assert kb.ready("a") and kb.failed("a") == 0.5
