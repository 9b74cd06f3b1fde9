"""Kubernetes quantity strings ("100m", "64Mi", "1.5", "2G") to cowpod's
canonical integers (millicores, bytes), for the agent's command-line flags."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)$")


def _split(text: str, what: str) -> tuple[Decimal, str]:
    m = _RE.match(text.strip())
    if not m:
        raise ValueError(f"{what}: {text!r} is not a quantity (e.g. 100m, 64Mi, 2)")
    try:
        return Decimal(m.group(1)), m.group(2)
    except InvalidOperation as err:  # pragma: no cover - regex already guards
        raise ValueError(f"{what}: {text!r} is not a number") from err


def parse_cpu_millis(text: str) -> int:
    """'100m' -> 100, '2' -> 2000, '0.5' -> 500."""
    num, suffix = _split(text, "cpu")
    if suffix == "m":
        return int(num)
    if suffix == "":
        return int(num * 1000)
    raise ValueError(f"cpu: {text!r} has unknown suffix {suffix!r} (use m or none)")


def parse_bytes(text: str) -> int:
    """'64Mi' -> 67108864, '1G' -> 10**9, '512' -> 512."""
    num, suffix = _split(text, "memory")
    if suffix == "":
        return int(num)
    if suffix in _BINARY:
        return int(num * _BINARY[suffix])
    if suffix in _DECIMAL:
        return int(num * _DECIMAL[suffix])
    raise ValueError(f"memory: {text!r} has unknown suffix {suffix!r}")


def format_bytes(n: int) -> str:
    """Human form for messages: 67108864 -> '64Mi'."""
    for suffix, size in sorted(_BINARY.items(), key=lambda kv: -kv[1]):
        if n >= size and n % size == 0:
            return f"{n // size}{suffix}"
    return str(n)
