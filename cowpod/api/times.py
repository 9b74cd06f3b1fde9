"""The API's time type (`google.protobuf.Timestamp`) to and from epoch seconds.

Every process stamps and reads times through these two, so a float's rounding
is done one way everywhere (nanoseconds, truncated)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp


def to_timestamp(seconds: float) -> Timestamp:
    """Epoch seconds as a Timestamp."""
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def seconds_of(ts: Timestamp) -> float:
    """A Timestamp as epoch seconds (0.0 for an unset one)."""
    return ts.seconds + ts.nanos / 1e9
