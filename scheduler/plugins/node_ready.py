"""Filter: only nodes whose Ready condition is True take new pods.

A node whose agent stopped heartbeating is marked NotReady by the
controller's node lifecycle; placing pods there would leave them Pending."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from scheduler.framework.cache import NodeView
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.events import NODE_ADD, Action, ClusterEvent, Resource
from scheduler.framework.interfaces import FilterPlugin
from scheduler.framework.status import SUCCESS, Status
from scheduler.framework.types import PodInfo

REASON = "node(s) were not ready"


class NodeReady(FilterPlugin):
    name = "NodeReady"
    static = True

    def events(self) -> Sequence[ClusterEvent]:
        return (NODE_ADD, ClusterEvent(Resource.NODE, Action.UPDATE_CONDITION))

    def signature(self, pod: PodInfo) -> Hashable:
        return ()

    def filter(self, state: CycleState, pod: PodInfo, node: NodeView) -> Status:
        return SUCCESS if node.info.ready else Status.unresolvable(REASON, plugin=self.name)
