"""Kubernetes' ToleratesTaint: the one rule for whether a toleration covers a taint.

Written over two small Protocols, so the scheduler's frozen values and the
protobuf messages the controller's eviction reads both satisfy it: one rule,
whatever the caller holds.
"""

from __future__ import annotations

from typing import Protocol


class TaintLike(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def value(self) -> str: ...
    @property
    def effect(self) -> str: ...


class TolerationLike(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def operator(self) -> str: ...
    @property
    def value(self) -> str: ...
    @property
    def effect(self) -> str: ...


def tolerates(tol: TolerationLike, taint: TaintLike) -> bool:
    """Effect (empty = every effect), then key (empty with Exists = every key), then
    value (Exists ignores it; Equal, the default, compares it)."""
    if tol.effect and tol.effect != taint.effect:
        return False
    if tol.key and tol.key != taint.key:
        return False
    operator = tol.operator or "Equal"
    if operator == "Exists":
        return True
    if operator == "Equal":
        return tol.value == taint.value
    return False
