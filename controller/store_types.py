"""The plain values exchanged with a `controller.store.Store` (no I/O, no etcd client).

Kept apart from `store.py` so that modules the store itself uses (group commit)
can share them; `controller.store` re-exports every name.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

# etcd's default --max-txn-ops is 128: compares, successes and failures each.
MAX_TXN_OPS = 128


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int = 0
    version: int = 0  # writes since creation (etcd's version); 0 when a store does not say


class Target(enum.Enum):
    MOD = "mod"
    CREATE = "create"
    VERSION = "version"


@dataclass(frozen=True, slots=True)
class Compare:
    """`key`'s `target` revision compared with `value` (`=`, `!=`, `<`, `>`)."""

    key: str
    target: Target
    op: str
    value: int

    @staticmethod
    def absent(key: str) -> Compare:
        return Compare(key, Target.VERSION, "=", 0)

    @staticmethod
    def exists(key: str) -> Compare:
        return Compare(key, Target.VERSION, ">", 0)

    @staticmethod
    def at(key: str, mod_revision: int) -> Compare:
        return Compare(key, Target.MOD, "=", mod_revision)

    @staticmethod
    def created_at(key: str, create_revision: int) -> Compare:
        return Compare(key, Target.CREATE, "=", create_revision)


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class Get:
    key: str


Op = Put | Delete | Get


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    # One entry per Get op in the branch that ran (None = key absent).
    gets: list[KeyValue | None] = field(default_factory=list)


class EventType(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class RawEvent:
    type: EventType
    key: str
    value: bytes  # empty for DELETE
    prev_value: bytes | None  # None when the key did not exist before (create)
    mod_revision: int  # revision of this change (for DELETE: the deletion's revision)
    create_revision: int


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """Changes etcd reported together. `revision` is the store revision they bring us to:
    with no events (a progress notification) it still tells the watcher how far it has seen."""

    revision: int
    events: list[RawEvent]
