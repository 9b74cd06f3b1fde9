"""Score: Prefer the fullest nodes (bin packing: empty VMs can be given back to the fleet).

Uses the pods' non-zero requests (100m CPU / 200Mi when a pod asks for
nothing), so that pods without requests still count."""

from __future__ import annotations

from scheduler.framework.cache import Cache, FloatArray, IntArray, NodeView
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import ScorePlugin
from scheduler.framework.types import PodInfo
from scheduler.plugins._allocation import most_allocated, node_columns, rows_columns


class NodeResourcesMostAllocated(ScorePlugin):
    name = "NodeResourcesMostAllocated"

    def score(self, state: CycleState, pod: PodInfo, node: NodeView) -> float:
        return float(most_allocated(node_columns(pod, node))[0])

    def score_batch(self, state: CycleState, pod: PodInfo, cache: Cache, rows: IntArray) -> FloatArray:
        return most_allocated(rows_columns(pod, cache, rows, state))
