"""The autoscaler's view of the cluster: small frozen values the planner reads.

`observe` builds these from the API objects at the edge, so the planner never
touches protobuf except to hand a pod and a node to the scheduler's fit check
(the `proto` fields, opaque to the planner).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cowpod.api.ids import ClassName, NodeName, VMName
from cowpod.api.phases import VMPhase
from cowpod.api.resources import Resources
from cowpod.v1 import node_pb2, pod_pb2

# The labels and taints the autoscaler reads and writes are in cowpod.api.labels.

@dataclass(frozen=True, order=True)
class PodRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


HostPort = tuple[str, int, str]
"""(host ip, port, protocol): two pods asking for the same one cannot share a node."""


@dataclass(frozen=True)
class PodView:
    ref: PodRef
    uid: str
    node_name: str
    # Sum of app containers' requests (max with init containers), pods = 1.
    requests: Resources
    host_ports: frozenset[HostPort]
    # When the scheduler last said the pod does not fit anywhere; None when the
    # pod is not pending-unschedulable.
    unschedulable_since: float | None
    # A per-node system pod (DaemonSet-owned or labelled): ignored for emptiness.
    system: bool
    # Succeeded or Failed: holds no resources.
    terminal: bool
    deleting: bool
    # Pods with equal scheduling constraints share a key, so the fit check runs
    # once per group and class rather than once per pod.
    group: str
    proto: pod_pb2.Pod = field(compare=False, hash=False, repr=False)

    @property
    def pending_unschedulable(self) -> bool:
        return self.unschedulable_since is not None and not self.node_name and not self.deleting

    @property
    def holds_resources(self) -> bool:
        return bool(self.node_name) and not self.terminal


@dataclass(frozen=True)
class NodeView:
    name: NodeName
    ready: bool
    # When the Ready condition last turned True; None while not ready.
    ready_since: float | None
    unschedulable: bool
    parent_tainted: bool
    allocatable: Resources
    labels: Mapping[str, str] = field(hash=False)
    proto: node_pb2.Node = field(compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class VMView:
    name: VMName
    class_name: ClassName
    phase: str
    # The instant-clone parent this VM was forked from ("" = full clone).
    parent: str
    template: bool
    paused: bool
    node_name: NodeName
    deleting: bool
    # When the VM was asked for (status.requested_at, else creation time).
    requested_at: float
    cpu_millis: int
    memory_bytes: int
    node_labels: Mapping[str, str] = field(hash=False)
    message: str = ""

    @property
    def is_parent(self) -> bool:
        """A warm parent: a template VM that is not itself a child."""
        return self.template and not self.parent

    @property
    def gone(self) -> bool:
        """Being destroyed, failed or stopped: no longer capacity, nor a source to clone."""
        return self.deleting or self.phase in (VMPhase.DESTROYING, VMPhase.FAILED, VMPhase.STOPPED)

    @property
    def can_be_cloned(self) -> bool:
        """Running, or Paused: a docker parent is paused for the instant of each
        disk snapshot (and the VM manager may report that), and providers fork
        a paused parent. The executor retries a Clone the controller refuses
        for a moment before it falls back to a full clone."""
        return self.is_parent and not self.deleting and self.phase in (VMPhase.RUNNING, VMPhase.PAUSED)


@dataclass(frozen=True)
class Snapshot:
    """Everything one planning pass looks at, read at one moment."""

    pods: tuple[PodView, ...]
    nodes: Mapping[NodeName, NodeView]
    vms: Mapping[VMName, VMView]
