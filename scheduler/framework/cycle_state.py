"""Scratch space for one pod's scheduling cycle.

A filter may compute something a score of the same cycle needs again (the
spread counts per domain, say); it stores it here under its plugin name rather
than in a field on the plugin, so plugins hold no per-pod state and one
plugin instance serves every cycle.
"""

from __future__ import annotations

from typing import Any


class CycleState:
    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}

    def read(self, key: str) -> Any:
        return self._data.get(key)

    def write(self, key: str, value: Any) -> None:
        self._data[key] = value
