"""PostFilter: preemption (Kubernetes' DefaultPreemption).

When a pod fits on no node, find a node where evicting pods of *strictly
lower* priority would let it pass every filter, and the fewest, least
important such pods (the victims):

    eligible?  policy is not Never; not already waiting on a node where its
               earlier victims are still terminating (they would be counted twice)
        |
        v
    every node the static filters admit (labels, taints, cordon, readiness:
    no eviction changes those) that holds a lower-priority pod
        |  select_victims: remove every lower-priority pod; still no fit -> skip;
        |  add them back most important first, keeping each whose return
        |  still fits ("reprieve"); the rest are the victims
        v
    pick_candidate: lowest highest-victim priority, then smallest sum of
    victim priorities, then fewest victims, then the node whose most
    important victims started latest, then node name

Kubernetes first prefers nodes with the fewest PodDisruptionBudget
violations; cowpod has no PodDisruptionBudget, so that step is absent.

Pods already terminating are never victims, but lower-priority ones are
counted as gone when checking the fit (they are leaving anyway); a node
where only they stand in the way is nominated with no victims. Pods the
scheduler has assumed but not yet bound are not victims either (their bind
is in flight). Filters whose answer is computed cluster-wide before the
cycle (topology spread, inter-pod affinity) see the victims as still there,
so preemption resolves resource and host-port conflicts, never spread or
affinity ones (Kubernetes updates those through AddPod/RemovePod; cowpod
errs on the side of not evicting).

Pure: the plugin only answers; the scheduler nominates the pod and deletes
the victims (`Scheduler._nominate`, then `Scheduler.commit_preemption`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cowpod.api.priority import may_preempt
from scheduler.framework.cache import Cache, NodeState, NodeView
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import CLEAR, FilterHandle, Nomination, PostFilterPlugin
from scheduler.framework.types import NodeName, PodInfo, PodUID

# Kubernetes' defaults: look at 10% of the nodes but at least 100 before picking.
MIN_CANDIDATE_NODES_PERCENTAGE = 10
MIN_CANDIDATE_NODES_ABSOLUTE = 100


@dataclass(frozen=True, slots=True)
class Candidate:
    node: NodeName
    victims: tuple[PodInfo, ...]  # most important first

    def order(self) -> tuple[int, int, int, float, str]:
        """Smaller is better (see the module doc). A victim-free candidate wins outright."""
        if not self.victims:
            return (-(1 << 62), 0, 0, 0.0, self.node)
        top = self.victims[0].priority
        # The latest start among the most important victims: evict what ran least long.
        latest = max(v.created for v in self.victims if v.priority == top)
        return (top, sum(v.priority for v in self.victims), len(self.victims), -latest, self.node)


def _importance(p: PodInfo) -> tuple[int, float]:
    """Sort key, most important first: higher priority, then older."""
    return (-p.priority, p.created)


def _without(node: NodeView, gone: set[PodUID]) -> NodeState:
    """A copy of `node` with the pods whose uid is in `gone` removed."""
    s = NodeState(node.info, -1)
    for p in node.pods.values():
        if p.uid not in gone:
            s.add(p)
    return s


def select_victims(
    handle: FilterHandle,
    state: CycleState,
    pod: PodInfo,
    node: NodeView,
    evictable: Iterable[PodInfo],
    leaving: Iterable[PodInfo] = (),
) -> tuple[PodInfo, ...] | None:
    """The fewest, least important of `evictable` whose removal (with `leaving`'s) makes
    `pod` pass every filter on `node`; None if even removing all does not."""
    potential = sorted(evictable, key=_importance)
    gone = {p.uid for p in potential} | {p.uid for p in leaving}
    trial = _without(node, gone)
    if not handle.run_filters(state, pod, trial).ok:
        return None
    victims: list[PodInfo] = []
    for p in potential:  # reprieve the most important first
        trial.add(p)
        if not handle.run_filters(state, pod, trial).ok:
            trial.remove(p)
            victims.append(p)
    return tuple(victims)


def eligible(pod: PodInfo, cache: Cache) -> bool:
    """May `pod` preempt now? Not with policy Never; not while lower-priority pods on the
    node it was nominated for are still terminating (Kubernetes' PodEligibleToPreemptOthers:
    its previous victims are on their way out, and evicting more would double count)."""
    if not may_preempt(pod.preemption_policy):
        return False
    if pod.nominated_node:
        s = cache.node(pod.nominated_node)
        if s is not None and any(p.terminating and p.priority < pod.priority for p in s.pods.values()):
            return False
    return True


def find_candidates(pod: PodInfo, cache: Cache, handle: FilterHandle) -> list[Candidate]:
    lowest = cache.lowest_priority()
    if cache.n == 0 or lowest is None or lowest >= pod.priority:
        return []  # nothing below it anywhere: the common case costs nothing
    static_ok = handle.static_feasible(pod, cache)
    state = handle.prepare_filters(pod, cache)
    want = max(MIN_CANDIDATE_NODES_ABSOLUTE, cache.n * MIN_CANDIDATE_NODES_PERCENTAGE // 100)
    out: list[Candidate] = []
    for s in cache.states:
        if not static_ok[s.row]:
            continue
        lower = [p for p in s.pods.values() if p.priority < pod.priority and p.uid != pod.uid]
        if not lower:
            continue
        evictable = [p for p in lower if not p.terminating and not cache.is_assumed(p.uid)]
        leaving = [p for p in lower if p.terminating]
        victims = select_victims(handle, state, pod, s, evictable, leaving)
        if victims is None or (not victims and not leaving):
            continue  # no fit at all, or nothing to wait for (another filter's doing)
        out.append(Candidate(s.info.name, victims))
        if not victims or len(out) >= want:
            break
    return out


def pick_candidate(candidates: Iterable[Candidate]) -> Candidate | None:
    return min(candidates, key=Candidate.order, default=None)


class DefaultPreemption(PostFilterPlugin):
    name = "DefaultPreemption"

    def post_filter(self, pod: PodInfo, cache: Cache, handle: FilterHandle) -> Nomination | None:
        """None while the pod may not preempt (it keeps any nomination: its victims are
        leaving); CLEAR when no node would do (as Kubernetes, the nomination goes)."""
        if not eligible(pod, cache):
            return None
        best = pick_candidate(find_candidates(pod, cache, handle))
        return CLEAR if best is None else Nomination(best.node, best.victims)
