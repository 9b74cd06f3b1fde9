"""Score: fewer untolerated `PreferNoSchedule` taints is better."""

from __future__ import annotations

from collections.abc import Hashable

from scheduler.framework.cache import FloatArray, NodeView
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import ScorePlugin, normalize_max
from scheduler.framework.types import PodInfo, TaintEffect


class TaintTolerationPreference(ScorePlugin):
    name = "TaintTolerationPreference"
    static = True

    def signature(self, pod: PodInfo) -> Hashable:
        return pod.tolerations

    def score(self, state: CycleState, pod: PodInfo, node: NodeView) -> float:
        return float(
            sum(
                1
                for taint in node.info.taints
                if taint.effect == TaintEffect.PREFER_NO_SCHEDULE
                and not any(t.tolerates(taint) for t in pod.tolerations)
            )
        )

    def normalize(self, state: CycleState, pod: PodInfo, scores: FloatArray) -> FloatArray:
        return normalize_max(scores, reverse=True)
