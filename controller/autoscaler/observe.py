"""The edge: API objects (protobuf) in, the planner's frozen views out.

Everything the planner needs to know about a pod, node or VM is decided here
once (requests, readiness, "is this a warm parent"), so the rules live in one
place and the planner reads plain values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from controller.autoscaler.model import (
    HostPort,
    NodeView,
    PodRef,
    PodView,
    Snapshot,
    VMView,
)
from cowpod.api import resources
from cowpod.api.ids import ClassName, NodeName, VMName
from cowpod.api.labels import NODE_SYSTEM_POD_LABEL, PARENT_TAINT_KEY
from cowpod.api.phases import is_terminal
from cowpod.api.resources import DEFAULT_MAX_PODS, Resources
from cowpod.api.times import seconds_of
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2, vm_pb2

UNSCHEDULABLE_REASONS = frozenset({"Unschedulable"})


def _has(msg: object, name: str) -> bool:
    has_field = getattr(msg, "HasField", None)
    return bool(has_field is not None and has_field(name))


def pod_requests(spec: pod_pb2.PodSpec) -> Resources:
    """What the scheduler reserves for a pod (the rule is `cowpod.api.resources`).

    cpu and memory only: VM classes declare no disk, so the autoscaler cannot
    tell whether a new VM would hold a pod's `ephemeral-storage` (docs/scheduler.md)."""
    r = resources.pod_requests(spec)
    return Resources(r.cpu_millis, r.memory_bytes, r.pods)


def host_ports(spec: pod_pb2.PodSpec) -> frozenset[HostPort]:
    return frozenset(
        (p.host_ip or "0.0.0.0", p.host_port, p.protocol or "TCP")
        for c in spec.containers
        for p in c.ports
        if p.host_port
    )


def unschedulable_since(pod: pod_pb2.Pod, now: float) -> float | None:
    """When the scheduler last judged the pod unschedulable, or None.

    Missing timestamps count as "just now": the scheduler's word is then
    trusted against every node that exists already. A pod with
    `status.nominatedNodeName` is not pending for the autoscaler: it preempted
    pods there and waits for their room, so a new VM for it would be a second
    place for one pod (Kubernetes' cluster-autoscaler skips them too)."""
    if pod.status.nominated_node_name:
        return None
    for cond in pod.status.conditions:
        if cond.type == "PodScheduled" and cond.status == "False" and cond.reason in UNSCHEDULABLE_REASONS:
            t = max(seconds_of(cond.last_transition_time), seconds_of(cond.last_probe_time))
            return t if t > 0 else now
    return None


def _group_key(spec: pod_pb2.PodSpec, requests: Resources, ports: frozenset[HostPort]) -> str:
    h = hashlib.sha1(usedforsecurity=False)
    h.update(f"{requests.cpu_millis}/{requests.memory_bytes}/{sorted(ports)}".encode())
    for k in sorted(spec.node_selector):
        h.update(f"|{k}={spec.node_selector[k]}".encode())
    h.update(spec.affinity.SerializeToString(deterministic=True))
    for t in spec.tolerations:
        h.update(t.SerializeToString(deterministic=True))
    for s in spec.topology_spread_constraints:
        h.update(s.SerializeToString(deterministic=True))
    return h.hexdigest()[:16]


def is_system_pod(pod: pod_pb2.Pod) -> bool:
    if pod.metadata.labels.get(NODE_SYSTEM_POD_LABEL) == "true":
        return True
    return any(o.kind == "DaemonSet" for o in pod.metadata.owner_references)


def pod_view(pod: pod_pb2.Pod, now: float) -> PodView:
    spec = pod.spec
    req = pod_requests(spec)
    ports = host_ports(spec)
    return PodView(
        ref=PodRef(pod.metadata.namespace or "default", pod.metadata.name),
        uid=pod.metadata.uid,
        node_name=spec.node_name,
        requests=req,
        host_ports=ports,
        unschedulable_since=unschedulable_since(pod, now),
        system=is_system_pod(pod),
        terminal=is_terminal(pod.status.phase),
        deleting=_has(pod.metadata, "deletion_timestamp"),
        group=_group_key(spec, req, ports),
        proto=pod,
    )


def _resources(r: meta_pb2.ResourceList) -> Resources:
    return Resources(r.cpu_millis, r.memory_bytes, r.pods)


def node_view(node: node_pb2.Node) -> NodeView:
    ready = False
    since: float | None = None
    for cond in node.status.conditions:
        if cond.type == "Ready" and cond.status == "True":
            ready = True
            since = seconds_of(cond.last_transition_time) or seconds_of(node.metadata.creation_timestamp)
    alloc = node.status.allocatable
    if not (alloc.cpu_millis or alloc.memory_bytes):
        alloc = node.status.capacity
    resources = _resources(alloc)
    if resources.pods == 0:
        # An agent that does not report a pod limit gets the kubelet's default.
        resources = Resources(resources.cpu_millis, resources.memory_bytes, DEFAULT_MAX_PODS)
    return NodeView(
        name=NodeName(node.metadata.name),
        ready=ready and not _has(node.metadata, "deletion_timestamp"),
        ready_since=since if ready else None,
        unschedulable=node.spec.unschedulable,
        parent_tainted=any(t.key == PARENT_TAINT_KEY for t in node.spec.taints),
        allocatable=resources,
        labels=dict(node.metadata.labels),
        proto=node,
    )


def vm_view(vm: vm_pb2.VM, now: float) -> VMView:
    requested = seconds_of(vm.status.requested_at) or seconds_of(vm.metadata.creation_timestamp) or now
    return VMView(
        name=VMName(vm.metadata.name),
        class_name=ClassName(vm.spec.class_name),
        phase=vm.status.phase,
        parent=vm.spec.parent,
        template=vm.spec.template,
        paused=vm.spec.paused,
        node_name=NodeName(vm.status.node_name or vm.metadata.name),
        deleting=_has(vm.metadata, "deletion_timestamp"),
        requested_at=requested,
        cpu_millis=vm.spec.cpu_millis,
        memory_bytes=vm.spec.memory_bytes,
        node_labels=dict(vm.spec.node_labels),
        message=vm.status.message,
    )


def snapshot(
    pods: Iterable[pod_pb2.Pod],
    nodes: Iterable[node_pb2.Node],
    vms: Iterable[vm_pb2.VM],
    now: float,
) -> Snapshot:
    node_views = {NodeName(n.metadata.name): node_view(n) for n in nodes}
    vm_views = {VMName(v.metadata.name): vm_view(v, now) for v in vms}
    return Snapshot(
        pods=tuple(pod_view(p, now) for p in pods),
        nodes=node_views,
        vms=vm_views,
    )
