"""Quantities: Kubernetes strings <-> canonical integers."""

from __future__ import annotations

import pytest

from cowpod.api.quantity import (
    QuantityError,
    format_cpu,
    format_memory,
    parse_count,
    parse_cpu,
    parse_memory,
)


@pytest.mark.parametrize(
    ("text", "millis"),
    [
        ("500m", 500),
        ("1", 1000),
        ("0.5", 500),
        (0.5, 500),
        (2, 2000),
        ("2.5", 2500),
        ("0.0001", 1),  # finer than 1m rounds up, as Kubernetes does
        ("1e-1", 100),
        ("100u", 1),
        ("0", 0),
        (" 250m ", 250),
        ("1k", 1_000_000),
    ],
)
def test_parse_cpu(text: str | float, millis: int) -> None:
    assert parse_cpu(text) == millis


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("64Mi", 64 * 2**20),
        ("1Gi", 2**30),
        ("1G", 10**9),
        ("128974848", 128974848),
        (128974848, 128974848),
        ("1e3", 1000),
        ("1E3", 1000),
        ("129e6", 129_000_000),
        ("1.5Gi", 1610612736),
        ("123Mi", 128974848),
        ("1k", 1000),
        ("1Ki", 1024),
        ("0.5", 1),  # half a byte rounds up
        ("1Ti", 2**40),
    ],
)
def test_parse_memory(text: str | int, n: int) -> None:
    assert parse_memory(text) == n


@pytest.mark.parametrize(
    "bad",
    ["", "abc", "64MB", "1.2.3", "Mi", "1 Gi", "--1", "1e", "0x10", True, None, [], "1e999"],
)
def test_bad_quantities_are_errors_with_examples(bad: object) -> None:
    with pytest.raises(QuantityError) as e:
        parse_memory(bad)  # type: ignore[arg-type]
    assert str(e.value)


def test_negative_is_an_error() -> None:
    with pytest.raises(QuantityError, match="negative"):
        parse_cpu("-1")
    with pytest.raises(QuantityError, match="negative"):
        parse_memory("-64Mi")


def test_count_must_be_whole() -> None:
    assert parse_count("110") == 110
    assert parse_count(3) == 3
    with pytest.raises(QuantityError, match="whole"):
        parse_count("1.5")


@pytest.mark.parametrize(
    ("millis", "text"), [(500, "500m"), (1000, "1"), (2500, "2500m"), (0, "0"), (16000, "16")]
)
def test_format_cpu(millis: int, text: str) -> None:
    assert format_cpu(millis) == text
    assert parse_cpu(text) == millis


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (64 * 2**20, "64Mi"),
        (2**30, "1Gi"),
        (10**9, "1G"),
        (128974848, "123Mi"),
        (1000, "1k"),
        (1024000, "1000Ki"),
        (1023, "1023"),
        (0, "0"),
        (3 * 2**40, "3Ti"),
    ],
)
def test_format_memory_is_canonical_and_parses_back(n: int, text: str) -> None:
    assert format_memory(n) == text
    assert parse_memory(text) == n


@pytest.mark.parametrize("n", [1, 7, 999, 1000, 1001, 1024, 65536, 10**12 + 1, 5 * 2**50, 2**62])
def test_render_then_parse_is_identity(n: int) -> None:
    assert parse_memory(format_memory(n)) == n
    assert parse_cpu(format_cpu(n)) == n
