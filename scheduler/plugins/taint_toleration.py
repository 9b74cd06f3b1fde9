"""Filter: every NoSchedule (and NoExecute) taint on the node is tolerated by
the pod. PreferNoSchedule taints only lower the score
(`TaintTolerationPreference`); evicting running pods for NoExecute is the
controller's node lifecycle, not the scheduler's."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from scheduler.framework.cache import NodeView
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.events import NODE_ADD, Action, ClusterEvent, Resource
from scheduler.framework.interfaces import FilterPlugin
from scheduler.framework.status import SUCCESS, Status
from scheduler.framework.types import PodInfo, Taint, TaintEffect

_HARD = (TaintEffect.NO_SCHEDULE, TaintEffect.NO_EXECUTE)


def first_untolerated(pod: PodInfo, taints: Sequence[Taint]) -> Taint | None:
    for taint in taints:
        if taint.effect in _HARD and not any(t.tolerates(taint) for t in pod.tolerations):
            return taint
    return None


class TaintToleration(FilterPlugin):
    name = "TaintToleration"
    static = True

    def events(self) -> Sequence[ClusterEvent]:
        return (NODE_ADD, ClusterEvent(Resource.NODE, Action.UPDATE_TAINT))

    def signature(self, pod: PodInfo) -> Hashable:
        return pod.tolerations

    def filter(self, state: CycleState, pod: PodInfo, node: NodeView) -> Status:
        taint = first_untolerated(pod, node.info.taints)
        if taint is None:
            return SUCCESS
        return Status.unresolvable(f"node(s) had untolerated taint {taint}", plugin=self.name)
