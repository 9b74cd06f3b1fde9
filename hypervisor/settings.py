"""Reading a provider's settings from the cluster config's `provider:` section.

Every provider checks its own keys, but errors must read the same for all of
them: the field path (`provider.warmShells`) and the reason, unknown keys
refused, as for manifests. `Fields` is that one reader."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

from cowpod.errors import Invalid


class Fields:
    """Take keys one at a time, then `done()` refuses whatever was not taken."""

    def __init__(self, raw: Mapping[str, Any], where: str) -> None:
        for k in raw:
            if not isinstance(k, str):
                raise Invalid(where, f"keys must be strings, got {k!r}")
        self._raw = dict(raw)
        self._where = where
        self._taken: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def _get(self, key: str) -> Any:
        self._taken.add(key)
        return self._raw.get(key)

    def string(self, key: str, default: str = "", *, required: bool = False) -> str:
        v = self._get(key)
        if v is None:
            if required:
                raise Invalid(self.path(key), "required")
            return default
        if not isinstance(v, str):
            raise Invalid(self.path(key), f"expected a string, got {v!r}")
        if required and not v:
            raise Invalid(self.path(key), "required, and must not be empty")
        return v

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        v = self._get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            raise Invalid(self.path(key), f"expected a whole number, got {v!r}")
        if v < minimum:
            raise Invalid(self.path(key), f"must be at least {minimum}, got {v}")
        return v

    def number(self, key: str, default: float) -> float:
        v = self._get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise Invalid(self.path(key), f"expected a number, got {v!r}")
        return float(v)

    def boolean(self, key: str, default: bool) -> bool:
        v = self._get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise Invalid(self.path(key), f"expected true or false, got {v!r}")
        return v

    def file(self, key: str, *, required: bool = False) -> pathlib.Path | None:
        """A path that must name a readable file when given."""
        v = self.string(key, required=required)
        if not v:
            return None
        p = pathlib.Path(v).expanduser()
        if not p.is_file():
            raise Invalid(self.path(key), f"{p} is not a readable file")
        return p

    def mapping(self, key: str) -> dict[str, Any]:
        v = self._get(key)
        if v is None:
            return {}
        if not isinstance(v, Mapping):
            raise Invalid(self.path(key), f"expected a mapping, got {v!r}")
        return dict(v)

    def done(self) -> None:
        unknown = sorted(set(self._raw) - self._taken)
        if unknown:
            known = ", ".join(sorted(self._taken))
            raise Invalid(self.path(unknown[0]), f"unknown setting for this provider (known: {known})")
