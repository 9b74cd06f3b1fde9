"""The plain values exchanged with a `controller.store.Store` (no I/O, no etcd client).

Kept apart from `store.py` so that modules the store itself uses (group commit)
can share them; `controller.store` re-exports every name.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, TypeVar

# etcd's default --max-txn-ops is 128: compares, successes and failures each.
MAX_TXN_OPS = 128

_T = TypeVar("_T")
_NO_ARG = object()  # a field with a default factory was not given


def _quick_init(cls: type[_T]) -> type[_T]:
    """Give a frozen, slotted dataclass an `__init__` that stores each field through its
    slot's descriptor. The generated one calls `object.__setattr__(self, "name", value)` per
    field, which looks the name up each time: ~40 % slower, and these values are made per
    caller's transaction, per op, per read and per watch event. Same parameters, defaults
    and default factories, same instances (tests/unit/controller/test_store_types.py)."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if (hasattr(cls, "__post_init__") or len(fields) != len(cls.__dataclass_fields__)  # type: ignore[attr-defined]
            or any(f.kw_only is True or not f.init for f in fields)):
        raise TypeError(f"_quick_init: {cls.__name__} has more than plain positional fields "
                        "(__post_init__, InitVar, kw_only or init=False): use the generated __init__")
    env: dict[str, Any] = {"_NO_ARG": _NO_ARG}
    params: list[str] = []
    lines: list[str] = []
    for f in fields:
        env[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        value = f.name
        if f.default is not dataclasses.MISSING:
            env[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            env[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_NO_ARG")
            value = f"_factory_{f.name}() if {f.name} is _NO_ARG else {f.name}"
        else:
            params.append(f.name)
        lines.append(f"    _set_{f.name}(self, {value})\n")
    exec(f"def __init__(self, {', '.join(params)}):\n{''.join(lines)}", env)
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


@_quick_init
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


@_quick_init
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


@_quick_init
@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@_quick_init
@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@_quick_init
@dataclass(frozen=True, slots=True)
class Get:
    key: str


Op = Put | Delete | Get


@_quick_init
@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    # One entry per Get op in the branch that ran (None = key absent).
    gets: list[KeyValue | None] = field(default_factory=list)


class EventType(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@_quick_init
@dataclass(frozen=True, slots=True)
class RawEvent:
    type: EventType
    key: str
    value: bytes  # empty for DELETE
    prev_value: bytes | None  # None when the key did not exist before (create)
    mod_revision: int  # revision of this change (for DELETE: the deletion's revision)
    create_revision: int


@_quick_init
@dataclass(frozen=True, slots=True)
class WatchBatch:
    """Changes etcd reported together. `revision` is the store revision they bring us to:
    with no events (a progress notification) it still tells the watcher how far it has seen."""

    revision: int
    events: list[RawEvent]
