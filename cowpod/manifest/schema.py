"""How protobuf fields appear in manifests: names, special encodings, allowed values.

The manifest shape is derived from the protos' descriptors, so a field added to
a .proto is accepted and printed without touching this package. A field's
manifest name is its protobuf JSON name (lowerCamelCase: `restart_policy` ->
`restartPolicy`). This module lists only the exceptions:

- quantities: `ResourceList` is a Kubernetes resource map (`{cpu: 500m,
  memory: 64Mi, pods: "110", example.com/gpu: "1"}`), and a few integer fields
  carry units in their name (`VMSpec.cpu_millis` is `cpu: "2"`);
- strings with a closed set of values (`restartPolicy: Always|OnFailure|Never`)
  and integers with a range (ports), checked on input;
- Kubernetes' IntOrString (`targetPort: 8080` or `targetPort: http`, `maxSurge: 25%`):
  a string field listed in INT_OR_STRING_FIELDS that also takes an integer, and
  prints one back when it holds only digits;
- Kubernetes acronym spellings (`hostIP`, `podIP`, `containerID`): printed as
  Kubernetes prints them (so `-o jsonpath='{.status.podIP}'` works), and
  accepted on input next to the protobuf JSON names (`hostIp`, `containerId`);
- probe and lifecycle ports (`port: 8080` or `port: http`): an integer field
  whose name form is kept in a hidden sibling string field (PORT_NAME_FIELDS);
- Kubernetes fields cowpod knows and refuses on purpose, with the reason
  (REFUSED_FIELDS), so such a manifest fails with why, not "unknown field".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import cache
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from cowpod.api import validation as rules
from cowpod.api.phases import PodPhase

RESOURCE_LIST = "cowpod.v1.ResourceList"
TIMESTAMP = "google.protobuf.Timestamp"
OBJECT_META = "cowpod.v1.ObjectMeta"


class Unit(enum.Enum):
    """How an integer field with a unit is written in a manifest."""

    CPU = "cpu"  # millicores <-> "500m", "2"
    BYTES = "bytes"  # bytes <-> "64Mi", "1G"


# (message full name, proto field name) -> (manifest name, unit)
QUANTITY_FIELDS: dict[tuple[str, str], tuple[str, Unit]] = {
    ("cowpod.v1.VMSpec", "cpu_millis"): ("cpu", Unit.CPU),
    ("cowpod.v1.VMSpec", "memory_bytes"): ("memory", Unit.BYTES),
    ("cowpod.v1.EmptyDirVolumeSource", "size_limit_bytes"): ("sizeLimit", Unit.BYTES),
}

# Strings with a closed set of values. "" (unset) is always allowed.
ALLOWED_VALUES: dict[tuple[str, str], tuple[str, ...]] = {
    ("cowpod.v1.PodSpec", "restart_policy"): rules.RESTART_POLICIES,
    ("cowpod.v1.DeploymentStrategy", "type"): ("RollingUpdate", "Recreate"),
    ("cowpod.v1.DaemonSetUpdateStrategy", "type"): ("RollingUpdate", "OnDelete"),
    ("cowpod.v1.JobSpec", "completion_mode"): ("NonIndexed",),
    ("cowpod.v1.Container", "image_pull_policy"): rules.PULL_POLICIES,
    ("cowpod.v1.ContainerPort", "protocol"): rules.PROTOCOLS,
    ("cowpod.v1.HTTPGetAction", "scheme"): ("HTTP", "HTTPS"),
    ("cowpod.v1.Taint", "effect"): rules.TAINT_EFFECTS,
    ("cowpod.v1.Toleration", "operator"): rules.TOLERATION_OPERATORS,
    ("cowpod.v1.Toleration", "effect"): rules.TAINT_EFFECTS,
    ("cowpod.v1.NodeSelectorRequirement", "operator"): rules.NODE_SELECTOR_OPERATORS,
    ("cowpod.v1.LabelSelectorRequirement", "operator"): rules.LABEL_SELECTOR_OPERATORS,
    ("cowpod.v1.TopologySpreadConstraint", "when_unsatisfiable"): ("DoNotSchedule", "ScheduleAnyway"),
    ("cowpod.v1.Condition", "status"): rules.CONDITION_STATUSES,
    ("cowpod.v1.Event", "type"): rules.EVENT_TYPES,
    ("cowpod.v1.EmptyDirVolumeSource", "medium"): ("Memory",),
    ("cowpod.v1.PodStatus", "phase"): tuple(p.value for p in PodPhase),
    ("cowpod.v1.NodeAddress", "type"): ("InternalIP", "ExternalIP", "Hostname", "InternalDNS", "ExternalDNS"),
}

# Integers with a range (inclusive). 0 means unset for proto3 scalars and is
# always allowed unless the field is listed in REQUIRED_NONZERO.
_PORT = (1, 65535)
INT_RANGES: dict[tuple[str, str], tuple[int, int]] = {
    ("cowpod.v1.ContainerPort", "container_port"): _PORT,
    ("cowpod.v1.ContainerPort", "host_port"): _PORT,
    ("cowpod.v1.HTTPGetAction", "port"): _PORT,
    ("cowpod.v1.TCPSocketAction", "port"): _PORT,
    ("cowpod.v1.Probe", "initial_delay_seconds"): (0, 2**31 - 1),
    ("cowpod.v1.Probe", "period_seconds"): (1, 2**31 - 1),
    ("cowpod.v1.Probe", "timeout_seconds"): (1, 2**31 - 1),
    ("cowpod.v1.Probe", "success_threshold"): (1, 2**31 - 1),
    ("cowpod.v1.Probe", "failure_threshold"): (1, 2**31 - 1),
    ("cowpod.v1.PodSpec", "termination_grace_period_seconds"): (0, 2**63 - 1),
    ("cowpod.v1.PodSpec", "active_deadline_seconds"): (1, 2**63 - 1),
    ("cowpod.v1.PreferredSchedulingTerm", "weight"): (1, 100),
    ("cowpod.v1.TopologySpreadConstraint", "max_skew"): (1, 2**31 - 1),
    ("cowpod.v1.Toleration", "toleration_seconds"): (0, 2**63 - 1),
    ("cowpod.v1.ObjectMeta", "deletion_grace_period_seconds"): (0, 2**63 - 1),
    ("cowpod.v1.ContainerStatus", "restart_count"): (0, 2**31 - 1),
    ("cowpod.v1.Event", "count"): (0, 2**31 - 1),
    ("cowpod.v1.LeaseSpec", "lease_duration_seconds"): (0, 2**31 - 1),
    ("cowpod.v1.LeaseSpec", "lease_transitions"): (0, 2**31 - 1),
    ("cowpod.v1.ObjectMeta", "generation"): (0, 2**63 - 1),
}

# Kubernetes IntOrString fields: stored as strings, written as integers or strings.
INT_OR_STRING_FIELDS: frozenset[tuple[str, str]] = frozenset(
    {
        ("cowpod.v1.ServicePort", "target_port"),
        ("cowpod.v1.RollingUpdateDeployment", "max_surge"),
        ("cowpod.v1.RollingUpdateDeployment", "max_unavailable"),
        ("cowpod.v1.RollingUpdateDaemonSet", "max_surge"),
        ("cowpod.v1.RollingUpdateDaemonSet", "max_unavailable"),
    }
)

# Kubernetes IntOrString ports kept as an int32 plus a string sibling holding a port's
# name (`port: http`), which the controller resolves against the container's ports at
# create. The sibling has no manifest name of its own: it reads and prints as `port`.
PORT_NAME_FIELDS: dict[tuple[str, str], str] = {
    ("cowpod.v1.HTTPGetAction", "port"): "port_name",
    ("cowpod.v1.TCPSocketAction", "port"): "port_name",
}
_HIDDEN_FIELDS = frozenset((msg, sibling) for (msg, _), sibling in PORT_NAME_FIELDS.items())

# Kubernetes fields that cowpod refuses on purpose: (message, manifest name) -> why. A
# manifest that sets one fails at apply with this reason instead of "unknown field".
_HOST_NS = "pods share their VM's network, PID and IPC namespaces only through cowpod; " \
    "host namespaces are refused by the pod security rules"
# Service fields about virtual IPs, node ports, load balancers and proxying (cowpod runs no proxy).
_HEADLESS = "every Service is headless: its name resolves to its ready pods' addresses (docs/api.md)"
REFUSED_FIELDS: dict[tuple[str, str], str] = {
    ("cowpod.v1.PodSpec", "hostNetwork"): _HOST_NS,
    ("cowpod.v1.PodSpec", "hostPID"): _HOST_NS,
    ("cowpod.v1.PodSpec", "hostIPC"): _HOST_NS,
    ("cowpod.v1.PodSpec", "hostUsers"): "user namespaces are not supported",
    ("cowpod.v1.PodSpec", "dnsConfig"): "not supported: a pod uses its VM's resolver",
    ("cowpod.v1.PodSpec", "readinessGates"): "not supported: no controller sets custom pod conditions",
    ("cowpod.v1.PodSpec", "ephemeralContainers"): "not supported",
    ("cowpod.v1.PodSpec", "overhead"): "not supported: no RuntimeClass overhead",
    ("cowpod.v1.PodSpec", "os"): "not supported: every node runs Linux",
    ("cowpod.v1.PodSpec", "resourceClaims"): "dynamic resource allocation is not supported",
    ("cowpod.v1.PodSpec", "schedulingGates"): "not supported: a pod is scheduled as soon as it is created",
    ("cowpod.v1.PodSpec", "setHostnameAsFQDN"): "not supported",
    ("cowpod.v1.Container", "restartPolicy"): "per-container restartPolicy (sidecar init containers) "
                                              "is not supported",
    ("cowpod.v1.Container", "resizePolicy"): "in-place resize is not supported",
    ("cowpod.v1.Container", "volumeDevices"): "block volumes are not supported",
    ("cowpod.v1.Probe", "grpc"): "gRPC probes are not supported: use exec, httpGet or tcpSocket",
    ("cowpod.v1.VolumeMount", "mountPropagation"): "mount propagation is not supported",
    ("cowpod.v1.VolumeMount", "subPathExpr"): "subPathExpr is not supported",
    ("cowpod.v1.VolumeMount", "recursiveReadOnly"): "not supported",
    ("cowpod.v1.EnvVarSource", "fileKeyRef"): "not supported: use configMapKeyRef, secretKeyRef or "
                                               "fieldRef (or read the file in the container)",
    ("cowpod.v1.ServicePort", "nodePort"): f"not supported: {_HEADLESS}",
    ("cowpod.v1.ServicePort", "appProtocol"): "not supported: a port's protocol is TCP, UDP or SCTP",
    **{("cowpod.v1.ServiceSpec", f): f"not supported: {_HEADLESS}"
       for f in ("clusterIPs", "externalIPs", "externalName", "externalTrafficPolicy",
                 "internalTrafficPolicy", "sessionAffinity", "sessionAffinityConfig",
                 "loadBalancerIP", "loadBalancerClass", "loadBalancerSourceRanges",
                 "allocateLoadBalancerNodePorts", "healthCheckNodePort", "trafficDistribution")},
    ("cowpod.v1.ServiceSpec", "ipFamilies"): "only [IPv4]: pods' addresses are their VMs' IPv4 addresses",
    ("cowpod.v1.ServiceSpec", "ipFamilyPolicy"): "only SingleStack or PreferDualStack: pods' addresses "
                                                 "are their VMs' IPv4 addresses",
    **{("cowpod.v1.JobSpec", f): f"{f} is not supported (Jobs here are NonIndexed, with backoffLimit)"
       for f in ("podFailurePolicy", "backoffLimitPerIndex", "maxFailedIndexes", "successPolicy",
                 "podReplacementPolicy", "managedBy")},
    **{("cowpod.v1.Volume", v): f"{v} volumes are not supported (emptyDir, hostPath, configMap, "
                                "secret and downwardAPI are)"
       for v in ("persistentVolumeClaim", "projected", "nfs", "gitRepo", "csi",
                 "ephemeral", "image", "iscsi", "awsElasticBlockStore", "gcePersistentDisk")},
}

# Kubernetes fields cowpod has no field for but accepts (and drops) when they hold a value that
# describes what happens here anyway, as Kubernetes itself turns PreferDualStack into SingleStack
# on a single-stack cluster: (message, manifest name) -> the accepted values. Any other value is
# refused with the REFUSED_FIELDS reason. Such values are what `kubectl get -o yaml` prints, so
# manifests saved from a Kubernetes cluster apply.
ACCEPTED_AS_IS: dict[tuple[str, str], tuple[Any, ...]] = {
    ("cowpod.v1.ServiceSpec", "ipFamilyPolicy"): ("SingleStack", "PreferDualStack"),
    ("cowpod.v1.ServiceSpec", "ipFamilies"): (["IPv4"],),
    ("cowpod.v1.ServiceSpec", "clusterIPs"): (["None"],),
    ("cowpod.v1.ServiceSpec", "sessionAffinity"): ("None",),
    ("cowpod.v1.ServiceSpec", "internalTrafficPolicy"): ("Cluster",),
}

# Metadata the server sets, by manifest name: what `get -o yaml` prints (and a Kubernetes
# cluster's export carries) and an applied manifest may hold. Ignored on input, never an
# error, as kubectl users expect: apply and create take only what the user owns (a create
# assigns these afresh, an update keeps the stored ones; the object's `status` likewise, see
# decode.decode_object_fields). Those cowpod has no field for are dropped while decoding.
SERVER_SET_METADATA: tuple[str, ...] = (
    "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
    "deletionGracePeriodSeconds", "managedFields", "selfLink",
)
# An object's status: written by the controllers, ignored in an applied manifest.
STATUS = "status"

# Printed even when zero, as Kubernetes does (an exit code of 0 means something).
ALWAYS_PRINTED: frozenset[tuple[str, str]] = frozenset(
    {
        ("cowpod.v1.ContainerStateTerminated", "exit_code"),
        ("cowpod.v1.ContainerStatus", "restart_count"),
        ("cowpod.v1.ContainerStatus", "ready"),
    }
)

# ObjectMeta.resource_version is an int64 inside cowpod and a string in
# manifests, as in Kubernetes, where it is opaque to clients.
STRING_INT_FIELDS: frozenset[tuple[str, str]] = frozenset({(OBJECT_META, "resource_version")})

_INT_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
    }
)
_32_BIT = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_FIXED32,
    }
)
_UNSIGNED = frozenset(
    {
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
    }
)


def int_bounds(fd: Any) -> tuple[int, int] | None:
    """The representable range of an integer field, or None if not an integer."""
    if fd.type not in _INT_TYPES:
        return None
    bits = 32 if fd.type in _32_BIT else 64
    if fd.type in _UNSIGNED:
        return (0, 2**bits - 1)
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


@dataclass(frozen=True)
class FieldSpec:
    """One field as a manifest sees it."""

    name: str  # the manifest (camelCase) name
    fd: Any  # FieldDescriptor (its stubs make every link Optional)
    unit: Unit | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.fd.containing_type.full_name, self.fd.name)


_ACRONYMS = {"ip": "IP", "id": "ID", "ips": "IPs", "ids": "IDs", "api": "API"}


def _acronym_alias(fd: Any) -> str | None:
    """`host_ip` -> `hostIP`, `pod_ips` -> `podIPs`: the Kubernetes spelling of an id/ip field."""
    parts: list[str] = fd.name.split("_")
    if len(parts) < 2 or parts[-1] not in _ACRONYMS:
        return None
    return parts[0] + "".join(p.capitalize() for p in parts[1:-1]) + _ACRONYMS[parts[-1]]


@cache
def fields_of(desc: Any) -> tuple[FieldSpec, ...]:
    """The message's fields in proto order, with their manifest names (Kubernetes'
    acronym spelling where it has one: `podIP`, `containerID`)."""
    out = []
    for fd in desc.fields:
        if (desc.full_name, fd.name) in _HIDDEN_FIELDS:
            continue
        special = QUANTITY_FIELDS.get((desc.full_name, fd.name))
        if special is not None:
            out.append(FieldSpec(special[0], fd, special[1]))
        else:
            out.append(FieldSpec(_acronym_alias(fd) or fd.json_name, fd))
    return tuple(out)


@cache
def input_names(desc: Any) -> dict[str, FieldSpec]:
    """Every name accepted on input for the message's fields (acronym spelling and JSON name)."""
    names: dict[str, FieldSpec] = {}
    for spec in fields_of(desc):
        names[spec.name] = spec
        if spec.unit is None:
            names.setdefault(spec.fd.json_name, spec)
    return names


def is_map(fd: Any) -> bool:
    return bool(fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry)


def is_repeated(fd: Any) -> bool:
    return bool(fd.is_repeated)
