"""Score: the sum of the weights of the pod's preferred node-affinity terms
the node matches, scaled so the best node gets 100."""

from __future__ import annotations

from collections.abc import Hashable

from scheduler.framework.cache import FloatArray, NodeView
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import ScorePlugin, normalize_max
from scheduler.framework.types import PodInfo


class PreferredNodeAffinity(ScorePlugin):
    name = "PreferredNodeAffinity"
    static = True

    def skip(self, pod: PodInfo) -> bool:
        return not pod.preferred_affinity

    def signature(self, pod: PodInfo) -> Hashable:
        return pod.preferred_affinity

    def score(self, state: CycleState, pod: PodInfo, node: NodeView) -> float:
        labels = node.info.labels
        return float(sum(p.weight for p in pod.preferred_affinity if p.term.matches(labels)))

    def normalize(self, state: CycleState, pod: PodInfo, scores: FloatArray) -> FloatArray:
        return normalize_max(scores)
