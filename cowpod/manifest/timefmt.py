"""RFC 3339 timestamps, as Kubernetes prints them: `2026-11-25T10:00:00Z`.

Input may carry a fraction and an offset (`2026-11-25T11:00:00.25+01:00`);
output is UTC in whole seconds.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re

from google.protobuf.timestamp_pb2 import Timestamp

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})$"
)


def parse_rfc3339(text: str) -> Timestamp:
    """Raise ValueError with a user-facing reason if `text` is not RFC 3339."""
    m = _RFC3339.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not an RFC 3339 time (e.g. 2026-11-25T10:00:00Z)")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac, zone = m.group(7), m.group(8)
    try:
        when = dt.datetime(year, month, day, hour, minute, min(second, 59), tzinfo=dt.UTC)
    except ValueError as e:
        raise ValueError(f"{text!r}: {e}") from None
    offset = 0
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        offset = sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    seconds = calendar.timegm(when.timetuple()) - offset
    nanos = int((frac or "").ljust(9, "0")) if frac else 0
    return Timestamp(seconds=seconds, nanos=nanos)


def format_rfc3339(ts: Timestamp) -> str:
    """Whole seconds, as Kubernetes prints `metav1.Time`: fixed width, so the strings
    sort like the times (a fraction on some and not others would not)."""
    when = dt.datetime.fromtimestamp(ts.seconds, tz=dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def to_seconds(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9
