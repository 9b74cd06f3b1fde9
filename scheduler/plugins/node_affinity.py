"""Filter: `spec.nodeSelector` and required node affinity
(`requiredDuringSchedulingIgnoredDuringExecution`: terms ORed, expressions
ANDed, operators In, NotIn, Exists, DoesNotExist, Gt, Lt)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from scheduler.framework.cache import NodeView
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.events import NODE_ADD, Action, ClusterEvent, Resource
from scheduler.framework.interfaces import FilterPlugin
from scheduler.framework.status import SUCCESS, Status
from scheduler.framework.types import PodInfo

REASON = "node(s) didn't match Pod's node affinity/selector"


def required_match(pod: PodInfo, labels: Mapping[str, str]) -> bool:
    """The pure rule, shared with topology spread (which only counts such nodes)."""
    if any(labels.get(k) != v for k, v in pod.node_selector):
        return False
    if pod.required_affinity and not any(t.matches(labels) for t in pod.required_affinity):
        return False
    return True


class NodeAffinity(FilterPlugin):
    name = "NodeAffinity"
    static = True

    def events(self) -> Sequence[ClusterEvent]:
        return (NODE_ADD, ClusterEvent(Resource.NODE, Action.UPDATE_LABEL))

    def skip(self, pod: PodInfo) -> bool:
        return not pod.node_selector and not pod.required_affinity

    def signature(self, pod: PodInfo) -> Hashable:
        return (pod.node_selector, pod.required_affinity)

    def filter(self, state: CycleState, pod: PodInfo, node: NodeView) -> Status:
        if required_match(pod, node.info.labels):
            return SUCCESS
        return Status.unresolvable(REASON, plugin=self.name)
