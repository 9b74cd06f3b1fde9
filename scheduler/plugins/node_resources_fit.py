"""Filter: the pod's CPU, memory, ephemeral-storage and pod-count requests fit
in what the node has left (allocatable minus the requests of the pods bound or
assumed there).

A request of zero for a resource is never refused, even on an overcommitted
node, as in Kubernetes. A node that reports no ephemeral-storage (0: an older
agent, a hollow node) is not checked for it, as the controller's bind check and
the agent's admission do not check it either: refusing there would strand every
pod that asks for disk on nodes that never measured theirs."""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.framework.cache import BoolArray, Cache, NodeView
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.events import NODE_ADD, POD_DELETE, Action, ClusterEvent, Resource
from scheduler.framework.interfaces import FilterPlugin
from scheduler.framework.status import SUCCESS, Status
from scheduler.framework.types import PodInfo

INSUFFICIENT_CPU = "Insufficient cpu"
INSUFFICIENT_MEMORY = "Insufficient memory"
INSUFFICIENT_EPHEMERAL_STORAGE = "Insufficient ephemeral-storage"
TOO_MANY_PODS = "Too many pods"


class NodeResourcesFit(FilterPlugin):
    name = "NodeResourcesFit"

    def events(self) -> Sequence[ClusterEvent]:
        return (NODE_ADD, ClusterEvent(Resource.NODE, Action.UPDATE_ALLOCATABLE), POD_DELETE)

    def filter(self, state: CycleState, pod: PodInfo, node: NodeView) -> Status:
        alloc, used, want = node.info.allocatable, node.requested, pod.requests
        reasons: list[str] = []
        if used.pods + 1 > alloc.pods:
            reasons.append(TOO_MANY_PODS)
        if want.cpu_millis > 0 and want.cpu_millis > alloc.cpu_millis - used.cpu_millis:
            reasons.append(INSUFFICIENT_CPU)
        if want.memory_bytes > 0 and want.memory_bytes > alloc.memory_bytes - used.memory_bytes:
            reasons.append(INSUFFICIENT_MEMORY)
        disk = want.ephemeral_storage_bytes
        if disk > 0 and alloc.ephemeral_storage_bytes > 0 and (
            disk > alloc.ephemeral_storage_bytes - used.ephemeral_storage_bytes
        ):
            reasons.append(INSUFFICIENT_EPHEMERAL_STORAGE)
        return Status.unschedulable(*reasons, plugin=self.name) if reasons else SUCCESS

    def filter_batch(self, state: CycleState, pod: PodInfo, cache: Cache) -> BoolArray:
        want = pod.requests
        ok: BoolArray = cache.col("req_pods") + 1 <= cache.col("alloc_pods")
        if want.cpu_millis > 0:
            ok &= cache.col("alloc_cpu") - cache.col("req_cpu") >= want.cpu_millis
        if want.memory_bytes > 0:
            ok &= cache.col("alloc_mem") - cache.col("req_mem") >= want.memory_bytes
        if want.ephemeral_storage_bytes > 0:
            alloc_disk = cache.col("alloc_disk")
            ok &= (alloc_disk == 0) | (alloc_disk - cache.col("req_disk") >= want.ephemeral_storage_bytes)
        return ok
