"""Kubernetes resource quantities at the edge: "500m", "0.5", "64Mi", "1G", "1e3".

Inside cowpod every amount is an integer (`ResourceList.cpu_millis`,
`memory_bytes`, ...), so arithmetic in the scheduler is exact and cheap. Users
write Kubernetes strings; this module is the one place that turns them into
integers and back.

Parsing is exact (fractions, never floats), so "0.1" CPU is 100 millicores and
"1.5Gi" is 1610612736 bytes. As Kubernetes does, an amount finer than the unit
(0.0001 CPU, 0.5 bytes) is rounded *up*: a request is never silently lowered.
Negative amounts are errors.

Rendering is canonical: CPU as whole cores ("2") or millicores ("250m");
bytes with the largest binary suffix that divides them exactly ("64Mi"), else
the largest decimal one ("1G"), else a plain integer. Parsing a rendered
value gives the same integer back.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

__all__ = [
    "QuantityError",
    "format_count",
    "format_cpu",
    "format_memory",
    "parse_count",
    "parse_cpu",
    "parse_memory",
    "parse_quantity",
]


class QuantityError(ValueError):
    """A value that is not a quantity, or not one allowed here. The message is
    fit for the user and says what a valid value looks like."""


_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -3, "u": -2, "m": -1, "": 0, "k": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}

_QUANTITY = re.compile(
    r"""^(?P<sign>[+-]?)
        (?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)
        (?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE](?P<exp>[+-]?[0-9]+))?$""",
    re.VERBOSE,
)

_EXAMPLES = "e.g. 500m, 2, 0.5, 64Mi, 1Gi, 1G, 1e3"

QuantityInput = str | int | float


def parse_quantity(value: QuantityInput) -> Fraction:
    """The exact amount a Kubernetes quantity stands for (any sign)."""
    if isinstance(value, bool):
        raise QuantityError(f"expected a quantity ({_EXAMPLES}), got boolean {str(value).lower()}")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(f"{value} is not a quantity ({_EXAMPLES})")
        # repr gives the shortest string that round-trips: 0.1 -> "0.1", not 0.1000000000000000055...
        return parse_quantity(repr(value))
    if not isinstance(value, str):
        raise QuantityError(f"expected a quantity ({_EXAMPLES}), got {type(value).__name__}")
    text = value.strip()
    m = _QUANTITY.match(text)
    if m is None:
        raise QuantityError(f"{value!r} is not a quantity ({_EXAMPLES})")
    amount = Fraction(m["num"])
    if m["sign"] == "-":
        amount = -amount
    if m["exp"] is not None:
        exp = int(m["exp"])
        if abs(exp) > 60:
            raise QuantityError(f"{value!r}: exponent out of range")
        return amount * Fraction(10) ** exp
    suffix = m["suffix"] or ""
    if suffix in _BINARY:
        return amount * Fraction(1024) ** _BINARY[suffix]
    return amount * Fraction(1000) ** _DECIMAL[suffix]


def _non_negative_int(amount: Fraction, value: QuantityInput, what: str) -> int:
    if amount < 0:
        raise QuantityError(f"{what} must not be negative, got {value!r}")
    n = math.ceil(amount)
    if n >= 2**63:
        raise QuantityError(f"{what} {value!r} is too large")
    return n


def parse_cpu(value: QuantityInput) -> int:
    """CPU in millicores: "500m" -> 500, "1" -> 1000, 0.5 -> 500."""
    return _non_negative_int(parse_quantity(value) * 1000, value, "cpu")


def parse_memory(value: QuantityInput) -> int:
    """Bytes: "64Mi" -> 67108864, "1G" -> 10**9, "1e3" -> 1000."""
    return _non_negative_int(parse_quantity(value), value, "memory")


def parse_count(value: QuantityInput) -> int:
    """A whole number of things (pods, GPUs): "110", 110, "1k"."""
    amount = parse_quantity(value)
    if amount.denominator != 1:
        raise QuantityError(f"expected a whole number, got {value!r}")
    return _non_negative_int(amount, value, "count")


def format_cpu(millis: int) -> str:
    if millis % 1000 == 0:
        return str(millis // 1000)
    return f"{millis}m"


def format_memory(n: int) -> str:
    if n == 0:
        return "0"
    for suffix, power in sorted(_BINARY.items(), key=lambda kv: -kv[1]):
        unit = 1024**power
        if n % unit == 0:
            return f"{n // unit}{suffix}"
    for suffix, power in sorted(_DECIMAL.items(), key=lambda kv: -kv[1]):
        if power <= 0:
            break
        unit = 1000**power
        if n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def format_count(n: int) -> str:
    return str(n)
