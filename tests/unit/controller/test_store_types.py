"""The store's values get a faster `__init__` (`_quick_init`): it must build exactly the
instances the dataclass-generated one builds, take the same arguments and refuse the same
wrong ones, and leave them frozen."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from controller.store_types import (
    Compare,
    Delete,
    EventType,
    Get,
    KeyValue,
    Put,
    RawEvent,
    Target,
    TxnResult,
    WatchBatch,
)

CLASSES: list[type[Any]] = [KeyValue, Compare, Put, Delete, Get, TxnResult, RawEvent, WatchBatch]


def generated(cls: type[Any]) -> type[Any]:
    """The same fields as a plain frozen, slotted dataclass: the generated `__init__`."""
    specs: list[tuple[str, Any, Any]] = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            specs.append((f.name, f.type, dataclasses.field(default=f.default)))
        elif f.default_factory is not dataclasses.MISSING:
            specs.append((f.name, f.type, dataclasses.field(default_factory=f.default_factory)))
        else:
            specs.append((f.name, f.type, dataclasses.field()))
    return dataclasses.make_dataclass(cls.__name__, specs, frozen=True, slots=True)


def values(obj: object) -> list[Any]:
    return [getattr(obj, f.name) for f in dataclasses.fields(obj)]  # type: ignore[arg-type]


def outcome(cls: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
    try:
        return values(cls(*args, **kwargs))
    except TypeError:
        return TypeError


def calls(cls: type[Any]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Every way to call it with 0..n+1 positional arguments, keywords for the rest or not,
    an unknown keyword and a field given twice."""
    names = [f.name for f in dataclasses.fields(cls)]
    sample = [f"v{i}" for i in range(len(names) + 1)]
    out: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    for npos in range(len(names) + 2):
        out.append((tuple(sample[:npos]), {}))
        for nkw in range(len(names) - min(npos, len(names)) + 1):
            kws = {n: f"k{n}" for n in names[npos: npos + nkw]}
            out.append((tuple(sample[:npos]), kws))
    out.append(((), {n: 1 for n in names} | {"nope": 2}))
    if names:
        out.append((("x",), {names[0]: "y"}))
    return out


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_quick_init_builds_what_the_generated_init_builds(cls: type[Any]) -> None:
    ref = generated(cls)
    for args, kwargs in calls(cls):
        assert outcome(cls, args, kwargs) == outcome(ref, args, kwargs), (args, kwargs)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_quick_init_takes_the_same_parameters(cls: type[Any]) -> None:
    ours, theirs = inspect.signature(cls), inspect.signature(generated(cls))
    assert [(p.name, p.kind) for p in ours.parameters.values()] == \
        [(p.name, p.kind) for p in theirs.parameters.values()]
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            assert ours.parameters[f.name].default == f.default


def test_instances_stay_frozen_equal_and_hashable() -> None:
    kv = KeyValue("k", b"v", 3, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        kv.key = "j"  # type: ignore[misc]
    assert kv == KeyValue("k", b"v", 3, 1, 0, 0) and hash(kv) == hash(KeyValue("k", b"v", 3, 1))
    assert dataclasses.replace(kv, version=2) == KeyValue("k", b"v", 3, 1, version=2)
    assert Compare.absent("k") == Compare("k", Target.VERSION, "=", 0)
    assert repr(Put("k", b"v")) == "Put(key='k', value=b'v', lease=0)"
    a, b = TxnResult(True, 1), TxnResult(True, 1)
    assert a.gets == [] and a.gets is not b.gets  # each its own list, as default_factory gives
    assert RawEvent(EventType.PUT, "k", b"v", None, 2, 1).prev_value is None


def test_quick_init_refuses_what_it_would_skip() -> None:
    """A `__post_init__`, an InitVar, a keyword-only or init=False field would be silently
    lost by the fast `__init__`: such a class keeps the generated one (refused at import)."""
    from dataclasses import dataclass, field

    from controller.store_types import _quick_init

    @dataclass(frozen=True, slots=True)
    class WithPost:
        a: int

        def __post_init__(self) -> None: ...

    @dataclass(frozen=True, slots=True)
    class WithInitVar:
        a: int
        b: dataclasses.InitVar[int] = 0  # spelled so under `from __future__ import annotations`

    @dataclass(frozen=True, slots=True)
    class WithKwOnly:
        a: int = field(kw_only=True)

    @dataclass(frozen=True, slots=True)
    class WithNoInit:
        a: int = field(init=False, default=0)

    for cls in (WithPost, WithInitVar, WithKwOnly, WithNoInit):
        with pytest.raises(TypeError, match="plain positional fields"):
            _quick_init(cls)
