"""tests/polling.py, the one way tests wait: it returns the first truthy result,
retries only the errors it is told to, and a timeout says what was awaited and
what was seen last."""

from __future__ import annotations

import pytest

from tests.polling import eventually, eventually_sync


def test_the_first_truthy_result_is_returned_after_retried_errors() -> None:
    calls = 0

    def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise KeyError("not yet")
        return calls

    assert eventually_sync(flaky, interval=0.001, retry_on=(KeyError,)) == 3


def test_a_timeout_names_what_was_awaited_and_what_was_seen() -> None:
    with pytest.raises(AssertionError, match="waiting for the pod; last seen: 0"):
        eventually_sync(lambda: 0, timeout=0.05, interval=0.01, what="the pod")
    empty: dict[str, int] = {}
    with pytest.raises(AssertionError, match="last error: KeyError"):
        eventually_sync(lambda: empty["x"], timeout=0.05, interval=0.01, retry_on=(KeyError,))


async def test_async_checks_are_awaited_and_other_errors_fail_at_once() -> None:
    async def ready() -> list[int]:
        return [1]

    assert await eventually(ready) == [1]
    assert await eventually(lambda: "sync too") == "sync too"
    with pytest.raises(AssertionError, match="waiting for it; last seen: False\nconsole tail"):
        await eventually(
            lambda: False, timeout=0.05, interval=0.01, what="it", explain=lambda: "console tail"
        )
    with pytest.raises(ZeroDivisionError):
        await eventually(lambda: 1 / 0)
