"""How many warm shells a parent's pool holds: sized to the bursts of clones seen.

Like the spare machines of a VMware Horizon instant-clone pool, but sized by
what happened: a burst is the clones asked of one parent between two quiet
moments (the moments a pool refill waits for: no clone of the parent began or
ended for `refill_quiet_s` and none is in the making; see provider.py). After
a burst of N, the pool is refilled to N, so the next burst of that size finds
a shell for every clone (no container to create and start while the burst's
pods start on the same engine). The target is bounded by `ceiling` (a flag:
idle shells hold memory and an address) and never below `floor` (the
configured pool size). A burst is remembered for `memory_s`; when the biggest
remembered burst expires the target drops and the extra shells are removed
(the pool shrinks back after a quiet period, as cluster autoscalers scale
down only after minutes of being unneeded).

Pure logic: time is passed in (`now`, monotonic seconds), so tests drive it
without sleeping. The bound by a VM class's `max` is implicit: the autoscaler
never asks one parent for more clones at once than its class allows, so a
burst is never bigger than that.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field


@dataclass
class BurstSizer:
    """Per parent: the clones of the burst in progress and the recent bursts' sizes."""

    ceiling: int
    memory_s: float
    # parent -> clones asked since its last quiet moment.
    _current: collections.Counter[str] = field(default_factory=collections.Counter)
    # parent -> (time the burst ended, its size), oldest first.
    _bursts: dict[str, collections.deque[tuple[float, int]]] = field(default_factory=dict)

    def asked(self, parent: str) -> None:
        """A clone of `parent` was asked for (with or without a shell ready)."""
        self._current[parent] += 1

    def quiet(self, parent: str, now: float) -> None:
        """`parent` is quiet: the clones asked since the last quiet moment were one burst."""
        n = self._current.pop(parent, 0)
        if n > 0:
            self._bursts.setdefault(parent, collections.deque()).append((now, n))
        self._expire(parent, now)

    def target(self, parent: str, floor: int, now: float) -> int:
        """Shells to keep ready for `parent`: the biggest burst remembered (the one in
        progress included), at least `floor`, at most `ceiling`. `floor` <= 0 turns
        the pool off whatever the bursts were."""
        if floor <= 0:
            return 0
        self._expire(parent, now)
        seen = max((n for _, n in self._bursts.get(parent, ())), default=0)
        seen = max(seen, self._current.get(parent, 0))
        return max(floor, min(seen, self.ceiling))

    def shrink_at(self, parent: str, floor: int, now: float) -> float | None:
        """When `target` next drops below its value at `now` (a burst that holds it up
        expires), or None when it is at `floor` already or held up only by the burst
        in progress (that one expires only after it ends)."""
        if floor <= 0:
            return None
        cur = self.target(parent, floor, now)
        if cur <= floor or self._current.get(parent, 0) >= min(cur, self.ceiling):
            return None
        # The bursts are oldest first: the target drops when the last one as big as it expires.
        holding = [t for t, n in self._bursts.get(parent, ()) if min(n, self.ceiling) >= cur]
        return max(holding) + self.memory_s if holding else None

    def forget(self, parent: str) -> None:
        """A parent gone, or its pool drained: it starts over."""
        self._current.pop(parent, None)
        self._bursts.pop(parent, None)

    def _expire(self, parent: str, now: float) -> None:
        q = self._bursts.get(parent)
        while q and q[0][0] + self.memory_s <= now:
            q.popleft()
        if q is not None and not q:
            del self._bursts[parent]
