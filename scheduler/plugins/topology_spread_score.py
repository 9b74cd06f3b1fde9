"""Score: soft topology spread (`whenUnsatisfiable: ScheduleAnyway`) prefers
the domains holding the fewest matching pods; nodes without the key score 0."""

from __future__ import annotations

import numpy as np

from scheduler.framework.cache import Cache, FloatArray, IntArray, NodeView
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import MAX_NODE_SCORE, ScorePlugin
from scheduler.framework.types import PodInfo, SpreadConstraint, WhenUnsatisfiable
from scheduler.plugins.topology_spread import DomainCounts, domain_counts


def _soft(pod: PodInfo) -> tuple[SpreadConstraint, ...]:
    return tuple(c for c in pod.spread if c.when_unsatisfiable == WhenUnsatisfiable.SCHEDULE_ANYWAY)


class PodTopologySpreadScore(ScorePlugin):
    name = "PodTopologySpreadScore"

    def skip(self, pod: PodInfo) -> bool:
        return not _soft(pod)

    def pre_score(self, state: CycleState, pod: PodInfo, cache: Cache) -> None:
        state.write(self.name, domain_counts(pod, cache, _soft(pod), respect_affinity=False))

    def score(self, state: CycleState, pod: PodInfo, node: NodeView) -> float:
        facts: list[DomainCounts] = state.read(self.name) or []
        total = 0.0
        for d in facts:
            value = node.info.labels.get(d.constraint.topology_key)
            if value is None:
                return float("nan")
            total += d.count_of(value)
        return total

    def score_batch(self, state: CycleState, pod: PodInfo, cache: Cache, rows: IntArray) -> FloatArray:
        facts: list[DomainCounts] = state.read(self.name) or []
        total = np.zeros(len(rows), np.float64)
        for d in facts:
            ids = d.ids[rows]
            has = ids >= 0
            got = d.counts[np.where(has, ids, 0)] if len(d.values) else np.zeros(len(rows), np.int64)
            total += np.where(has, got, np.nan)
        return total

    def normalize(self, state: CycleState, pod: PodInfo, scores: FloatArray) -> FloatArray:
        valid = ~np.isnan(scores)
        out = np.zeros(len(scores), np.float64)
        if not valid.any():
            return out
        lo, hi = float(scores[valid].min()), float(scores[valid].max())
        if hi == lo:
            out[valid] = MAX_NODE_SCORE
        else:
            out[valid] = MAX_NODE_SCORE * (hi - scores[valid]) / (hi - lo)
        return out
