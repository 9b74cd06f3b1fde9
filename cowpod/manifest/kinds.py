"""The kinds a manifest may hold, and how users name them on the command line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from cowpod.v1 import (
    config_pb2,
    event_pb2,
    lease_pb2,
    namespace_pb2,
    node_pb2,
    pod_pb2,
    scheduling_pb2,
    service_pb2,
    vm_pb2,
    workload_pb2,
)

# A top-level object (Pod, Node, VM, Event, Lease). The generated classes share
# no base type with `metadata`, so code that handles any kind types it as this.
Obj = Any


@dataclass(frozen=True)
class KindInfo:
    kind: str
    # The first one is what cowpod writes; the others are accepted on input.
    api_versions: tuple[str, ...]
    message: type[Message]
    namespaced: bool
    plural: str
    # Names accepted by `get`, `describe`, `delete` (singular, plural, short).
    aliases: tuple[str, ...]

    @property
    def api_version(self) -> str:
        return self.api_versions[0]

    @property
    def singular(self) -> str:
        return self.kind.lower()


POD = KindInfo("Pod", ("v1",), pod_pb2.Pod, True, "pods", ("pod", "pods", "po"))
NODE = KindInfo("Node", ("v1",), node_pb2.Node, False, "nodes", ("node", "nodes", "no"))
VM = KindInfo("VM", ("cowpod.io/v1",), vm_pb2.VM, False, "vms", ("vm", "vms"))
EVENT = KindInfo("Event", ("v1",), event_pb2.Event, True, "events", ("event", "events", "ev"))
LEASE = KindInfo("Lease", ("coordination.k8s.io/v1",), lease_pb2.Lease, True, "leases", ("lease", "leases"))
REPLICASET = KindInfo(
    "ReplicaSet", ("apps/v1",), workload_pb2.ReplicaSet, True, "replicasets",
    ("replicaset", "replicasets", "rs"),
)

DEPLOYMENT = KindInfo(
    "Deployment", ("apps/v1",), workload_pb2.Deployment, True, "deployments",
    ("deployment", "deployments", "deploy"),
)
JOB = KindInfo("Job", ("batch/v1",), workload_pb2.Job, True, "jobs", ("job", "jobs"))
DAEMONSET = KindInfo(
    "DaemonSet", ("apps/v1",), workload_pb2.DaemonSet, True, "daemonsets",
    ("daemonset", "daemonsets", "ds"),
)
SERVICE = KindInfo("Service", ("v1",), service_pb2.Service, True, "services", ("service", "services", "svc"))
ENDPOINTS = KindInfo("Endpoints", ("v1",), service_pb2.Endpoints, True, "endpoints", ("endpoints", "ep"))

NAMESPACE = KindInfo("Namespace", ("v1",), namespace_pb2.Namespace, False, "namespaces",
                     ("namespace", "namespaces", "ns"))
CONFIGMAP = KindInfo("ConfigMap", ("v1",), config_pb2.ConfigMap, True, "configmaps",
                     ("configmap", "configmaps", "cm"))
SECRET = KindInfo("Secret", ("v1",), config_pb2.Secret, True, "secrets", ("secret", "secrets"))
PRIORITYCLASS = KindInfo("PriorityClass", ("scheduling.k8s.io/v1",), scheduling_pb2.PriorityClass, False,
                         "priorityclasses", ("priorityclass", "priorityclasses", "pc"))

KINDS: tuple[KindInfo, ...] = (
    POD, NODE, VM, EVENT, LEASE, REPLICASET, DEPLOYMENT, JOB, DAEMONSET, SERVICE, ENDPOINTS,
    NAMESPACE, CONFIGMAP, SECRET, PRIORITYCLASS,
)
BY_KIND: dict[str, KindInfo] = {k.kind: k for k in KINDS}

# Kubernetes kinds cowpod does not serve -> why, so a manifest from the Kubernetes docs naming
# one is refused with the reason (one line), not as if `kind` held a typo.
_WORKLOADS = "use a Deployment, Job or DaemonSet"
UNSUPPORTED_KINDS: dict[str, str] = {
    "StatefulSet": f"not supported: no stable pod identities or volume claim templates; {_WORKLOADS}",
    "ReplicationController": "not supported: use a Deployment (or a ReplicaSet)",
    "CronJob": "not supported: no schedule controller; create Jobs from an external scheduler",
    "HorizontalPodAutoscaler": "not supported: scale with `cowpod scale`; VMs are autoscaled "
                               "(docs/autoscaler.md)",
    "Ingress": "not supported: no ingress controller; Services are headless (docs/api.md)",
    "IngressClass": "not supported: no ingress controller",
    "NetworkPolicy": "not supported: pods on a VM share its network",
    "PersistentVolume": "not supported: no persistent volumes; use hostPath or emptyDir volumes",
    "PersistentVolumeClaim": "not supported: no persistent volumes; use hostPath or emptyDir volumes",
    "StorageClass": "not supported: no persistent volumes",
    "LimitRange": "not supported: no admission defaults; set the containers' resources",
    "ResourceQuota": "not supported: no quotas",
    "PodDisruptionBudget": "not supported: no eviction API",
    "ServiceAccount": "not supported: no service accounts (a pod's is `default`); access is "
                      "cowpod's roles (docs/security.md)",
    **{k: "not supported: access is cowpod's roles (docs/security.md)"
       for k in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")},
}
_BY_ALIAS: dict[str, KindInfo] = {a: k for k in KINDS for a in k.aliases}
_BY_MESSAGE: dict[str, KindInfo] = {k.message.DESCRIPTOR.full_name: k for k in KINDS}


def by_alias(name: str) -> KindInfo | None:
    """`pods`, `pod`, `po`, `Pod` -> POD."""
    return _BY_ALIAS.get(name.lower())


def of_message(msg: Message) -> KindInfo | None:
    return _BY_MESSAGE.get(msg.DESCRIPTOR.full_name)
