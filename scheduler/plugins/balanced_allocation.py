"""Score: Prefer nodes whose CPU and memory would be used in equal proportion, so neither is stranded.

Uses the pods' non-zero requests (100m CPU / 200Mi when a pod asks for
nothing), so that pods without requests still count."""

from __future__ import annotations

from scheduler.framework.cache import Cache, FloatArray, IntArray, NodeView
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import ScorePlugin
from scheduler.framework.types import PodInfo
from scheduler.plugins._allocation import balanced, node_columns, rows_columns


class NodeResourcesBalancedAllocation(ScorePlugin):
    name = "NodeResourcesBalancedAllocation"

    def score(self, state: CycleState, pod: PodInfo, node: NodeView) -> float:
        return float(balanced(node_columns(pod, node))[0])

    def score_batch(self, state: CycleState, pod: PodInfo, cache: Cache, rows: IntArray) -> FloatArray:
        return balanced(rows_columns(pod, cache, rows, state))
