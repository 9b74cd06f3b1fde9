"""Filter: the pod's host ports are free on the node (same port and protocol,
overlapping host IP: "" and 0.0.0.0 overlap every address)."""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.framework.cache import NodeView
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.events import NODE_ADD, POD_DELETE, ClusterEvent
from scheduler.framework.interfaces import FilterPlugin
from scheduler.framework.status import SUCCESS, Status
from scheduler.framework.types import PodInfo

REASON = "node(s) didn't have free ports for the requested pod ports"


class NodePorts(FilterPlugin):
    name = "NodePorts"

    def events(self) -> Sequence[ClusterEvent]:
        return (NODE_ADD, POD_DELETE)

    def skip(self, pod: PodInfo) -> bool:
        return not pod.host_ports

    def filter(self, state: CycleState, pod: PodInfo, node: NodeView) -> Status:
        used = node.ports
        if any(want.conflicts(have) for want in pod.host_ports for have in used):
            return Status.unschedulable(REASON, plugin=self.name)
        return SUCCESS
