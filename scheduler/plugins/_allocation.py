"""Allocation formulas shared by the resource scores, written once for numpy
arrays so the per-node method and the batch method are the same code."""

from __future__ import annotations

from typing import Any

import numpy as np

from scheduler.framework.cache import Cache, FloatArray, IntArray, NodeView
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import MAX_NODE_SCORE
from scheduler.framework.types import PodInfo

Columns = tuple[Any, Any, Any, Any]
_KEY = "allocation-columns"


def node_columns(pod: PodInfo, node: NodeView) -> Columns:
    """(alloc cpu, used cpu incl. the pod, alloc mem, used mem incl. the pod) for one node."""
    a, r = node.info.allocatable, node.nonzero_requested
    return (
        np.array([a.cpu_millis], np.float64),
        np.array([r.cpu_millis + pod.nonzero_cpu], np.float64),
        np.array([a.memory_bytes], np.float64),
        np.array([r.memory_bytes + pod.nonzero_memory], np.float64),
    )


def rows_columns(pod: PodInfo, cache: Cache, rows: IntArray, state: CycleState | None = None) -> Columns:
    """The same for `rows`; memoised in the cycle state, since three scores want it."""
    if state is not None:
        hit = state.read(_KEY)
        if hit is not None and hit[0] is rows:
            return hit[1]  # type: ignore[no-any-return]
    cols = (
        cache.col("alloc_cpu")[rows].astype(np.float64),
        cache.col("nz_cpu")[rows] + float(pod.nonzero_cpu),
        cache.col("alloc_mem")[rows].astype(np.float64),
        cache.col("nz_mem")[rows] + float(pod.nonzero_memory),
    )
    if state is not None:
        state.write(_KEY, (rows, cols))
    return cols


def fraction(alloc: FloatArray, used: FloatArray) -> FloatArray:
    """used / alloc, capped at 1; a resource the node does not have (alloc 0) counts as full.
    `used` includes the pod's non-zero request, so it is never 0 and 0/0 cannot happen."""
    with np.errstate(divide="ignore"):
        out: FloatArray = np.minimum(used / alloc, 1.0)
    return out


def least_allocated(cols: Columns) -> FloatArray:
    ac, uc, am, um = cols
    return MAX_NODE_SCORE * (2.0 - fraction(ac, uc) - fraction(am, um)) / 2.0


def most_allocated(cols: Columns) -> FloatArray:
    ac, uc, am, um = cols
    return MAX_NODE_SCORE * (fraction(ac, uc) + fraction(am, um)) / 2.0


def balanced(cols: Columns) -> FloatArray:
    ac, uc, am, um = cols
    # With two resources the standard deviation is half the difference.
    return MAX_NODE_SCORE * (1.0 - np.abs(fraction(ac, uc) - fraction(am, um)) / 2.0)
