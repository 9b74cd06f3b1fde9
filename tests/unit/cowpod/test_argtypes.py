"""Shared argparse types: the flag's reason, not a traceback."""

from __future__ import annotations

import argparse

import pytest

from cowpod.argtypes import whole_number


def test_whole_number_takes_the_minimum_and_above() -> None:
    assert whole_number(0)("0") == 0
    assert whole_number(1)("12") == 12


@pytest.mark.parametrize(("minimum", "text", "why"), [
    (1, "0", "must be at least 1"),
    (0, "-3", "must be at least 0"),
    (0, "two", "'two' is not a whole number"),
    (0, "1.5", "'1.5' is not a whole number"),
])
def test_whole_number_refuses_with_the_reason(minimum: int, text: str, why: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=why):
        whole_number(minimum)(text)
