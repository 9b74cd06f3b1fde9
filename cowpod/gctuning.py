"""Garbage-collector settings for cowpod's long-running servers (controller, scheduler).

CPython collects its youngest generation after every 700 net allocations of container
objects, and the whole heap after ten of those have been promoted ten times. The
controller and the scheduler allocate a burst of small objects per watch event (decoded
pods, dataclasses, tuples, futures) while holding large, long-lived caches (the
scheduler's pod table, the controller's informers and watch buffers), so the collector
ran constantly and its full passes walked those caches again and again: loading 150,000
pods into the scheduler's cache spent 1.5 s of 9.6 s in the collector with the default
thresholds, 0.14 s of 7.2 s with these (docs/scheduler.md, "Controller CPU per pod").
Nearly everything these processes free is freed
by reference counting; the collector is only for cycles, which a larger young generation
holds a little longer (tens of thousands of objects at most).
"""

from __future__ import annotations

import gc

# (young generation, middle, old): collections of the younger generation between two of the next.
SERVER_GC_THRESHOLDS = (50_000, 20, 100)


def tune_for_server() -> None:
    """Apply `SERVER_GC_THRESHOLDS` to this process (call once, from a server's main)."""
    gc.set_threshold(*SERVER_GC_THRESHOLDS)


__all__ = ["SERVER_GC_THRESHOLDS", "tune_for_server"]
