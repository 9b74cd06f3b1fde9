"""Builders for autoscaler tests (unit, integration, bench), as Kubernetes keeps
`pkg/scheduler/testing` wrappers next to the code they exercise.

    make_pod("web-1").req(cpu="500m", memory="256Mi").unschedulable(at=T).obj()
    make_node("small-ab12").ready(since=T).size(cpu="1", memory="1Gi").obj()
    make_vm("small-ab12").cls("small").clone_of("small-parent").running().obj()

Not imported by the autoscaler itself.
"""

from __future__ import annotations

from cowpod.api.labels import CLASS_LABEL, HOSTNAME_LABEL
from cowpod.clusterconfig import VMClass, parse_cpu, parse_memory
from cowpod.v1 import node_pb2, pod_pb2, vm_pb2

T0 = 1_700_000_000.0


def _cpu(v: str | int | float) -> int:
    return parse_cpu(v, "cpu")


def _mem(v: str | int | float) -> int:
    return parse_memory(v, "memory")


def _stamp(ts: object, t: float) -> None:
    ts.FromNanoseconds(int(t * 1e9))  # type: ignore[attr-defined]


class PodBuilder:
    def __init__(self, name: str, namespace: str = "default") -> None:
        self.p = pod_pb2.Pod(api_version="v1", kind="Pod")
        self.p.metadata.name = name
        self.p.metadata.namespace = namespace
        self.p.metadata.uid = f"uid-{namespace}-{name}"
        self.p.status.phase = "Pending"
        self.p.spec.containers.add(name="main", image="cowpod/busybox:latest")

    def req(self, cpu: str | int | float = 0, memory: str | int | float = 0) -> PodBuilder:
        r = self.p.spec.containers[0].resources.requests
        r.cpu_millis = _cpu(cpu)
        r.memory_bytes = _mem(memory)
        return self

    def node(self, name: str, phase: str = "Running") -> PodBuilder:
        self.p.spec.node_name = name
        self.p.status.phase = phase
        return self

    def unschedulable(self, at: float = T0, reason: str = "Unschedulable") -> PodBuilder:
        c = self.p.status.conditions.add(
            type="PodScheduled", status="False", reason=reason, message="0/1 nodes are available"
        )
        _stamp(c.last_transition_time, at)
        return self

    def selector(self, **labels: str) -> PodBuilder:
        self.p.spec.node_selector.update(labels)
        return self

    def tolerate(self, key: str, value: str = "", effect: str = "", op: str = "Equal") -> PodBuilder:
        self.p.spec.tolerations.add(key=key, value=value, effect=effect, operator=op)
        return self

    def host_port(self, port: int) -> PodBuilder:
        self.p.spec.containers[0].ports.add(container_port=port, host_port=port)
        return self

    def system(self) -> PodBuilder:
        self.p.metadata.owner_references.add(kind="DaemonSet", name="node-exporter", uid="ds-1")
        return self

    def phase(self, phase: str) -> PodBuilder:
        self.p.status.phase = phase
        return self

    def deleting(self, at: float = T0) -> PodBuilder:
        _stamp(self.p.metadata.deletion_timestamp, at)
        return self

    def obj(self) -> pod_pb2.Pod:
        out = pod_pb2.Pod()
        out.CopyFrom(self.p)
        return out


class NodeBuilder:
    def __init__(self, name: str) -> None:
        self.n = node_pb2.Node(api_version="v1", kind="Node")
        self.n.metadata.name = name
        self.n.metadata.labels[HOSTNAME_LABEL] = name
        self.size()

    def size(self, cpu: str | int | float = "900m", memory: str | int | float = "960Mi") -> NodeBuilder:
        """Allocatable (what pods may use)."""
        a = self.n.status.allocatable
        a.cpu_millis, a.memory_bytes, a.pods = _cpu(cpu), _mem(memory), 110
        self.n.status.capacity.CopyFrom(a)
        return self

    def ready(self, since: float = T0) -> NodeBuilder:
        del self.n.status.conditions[:]
        c = self.n.status.conditions.add(type="Ready", status="True", reason="AgentReady")
        _stamp(c.last_transition_time, since)
        return self

    def not_ready(self, since: float = T0) -> NodeBuilder:
        del self.n.status.conditions[:]
        c = self.n.status.conditions.add(type="Ready", status="Unknown", reason="NodeStatusUnknown")
        _stamp(c.last_transition_time, since)
        return self

    def labels(self, **labels: str) -> NodeBuilder:
        self.n.metadata.labels.update(labels)
        return self

    def taint(self, key: str, value: str = "", effect: str = "NoSchedule") -> NodeBuilder:
        self.n.spec.taints.add(key=key, value=value, effect=effect)
        return self

    def cordoned(self) -> NodeBuilder:
        self.n.spec.unschedulable = True
        return self

    def obj(self) -> node_pb2.Node:
        out = node_pb2.Node()
        out.CopyFrom(self.n)
        return out


class VMBuilder:
    def __init__(self, name: str) -> None:
        self.v = vm_pb2.VM(api_version="v1", kind="VM")
        self.v.metadata.name = name
        _stamp(self.v.metadata.creation_timestamp, T0)
        _stamp(self.v.status.requested_at, T0)
        self.v.status.phase = "Running"
        self.v.status.node_name = name
        self.v.status.clone_kind = "full"

    def cls(
        self, c: VMClass | str, cpu: str | int | float = 1, memory: str | int | float = "1Gi"
    ) -> VMBuilder:
        if isinstance(c, VMClass):
            self.v.spec.class_name = c.name
            self.v.spec.cpu_millis, self.v.spec.memory_bytes = c.cpu_millis, c.memory_bytes
            self.v.spec.node_labels.update({**c.labels, CLASS_LABEL: c.name})
        else:
            self.v.spec.class_name = c
            self.v.spec.cpu_millis, self.v.spec.memory_bytes = _cpu(cpu), _mem(memory)
            self.v.spec.node_labels[CLASS_LABEL] = c
        return self

    def parent(self) -> VMBuilder:
        """A warm parent (spec.template)."""
        self.v.spec.template = True
        return self

    def clone_of(self, parent: str) -> VMBuilder:
        self.v.spec.parent = parent
        self.v.status.clone_kind = "instant"
        return self

    def paused(self) -> VMBuilder:
        """Paused on purpose (spec.paused) and frozen (phase Paused)."""
        self.v.spec.paused = True
        self.v.status.phase = "Paused"
        return self

    def phase(self, phase: str, message: str = "") -> VMBuilder:
        self.v.status.phase = phase
        self.v.status.message = message
        return self

    def requested(self, at: float) -> VMBuilder:
        _stamp(self.v.status.requested_at, at)
        _stamp(self.v.metadata.creation_timestamp, at)
        return self

    def deleting(self, at: float = T0) -> VMBuilder:
        _stamp(self.v.metadata.deletion_timestamp, at)
        return self

    def obj(self) -> vm_pb2.VM:
        out = vm_pb2.VM()
        out.CopyFrom(self.v)
        return out


def make_pod(name: str, namespace: str = "default") -> PodBuilder:
    return PodBuilder(name, namespace)


def make_node(name: str) -> NodeBuilder:
    return NodeBuilder(name)


def make_vm(name: str) -> VMBuilder:
    return VMBuilder(name)
