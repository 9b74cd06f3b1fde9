"""Results of pure functions of a pod spec, remembered by the spec's deterministic bytes.

Every replica of a workload has the same spec, and a create runs several checks that read
nothing but the spec (validation's findings, the isolation rules, the ignored-field
warnings): tens of µs of Python per pod, the largest share of a create's CPU. Equal
deterministic bytes are an equal spec (map entries sorted; a field with presence is written
when present, even at its default), so a pure function of the spec gives the same answer
for them. Unknown fields are part of the bytes: they can only make a miss.

Bounded in entries and key size, so distinct specs (or a client sending many) only churn
it; the oldest entry goes first.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")

MAX_ENTRIES = 1024
MAX_KEY_BYTES = 8 * 1024


class SpecMemo(Generic[T]):
    """A bounded map from a spec's deterministic bytes to what a pure function of it gave."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_key_bytes: int = MAX_KEY_BYTES) -> None:
        self.max_entries = max_entries
        self.max_key_bytes = max_key_bytes
        self._items: dict[bytes, T] = {}

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: bytes) -> T | None:
        return self._items.get(key)

    def put(self, key: bytes, value: T) -> None:
        """Remember `value` for `key`, unless the key is too large to be worth keeping."""
        if len(key) > self.max_key_bytes:
            return
        items = self._items
        if key not in items and len(items) >= self.max_entries:
            del items[next(iter(items))]  # the oldest
        items[key] = value

    def clear(self) -> None:
        self._items.clear()
