"""Allocation formulas shared by the resource scores, written once for numpy
arrays so the per-node method and the batch method are the same code."""

from __future__ import annotations

from typing import Any

import numpy as np

from scheduler.framework.cache import Cache, FloatArray, IntArray, NodeView
from scheduler.framework.interfaces import MAX_NODE_SCORE
from scheduler.framework.types import PodInfo

Columns = tuple[Any, Any, Any, Any]


def node_columns(pod: PodInfo, node: NodeView) -> Columns:
    """(alloc cpu, used cpu incl. the pod, alloc mem, used mem incl. the pod) for one node."""
    a, r = node.info.allocatable, node.nonzero_requested
    return (
        np.array([a.cpu_millis], np.float64),
        np.array([r.cpu_millis + pod.nonzero_cpu], np.float64),
        np.array([a.memory_bytes], np.float64),
        np.array([r.memory_bytes + pod.nonzero_memory], np.float64),
    )


def rows_columns(pod: PodInfo, cache: Cache, rows: IntArray) -> Columns:
    return (
        cache.col("alloc_cpu")[rows].astype(np.float64),
        cache.col("nz_cpu")[rows] + float(pod.nonzero_cpu),
        cache.col("alloc_mem")[rows].astype(np.float64),
        cache.col("nz_mem")[rows] + float(pod.nonzero_memory),
    )


def fraction(alloc: FloatArray, used: FloatArray) -> FloatArray:
    """used / alloc in [0, 1]; a resource the node does not have counts as full."""
    safe = np.where(alloc > 0, alloc, 1.0)
    return np.where(alloc > 0, np.clip(used / safe, 0.0, 1.0), 1.0)


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
