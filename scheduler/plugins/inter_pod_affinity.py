"""Filter: required podAffinity and podAntiAffinity (Kubernetes' InterPodAffinity).

A term names pods (label selector, namespaces) and a `topologyKey`: a domain is
the set of nodes sharing that label's value — one node for
`kubernetes.io/hostname`, a VM class for `cowpod.io/class`, a zone for
`topology.kubernetes.io/zone` where nodes carry it. For a candidate node:

- podAffinity: every term has a matching pod in the node's domain (a node
  without the key is refused, unresolvably). The first pod of a group passes
  where no pod matches yet, if it matches its own terms (Kubernetes' rule, so a
  self-affine Deployment can start).
- podAntiAffinity: no term has a matching pod in the node's domain.
- existing pods' podAntiAffinity, symmetrically: the node is not in the domain
  of a placed pod whose anti-affinity term selects the new pod.

Counting is `term_counts` (pure, shared with the score plugin).
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.framework.cache import BoolArray, Cache, NodeView
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.events import Action, ClusterEvent, Resource
from scheduler.framework.interfaces import FilterPlugin
from scheduler.framework.status import SUCCESS, Status
from scheduler.framework.types import AffinityTerm, PodInfo

AFFINITY = "node(s) didn't match pod affinity rules"
ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"


def term_counts(term: AffinityTerm, cache: Cache) -> dict[str, int]:
    """Topology value -> how many placed pods `term` selects on nodes with that value."""
    ids, values = cache.domains(term.topology_key)
    if term.namespaces:
        per_row = sum((cache.matching_pods(ns, term.selector) for ns in term.namespaces),
                      np.zeros(cache.n, np.int64))
    else:  # every namespace: no incremental counter for that; count directly
        per_row = np.fromiter((sum(1 for p in s.pods.values() if term.selects(p)) for s in cache.states),
                              np.int64, cache.n)
    has = ids >= 0
    counts = np.bincount(ids[has], weights=per_row[has], minlength=len(values))
    return {v: int(counts[i]) for i, v in enumerate(values) if counts[i] > 0}


@dataclass(frozen=True)
class Facts:
    affinity: list[tuple[AffinityTerm, dict[str, int]]]
    anti: list[tuple[AffinityTerm, dict[str, int]]]
    # No placed pod matches any affinity term, and the pod matches them all itself.
    first_of_group: bool
    forbidden: frozenset[tuple[str, str]]  # (topologyKey, value) of existing pods' anti-affinity


def facts(pod: PodInfo, cache: Cache) -> Facts:
    affinity = [(t, term_counts(t, cache)) for t in pod.pod_affinity]
    anti = [(t, term_counts(t, cache)) for t in pod.pod_anti_affinity]
    first = bool(affinity) and not any(c for _, c in affinity) and all(t.selects(pod) for t, _ in affinity)
    forbidden = set()
    for other, node in cache.anti_affinity_pods():
        for t in other.pod_anti_affinity:
            if t.selects(pod):
                value = node.info.labels.get(t.topology_key)
                if value is not None:
                    forbidden.add((t.topology_key, value))
    return Facts(affinity, anti, first, frozenset(forbidden))


def check(f: Facts, labels: Mapping[str, str]) -> Status:
    """The verdict for one node with these labels."""
    for key, value in f.forbidden:
        if labels.get(key) == value:
            return Status.unschedulable(EXISTING_ANTI_AFFINITY, plugin=InterPodAffinity.name)
    for t, counts in f.anti:
        v = labels.get(t.topology_key)
        if v is not None and counts.get(v, 0) > 0:
            return Status.unschedulable(ANTI_AFFINITY, plugin=InterPodAffinity.name)
    for t, counts in f.affinity:
        got = labels.get(t.topology_key)
        if got is None:
            return Status.unresolvable(AFFINITY, plugin=InterPodAffinity.name)
        if counts.get(got, 0) == 0 and not f.first_of_group:
            return Status.unschedulable(AFFINITY, plugin=InterPodAffinity.name)
    return SUCCESS


class InterPodAffinity(FilterPlugin):
    name = "InterPodAffinity"

    def events(self) -> Sequence[ClusterEvent]:
        return (
            ClusterEvent(Resource.POD, Action.ADD | Action.DELETE | Action.UPDATE_LABEL),
            ClusterEvent(Resource.NODE, Action.ADD | Action.UPDATE_LABEL),
        )

    def pre_filter(self, state: CycleState, pod: PodInfo, cache: Cache) -> None:
        state.write(self.name, facts(pod, cache))

    def filter(self, state: CycleState, pod: PodInfo, node: NodeView) -> Status:
        f: Facts | None = state.read(self.name)
        return SUCCESS if f is None else check(f, node.info.labels)

    def filter_batch(self, state: CycleState, pod: PodInfo, cache: Cache) -> BoolArray:
        """`check` over every row at once: per term, which domains are taken (or held), then
        each row by its domain index (cache.domains)."""
        ok = np.ones(cache.n, np.bool_)
        f: Facts | None = state.read(self.name)
        if f is None:
            return ok
        for key, value in f.forbidden:
            ok &= ~_rows_in(cache, key, {value})
        for t, counts in f.anti:  # counts holds only domains with a matching pod
            ok &= ~_rows_in(cache, t.topology_key, counts)
        for t, counts in f.affinity:
            if f.first_of_group:
                ok &= cache.domains(t.topology_key)[0] >= 0
            else:
                ok &= _rows_in(cache, t.topology_key, counts)
        return ok


def _rows_in(cache: Cache, key: str, domains: Container[str]) -> BoolArray:
    """Rows whose value of `key` is one of `domains` (rows without the key: False)."""
    ids, values = cache.domains(key)
    if not values:
        return np.zeros(cache.n, np.bool_)
    per_domain = np.fromiter((v in domains for v in values), np.bool_, len(values))
    has = ids >= 0
    return has & per_domain[np.where(has, ids, 0)]
