"""Label and field selectors in Kubernetes syntax, parsed once, matched many times.

Label selector: comma-separated requirements, all must hold:
    app=web   app==web   tier!=db   env in (a,b)   env notin (a,b)   legacy   !legacy
Field selector: `field=value`, `field==value`, `field!=value`, comma = AND. Which
fields exist depends on the kind; each kind passes a table of getters.

A parse error is `Invalid` naming `labelSelector`/`fieldSelector` and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from cowpod.errors import Invalid

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op == "=":
            return present and labels[self.key] in self.values
        if self.op == "in":
            return present and labels[self.key] in self.values
        if self.op == "!=":
            return not present or labels[self.key] not in self.values
        # notin
        return not present or labels[self.key] not in self.values


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def _split_top(s: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise Invalid("labelSelector", f"unbalanced ')' in {s!r}")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise Invalid("labelSelector", f"unbalanced '(' in {s!r}")
    parts.append("".join(cur))
    return parts


def _check_key(key: str, path: str) -> str:
    if not key or len(key) > 317 or not _KEY.match(key):
        raise Invalid(path, f"invalid label key {key!r}")
    return key


def _check_value(v: str, path: str) -> str:
    if len(v) > 63 or not _VALUE.match(v):
        raise Invalid(path, f"invalid label value {v!r}")
    return v


_SET_RE = re.compile(r"^(?P<key>[^\s!=()]+)\s+(?P<op>in|notin)\s*\((?P<vals>[^()]*)\)$")


def parse_label_selector(s: str, path: str = "labelSelector") -> LabelSelector:
    s = s.strip()
    if not s:
        return LabelSelector()
    reqs: list[Requirement] = []
    for raw in _split_top(s):
        part = raw.strip()
        if not part:
            raise Invalid(path, f"empty requirement in {s!r}")
        m = _SET_RE.match(part)
        if m:
            vals = frozenset(_check_value(v.strip(), path) for v in m["vals"].split(",") if v.strip())
            if not vals:
                raise Invalid(path, f"{part!r}: set needs at least one value")
            reqs.append(Requirement(_check_key(m["key"], path), m["op"], vals))
            continue
        if part.startswith("!"):
            reqs.append(Requirement(_check_key(part[1:].strip(), path), "!", frozenset()))
            continue
        for op, norm in (("==", "="), ("!=", "!="), ("=", "=")):
            if op in part:
                k, _, v = part.partition(op)
                reqs.append(Requirement(_check_key(k.strip(), path), norm,
                                        frozenset({_check_value(v.strip(), path)})))
                break
        else:
            if any(c in part for c in " ()"):
                raise Invalid(path, f"cannot parse requirement {part!r}")
            reqs.append(Requirement(_check_key(part, path), "exists", frozenset()))
    return LabelSelector(tuple(reqs))


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str
    value: str
    negate: bool


class FieldSelector(Generic[T]):
    """Field requirements bound to one kind's getters."""

    def __init__(self, requirements: tuple[FieldRequirement, ...],
                 getters: Mapping[str, Callable[[T], str]]) -> None:
        self.requirements = requirements
        self._getters = getters

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, obj: T) -> bool:
        for r in self.requirements:
            if (self._getters[r.field](obj) == r.value) == r.negate:
                return False
        return True

    def required(self, field: str) -> str | None:
        """The value an equality requirement pins `field` to, if any (for index use)."""
        for r in self.requirements:
            if r.field == field and not r.negate:
                return r.value
        return None


def parse_field_selector(
    s: str, getters: Mapping[str, Callable[[T], str]], path: str = "fieldSelector"
) -> FieldSelector[T]:
    s = s.strip()
    reqs: list[FieldRequirement] = []
    if s:
        for raw in s.split(","):
            part = raw.strip()
            for op in ("!=", "==", "="):
                if op in part:
                    f, _, v = part.partition(op)
                    f, v = f.strip(), v.strip()
                    negate = op == "!="
                    break
            else:
                raise Invalid(path, f"{part!r}: expected field=value or field!=value")
            if f not in getters:
                raise Invalid(
                    path, f"field {f!r} is not supported; supported: {', '.join(sorted(getters))}"
                )
            reqs.append(FieldRequirement(f, v, negate))
    return FieldSelector(tuple(reqs), getters)
