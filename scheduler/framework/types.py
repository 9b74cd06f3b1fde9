"""The scheduler's own view of pods and nodes: small frozen dataclasses.

Protobuf stops at the edge (`scheduler.convert`): plugins never see a proto,
only these values, so they stay pure, fast to build in tests
(`tests/unit/scheduler/builders.py`) and identical for the real scheduler and
for the autoscaler's "would it fit on a fresh VM?" question.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from cowpod.api import tolerations

# The shared vocabulary, re-exported: plugins read the scheduler's words from here.
# HOSTNAME_LABEL is set on every node by `convert` when absent, as kubelet does, so
# spreading "one per VM" needs no agent cooperation.
from cowpod.api.ids import NodeName as NodeName
from cowpod.api.ids import PodUID as PodUID
from cowpod.api.labels import HOSTNAME_LABEL as HOSTNAME_LABEL
from cowpod.api.labels import TaintEffect as TaintEffect
from cowpod.api.resources import DEFAULT_MAX_PODS as DEFAULT_MAX_PODS
from cowpod.api.resources import Resources as Resources

# Requests assumed for scoring when a pod asks for nothing, so that
# zero-request pods still spread (Kubernetes: non-zero defaults 100m / 200Mi).
# Filters always use the real requests.
NONZERO_CPU_MILLIS = 100
NONZERO_MEMORY_BYTES = 200 * 1024 * 1024

# Defaults for the dataclasses below (Resources is frozen: one shared value is safe).
_ONE_POD = Resources(pods=1)
_TEST_NODE_SIZE = Resources(cpu_millis=4000, memory_bytes=8 << 30, pods=DEFAULT_MAX_PODS)


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str = ""
    effect: str = TaintEffect.NO_SCHEDULE

    def __str__(self) -> str:
        # The form Kubernetes prints in "had untolerated taint {key: value}".
        return f"{{{self.key}: {self.value}}}"


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"  # Equal | Exists
    value: str = ""
    effect: str = ""  # "" matches every effect

    def tolerates(self, taint: Taint) -> bool:
        return tolerations.tolerates(self, taint)


@dataclass(frozen=True, slots=True)
class Requirement:
    """One `matchExpressions` entry: node affinity and label selectors share it."""

    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist | Gt | Lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op == "In":
            return labels.get(self.key) in self.values
        if op == "NotIn":
            return labels.get(self.key) not in self.values
        if op == "Exists":
            return self.key in labels
        if op == "DoesNotExist":
            return self.key not in labels
        if op in ("Gt", "Lt"):
            raw = labels.get(self.key)
            if raw is None or len(self.values) != 1:
                return False
            try:
                have, want = int(raw), int(self.values[0])
            except ValueError:
                return False
            return have > want if op == "Gt" else have < want
        return False


@dataclass(frozen=True, slots=True)
class SelectorTerm:
    """Requirements ANDed together; a term with none matches nothing (Kubernetes)."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return bool(self.requirements) and all(r.matches(labels) for r in self.requirements)


@dataclass(frozen=True, slots=True)
class PreferredTerm:
    weight: int
    term: SelectorTerm


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """matchLabels AND matchExpressions; an empty selector matches everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.expressions
        )


class WhenUnsatisfiable(enum.StrEnum):
    DO_NOT_SCHEDULE = "DoNotSchedule"
    SCHEDULE_ANYWAY = "ScheduleAnyway"


@dataclass(frozen=True, slots=True)
class SpreadConstraint:
    max_skew: int
    topology_key: str
    when_unsatisfiable: str
    selector: LabelSelector


@dataclass(frozen=True, slots=True)
class AffinityTerm:
    """One podAffinity/podAntiAffinity term: pods matching `selector` in `namespaces`
    (() = every namespace), on nodes sharing `topology_key`'s value."""

    selector: LabelSelector
    topology_key: str
    namespaces: tuple[str, ...] = ()

    def selects(self, pod: PodInfo) -> bool:
        return (not self.namespaces or pod.namespace in self.namespaces) and self.selector.matches(pod.labels)


@dataclass(frozen=True, slots=True)
class WeightedAffinityTerm:
    weight: int  # 1..100; negative for anti-affinity once scored
    term: AffinityTerm


@dataclass(frozen=True, slots=True)
class HostPort:
    port: int
    protocol: str = "TCP"
    ip: str = ""  # "" and "0.0.0.0" mean every address

    def conflicts(self, other: HostPort) -> bool:
        if self.port != other.port or self.protocol != other.protocol:
            return False
        wild = ("", "0.0.0.0")
        return self.ip in wild or other.ip in wild or self.ip == other.ip


@dataclass(frozen=True, slots=True, eq=False)
class PodInfo:
    """What scheduling needs to know about a pod, decoded once at the edge."""

    uid: PodUID
    namespace: str
    name: str
    resource_version: int = 0
    generation: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    priority: int = 0
    created: float = 0.0
    requests: Resources = _ONE_POD
    host_ports: tuple[HostPort, ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()
    required_affinity: tuple[SelectorTerm, ...] = ()  # terms ORed
    preferred_affinity: tuple[PreferredTerm, ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    spread: tuple[SpreadConstraint, ...] = ()
    # podAffinity / podAntiAffinity, required and preferred (namespaces filled in at the edge).
    pod_affinity: tuple[AffinityTerm, ...] = ()
    pod_anti_affinity: tuple[AffinityTerm, ...] = ()
    preferred_pod_affinity: tuple[WeightedAffinityTerm, ...] = ()
    preferred_pod_anti_affinity: tuple[WeightedAffinityTerm, ...] = ()
    node_name: str = ""
    scheduler_name: str = ""
    # Succeeded/Failed pods hold no resources.
    terminal: bool = False
    # PreemptLowerPriority ("" means the same) | Never: may this pod evict others to fit?
    preemption_policy: str = ""
    # metadata.deletionTimestamp is set: it still holds its node's resources until its
    # agent stops it, but preemption never picks it again (it is already leaving).
    terminating: bool = False
    # status.nominatedNodeName: where this pending pod preempted, waiting for room there.
    nominated_node: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def nonzero_cpu(self) -> int:
        return self.requests.cpu_millis or NONZERO_CPU_MILLIS

    @property
    def nonzero_memory(self) -> int:
        return self.requests.memory_bytes or NONZERO_MEMORY_BYTES

    def scheduling_signature(self) -> tuple[object, ...]:
        """Everything a filter or score looks at. An update that leaves this
        unchanged (a status write, a new resource_version) cannot change where
        the pod fits, so the queue does not retry it for that."""
        return (
            tuple(sorted(self.labels.items())),
            self.priority,
            self.requests,
            self.host_ports,
            self.node_selector,
            self.required_affinity,
            self.preferred_affinity,
            self.tolerations,
            self.spread,
            self.pod_affinity,
            self.pod_anti_affinity,
            self.preferred_pod_affinity,
            self.preferred_pod_anti_affinity,
            self.node_name,
        )


@dataclass(frozen=True, slots=True, eq=False)
class NodeInfo:
    """The static part of a node: what it offers, not what it runs."""

    name: NodeName
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False
    ready: bool = True
    allocatable: Resources = _TEST_NODE_SIZE
