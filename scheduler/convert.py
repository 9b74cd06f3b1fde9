"""The protobuf edge: Pod/Node messages in, frozen scheduler values out,
Binding messages back. Nothing past this module sees a proto."""

from __future__ import annotations

from cowpod.api.phases import is_terminal
from cowpod.api.ports import vm_ports
from cowpod.api.resources import pod_requests
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2
from scheduler.framework.types import (
    DEFAULT_MAX_PODS,
    HOSTNAME_LABEL,
    AffinityTerm,
    HostPort,
    LabelSelector,
    NodeInfo,
    NodeName,
    PodInfo,
    PodUID,
    PreferredTerm,
    Requirement,
    Resources,
    SelectorTerm,
    SpreadConstraint,
    Taint,
    Toleration,
    WeightedAffinityTerm,
)


def _requirement(r: pod_pb2.NodeSelectorRequirement | pod_pb2.LabelSelectorRequirement) -> Requirement:
    return Requirement(r.key, r.operator, tuple(r.values))


def _term(t: pod_pb2.NodeSelectorTerm) -> SelectorTerm:
    return SelectorTerm(tuple(_requirement(r) for r in t.match_expressions))


def label_selector(s: pod_pb2.LabelSelector) -> LabelSelector:
    return LabelSelector(
        tuple(sorted(s.match_labels.items())), tuple(_requirement(r) for r in s.match_expressions)
    )


def pod_info(pod: pod_pb2.Pod) -> PodInfo:
    m, spec = pod.metadata, pod.spec
    aff = spec.affinity.node_affinity
    pa, anti = spec.affinity.pod_affinity, spec.affinity.pod_anti_affinity
    ns = m.namespace or "default"
    ports = tuple(HostPort(port, protocol, ip) for port, protocol, ip in vm_ports(spec))
    return PodInfo(
        uid=PodUID(m.uid),
        namespace=m.namespace or "default",
        name=m.name,
        resource_version=m.resource_version,
        generation=m.generation,
        labels=dict(m.labels),
        priority=spec.priority,
        created=m.creation_timestamp.seconds + m.creation_timestamp.nanos / 1e9,
        requests=pod_requests(spec),
        host_ports=ports,
        node_selector=tuple(sorted(spec.node_selector.items())),
        required_affinity=tuple(
            _term(t) for t in aff.required_during_scheduling_ignored_during_execution.node_selector_terms
        ),
        preferred_affinity=tuple(
            PreferredTerm(p.weight, _term(p.preference))
            for p in aff.preferred_during_scheduling_ignored_during_execution
        ),
        tolerations=tuple(
            Toleration(t.key, t.operator or "Equal", t.value, t.effect) for t in spec.tolerations
        ),
        spread=tuple(
            SpreadConstraint(
                c.max_skew or 1,
                c.topology_key,
                c.when_unsatisfiable or "DoNotSchedule",
                label_selector(c.label_selector),
            )
            for c in spec.topology_spread_constraints
        ),
        pod_affinity=tuple(
            _affinity_term(t, ns) for t in pa.required_during_scheduling_ignored_during_execution),
        pod_anti_affinity=tuple(
            _affinity_term(t, ns) for t in anti.required_during_scheduling_ignored_during_execution),
        preferred_pod_affinity=tuple(
            WeightedAffinityTerm(w.weight, _affinity_term(w.pod_affinity_term, ns))
            for w in pa.preferred_during_scheduling_ignored_during_execution),
        preferred_pod_anti_affinity=tuple(
            WeightedAffinityTerm(w.weight, _affinity_term(w.pod_affinity_term, ns))
            for w in anti.preferred_during_scheduling_ignored_during_execution),
        node_name=spec.node_name,
        scheduler_name=spec.scheduler_name,
        terminal=is_terminal(pod.status.phase),
        preemption_policy=spec.preemption_policy,
        terminating=m.HasField("deletion_timestamp"),
        nominated_node=pod.status.nominated_node_name,
    )


def _affinity_term(t: pod_pb2.PodAffinityTerm, own_namespace: str) -> AffinityTerm:
    """Kubernetes' namespace rule: the listed namespaces, else the pod's own; an empty
    namespaceSelector (`{}`) means every namespace (validation refuses a non-empty one)."""
    if t.namespaces:
        namespaces: tuple[str, ...] = tuple(sorted(t.namespaces))
    elif t.HasField("namespace_selector"):
        namespaces = ()
    else:
        namespaces = (own_namespace,)
    return AffinityTerm(label_selector(t.label_selector), t.topology_key, namespaces)


def node_ready(node: node_pb2.Node) -> bool:
    for c in node.status.conditions:
        if c.type == "Ready":
            return c.status == "True"
    return False


def resources(r: meta_pb2.ResourceList) -> Resources:
    return Resources(r.cpu_millis, r.memory_bytes, r.pods or DEFAULT_MAX_PODS, r.ephemeral_storage_bytes)


def node_info(node: node_pb2.Node) -> NodeInfo:
    labels = dict(node.metadata.labels)
    labels.setdefault(HOSTNAME_LABEL, node.metadata.name)
    st = node.status
    alloc = st.allocatable if st.HasField("allocatable") else st.capacity
    return NodeInfo(
        name=NodeName(node.metadata.name),
        labels=labels,
        taints=tuple(Taint(t.key, t.value, t.effect or "NoSchedule") for t in node.spec.taints),
        unschedulable=node.spec.unschedulable,
        ready=node_ready(node),
        allocatable=resources(alloc),
    )


def binding(pod: PodInfo, node: str) -> pod_pb2.Binding:
    return pod_pb2.Binding(
        pod=meta_pb2.ObjectKey(namespace=pod.namespace, name=pod.name),
        node_name=node,
        pod_uid=pod.uid,
        # The spec, not the whole object: the scheduler's own status writes
        # (Unschedulable verdicts) must not abort its binds.
        pod_generation=pod.generation,
    )
