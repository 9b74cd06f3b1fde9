"""Filter: hard topology spread (`whenUnsatisfiable: DoNotSchedule`).

For each constraint, count the pods of the pod's namespace that match the
constraint's selector in every domain (distinct values of `topologyKey` over
the nodes the pod's node selector/affinity admits). Placing the pod in a
domain must keep `count(domain) + 1 - min(counts) <= maxSkew`. Nodes without
the key are refused. With `topologyKey: kubernetes.io/hostname` this spreads
replicas one per VM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.framework.cache import BoolArray, Cache, IntArray, NodeView
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.events import Action, ClusterEvent, Resource
from scheduler.framework.interfaces import FilterPlugin
from scheduler.framework.status import SUCCESS, Status
from scheduler.framework.types import PodInfo, SpreadConstraint, WhenUnsatisfiable
from scheduler.plugins.node_affinity import required_match

MISSING_LABEL = "node(s) didn't match pod topology spread constraints (missing required label)"
SKEW = "node(s) didn't match pod topology spread constraints"


@dataclass(frozen=True)
class DomainCounts:
    """Per-constraint facts computed once per cycle."""

    constraint: SpreadConstraint
    ids: IntArray  # row -> domain index, -1 without the key
    values: list[str]  # domain index -> label value
    counts: IntArray  # domain index -> matching pods
    min_count: int
    self_match: int

    def count_of(self, value: str) -> int:
        try:
            return int(self.counts[self.values.index(value)])
        except ValueError:
            return 0


def domain_counts(
    pod: PodInfo, cache: Cache, constraints: Sequence[SpreadConstraint], *, respect_affinity: bool
) -> list[DomainCounts]:
    out: list[DomainCounts] = []
    for c in constraints:
        ids, values = cache.domains(c.topology_key)
        per_row = cache.matching_pods(pod.namespace, c.selector)
        eligible = ids >= 0
        if respect_affinity and (pod.node_selector or pod.required_affinity):
            aff: BoolArray = cache.memo(
                ("spread-affinity", pod.node_selector, pod.required_affinity),
                lambda: np.fromiter(
                    (required_match(pod, s.info.labels) for s in cache.states), np.bool_, cache.n
                ),
            )
            eligible = eligible & aff
        counts = np.bincount(ids[eligible], weights=per_row[eligible], minlength=len(values)).astype(np.int64)
        present = np.bincount(ids[eligible], minlength=len(values)) > 0
        min_count = int(counts[present].min()) if present.any() else 0
        out.append(DomainCounts(c, ids, values, counts, min_count, int(c.selector.matches(pod.labels))))
    return out


def _hard(pod: PodInfo) -> tuple[SpreadConstraint, ...]:
    return tuple(c for c in pod.spread if c.when_unsatisfiable != WhenUnsatisfiable.SCHEDULE_ANYWAY)


class PodTopologySpread(FilterPlugin):
    name = "PodTopologySpread"

    def events(self) -> Sequence[ClusterEvent]:
        return (
            ClusterEvent(Resource.POD, Action.ADD | Action.DELETE | Action.UPDATE_LABEL),
            ClusterEvent(Resource.NODE, Action.ADD | Action.DELETE | Action.UPDATE_LABEL),
        )

    def skip(self, pod: PodInfo) -> bool:
        return not _hard(pod)

    def pre_filter(self, state: CycleState, pod: PodInfo, cache: Cache) -> None:
        state.write(self.name, domain_counts(pod, cache, _hard(pod), respect_affinity=True))

    def filter(self, state: CycleState, pod: PodInfo, node: NodeView) -> Status:
        facts: list[DomainCounts] = state.read(self.name) or []
        for d in facts:
            value = node.info.labels.get(d.constraint.topology_key)
            if value is None:
                return Status.unresolvable(MISSING_LABEL, plugin=self.name)
            if d.count_of(value) + d.self_match - d.min_count > d.constraint.max_skew:
                return Status.unschedulable(SKEW, plugin=self.name)
        return SUCCESS

    def filter_batch(self, state: CycleState, pod: PodInfo, cache: Cache) -> BoolArray:
        facts: list[DomainCounts] = state.read(self.name) or []
        ok = np.ones(cache.n, np.bool_)
        for d in facts:
            has = d.ids >= 0
            counts = np.where(has, d.counts[np.where(has, d.ids, 0)] if len(d.values) else 0, 0)
            ok &= has & (counts + d.self_match - d.min_count <= d.constraint.max_skew)
        return ok
