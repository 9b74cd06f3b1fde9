"""argparse types the commands share: a bad number exits 2 naming the flag and why."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def whole_number(minimum: int) -> Callable[[str], int]:
    """An int flag of at least `minimum` (`type=whole_number(1)`)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from err
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return n

    return parse
