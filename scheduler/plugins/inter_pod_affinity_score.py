"""Score: preferred podAffinity and podAntiAffinity.

A node scores the sum, over the pod's preferred terms, of the term's weight times
the matching pods in the node's domain (anti-affinity terms count negatively),
then the scores are scaled to 0..100 between the worst and the best node, as
Kubernetes' InterPodAffinity score does. Counting is `term_counts`.
"""

from __future__ import annotations

import numpy as np

from scheduler.framework.cache import Cache, FloatArray, NodeView
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import MAX_NODE_SCORE, ScorePlugin
from scheduler.framework.types import AffinityTerm, PodInfo
from scheduler.plugins.inter_pod_affinity import term_counts

Weighted = list[tuple[int, AffinityTerm, dict[str, int]]]


class InterPodAffinityScore(ScorePlugin):
    name = "InterPodAffinityScore"

    def skip(self, pod: PodInfo) -> bool:
        return not (pod.preferred_pod_affinity or pod.preferred_pod_anti_affinity)

    def pre_score(self, state: CycleState, pod: PodInfo, cache: Cache) -> None:
        terms: Weighted = [(w.weight, w.term, term_counts(w.term, cache)) for w in pod.preferred_pod_affinity]
        terms += [(-w.weight, w.term, term_counts(w.term, cache)) for w in pod.preferred_pod_anti_affinity]
        state.write(self.name, terms)

    def score(self, state: CycleState, pod: PodInfo, node: NodeView) -> float:
        terms: Weighted = state.read(self.name) or []
        total = 0.0
        for weight, t, counts in terms:
            value = node.info.labels.get(t.topology_key)
            if value is not None:
                total += weight * counts.get(value, 0)
        return total

    def normalize(self, state: CycleState, pod: PodInfo, scores: FloatArray) -> FloatArray:
        if not len(scores):
            return scores
        lo, hi = float(scores.min()), float(scores.max())
        if hi == lo:
            return np.zeros(len(scores), np.float64)
        out: FloatArray = MAX_NODE_SCORE * (scores - lo) / (hi - lo)
        return out
