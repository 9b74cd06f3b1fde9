"""Exponential back-off: the one rule every retry loop uses.

A `Backoff` is a policy (first delay, growth factor, cap, jitter): the delay
after the n-th failure in a row is `initial * factor ** (n - 1)`, at most `cap`,
shrunk by up to `jitter` of itself at random so that many clients that failed
together do not retry together (the "equal jitter" of the AWS architecture
blog, with `jitter=0.5`). Each caller keeps its own constants as named
arguments; only the arithmetic lives here.

Two small stateful helpers sit on top of it:

- `Retry` — one loop's "failures in a row": `await retry.sleep()` after a
  failure, `retry.reset()` after a success (watch resumption, reconnects).
- `KeyedBackoff` — per key (a VM name, a ReplicaSet): when the key may be
  tried again, on an injected `Clock`, so tests advance a `FakeClock`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from cowpod.clock import Clock

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Backoff:
    """The policy. `delay(n)` is pure but for the jitter, whose source is a parameter."""

    initial: float
    cap: float
    factor: float = 2.0
    # Fraction of the delay that may be taken off at random (0 = exact, 0.5 = between half and all).
    jitter: float = 0.0

    def __post_init__(self) -> None:
        # A cap below `initial` is allowed (every delay is then the cap), as configs allow it.
        if self.initial < 0 or self.cap < 0:
            raise ValueError(f"back-off needs initial, cap >= 0, got initial={self.initial} cap={self.cap}")
        if self.factor < 1:
            raise ValueError(f"back-off factor must be >= 1, got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"back-off jitter must be within [0, 1], got {self.jitter}")

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        """The pause after `failures` failures in a row (1 = the first); 0 for none."""
        if failures <= 0:
            return 0.0
        # Capped before it can overflow: factor ** n grows fast for a key failing for days.
        d = self.initial
        for _ in range(failures - 1):
            d *= self.factor
            if d >= self.cap:
                break
        d = min(d, self.cap)
        if self.jitter:
            d *= 1.0 - self.jitter * rand()
        return d


class Retry:
    """Failures in a row of one loop, and the pause the policy gives the next retry."""

    def __init__(self, policy: Backoff, clock: Clock, *, rand: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self.clock = clock
        self.failures = 0
        self._rand = rand

    def next_delay(self) -> float:
        """Count one more failure; return how long to wait before retrying."""
        self.failures += 1
        return self.policy.delay(self.failures, self._rand)

    async def sleep(self) -> float:
        """Count a failure and wait out its delay; returns the delay waited."""
        d = self.next_delay()
        await self.clock.sleep(d)
        return d

    def reset(self) -> None:
        self.failures = 0


class KeyedBackoff(Generic[K]):
    """Per key: failures in a row and the monotonic time before which it is not retried."""

    def __init__(self, policy: Backoff, clock: Clock, *, rand: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self.clock = clock
        self._rand = rand
        self._state: dict[K, tuple[int, float]] = {}

    def failed(self, key: K) -> float:
        """Record a failure of `key`; return its delay."""
        n = self._state.get(key, (0, 0.0))[0] + 1
        d = self.policy.delay(n, self._rand)
        self._state[key] = (n, self.clock.monotonic() + d)
        return d

    def forget(self, key: K) -> None:
        """`key` succeeded (or is gone): its next failure starts from `initial` again."""
        self._state.pop(key, None)

    def failures(self, key: K) -> int:
        return self._state.get(key, (0, 0.0))[0]

    def due(self, key: K) -> float:
        """Monotonic time from which `key` may be tried (0 when it has not failed)."""
        return self._state.get(key, (0, 0.0))[1]

    def ready(self, key: K) -> bool:
        return self.due(key) <= self.clock.monotonic()

    def __len__(self) -> int:
        return len(self._state)
