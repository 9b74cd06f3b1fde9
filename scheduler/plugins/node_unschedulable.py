"""Filter: a cordoned node (`spec.unschedulable`) takes no new pods, unless the
pod tolerates the `node.kubernetes.io/unschedulable` taint (as DaemonSets do)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from cowpod.api import labels
from scheduler.framework.cache import NodeView
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.events import NODE_ADD, Action, ClusterEvent, Resource
from scheduler.framework.interfaces import FilterPlugin
from scheduler.framework.status import SUCCESS, Status
from scheduler.framework.types import PodInfo, Taint

UNSCHEDULABLE_TAINT = Taint(labels.UNSCHEDULABLE_TAINT, "", "NoSchedule")
REASON = "node(s) were unschedulable"


class NodeUnschedulable(FilterPlugin):
    name = "NodeUnschedulable"
    static = True

    def events(self) -> Sequence[ClusterEvent]:
        return (NODE_ADD, ClusterEvent(Resource.NODE, Action.UPDATE_CONDITION))

    def signature(self, pod: PodInfo) -> Hashable:
        return pod.tolerations

    def filter(self, state: CycleState, pod: PodInfo, node: NodeView) -> Status:
        if not node.info.unschedulable:
            return SUCCESS
        if any(t.tolerates(UNSCHEDULABLE_TAINT) for t in pod.tolerations):
            return SUCCESS
        return Status.unresolvable(REASON, plugin=self.name)
