"""The kinds the controller stores: their etcd keys, messages and selectable fields.

Keys (relative to the store prefix):
    registry/<resource>/<namespace>/<name>   namespaced kinds (pods, events, leases)
    registry/<resource>/<name>               cluster-scoped kinds (nodes, vms)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from google.protobuf.message import Message

from cowpod.v1 import event_pb2, lease_pb2, meta_pb2, node_pb2, pod_pb2, vm_pb2

M = TypeVar("M", bound=Message)
M_contra = TypeVar("M_contra", bound=Message, contravariant=True)

DEFAULT_NAMESPACE = "default"
NODE_LEASE_NAMESPACE = "cowpod-node-lease"


class WatchEventClass(Protocol[M_contra]):
    """A kind's generated `<Kind>WatchEvent` class, as the watch code constructs it.

    The generated classes share no base but `Message`, whose stub takes no field
    arguments; this says which fields every one of them has, so mypy checks the
    names, the event type and that the object is of the kind being watched.
    """

    def __call__(self, *, type: meta_pb2.WatchEventType = ..., object: M_contra | None = ...,
                 resource_version: int = ...) -> Message: ...


@dataclass(frozen=True)
class Kind(Generic[M]):
    resource: str  # plural, as in the etcd key: "pods"
    kind: str  # "Pod"
    api_version: str
    namespaced: bool
    message: type[M]
    list_message: type[Message] | None
    watch_event: WatchEventClass[M] | None
    # Field selector name -> getter. metadata.name/namespace are always present.
    fields: Mapping[str, Callable[[Any], str]] = field(default_factory=dict)
    # A field whose value most watchers pin with `field=value` (pods: spec.nodeName):
    # the watch hub indexes subscribers by it, so an event reaches only the streams
    # that can care (an agent's stream sees its own node's pods, not all 20,000).
    trigger_field: str = ""

    def key(self, namespace: str, name: str) -> str:
        if self.namespaced:
            return f"registry/{self.resource}/{namespace}/{name}"
        return f"registry/{self.resource}/{name}"

    def prefix(self, namespace: str = "") -> str:
        if self.namespaced and namespace:
            return f"registry/{self.resource}/{namespace}/"
        return f"registry/{self.resource}/"

    def namespace_of_key(self, key: str) -> str:
        if not self.namespaced:
            return ""
        return key.split("/", 3)[2]

    def all_fields(self) -> dict[str, Callable[[Any], str]]:
        out: dict[str, Callable[[Any], str]] = {
            "metadata.name": lambda o: str(o.metadata.name),
            "metadata.namespace": lambda o: str(o.metadata.namespace),
        }
        out.update(self.fields)
        return out


def _b(v: bool) -> str:
    return "true" if v else "false"


PODS: Kind[pod_pb2.Pod] = Kind(
    "pods", "Pod", "v1", True, pod_pb2.Pod, pod_pb2.PodList, pod_pb2.PodWatchEvent,
    fields={
        "spec.nodeName": lambda o: str(o.spec.node_name),
        "status.phase": lambda o: str(o.status.phase),
        "spec.schedulerName": lambda o: str(o.spec.scheduler_name),
        "status.nominatedNodeName": lambda o: str(o.status.nominated_node_name),
    },
    trigger_field="spec.nodeName",
)

NODES: Kind[node_pb2.Node] = Kind(
    "nodes", "Node", "v1", False, node_pb2.Node, node_pb2.NodeList, node_pb2.NodeWatchEvent,
    fields={
        "spec.unschedulable": lambda o: _b(o.spec.unschedulable),
        "spec.providerID": lambda o: str(o.spec.provider_id),
    },
)

VMS: Kind[vm_pb2.VM] = Kind(
    "vms", "VM", "cowpod.io/v1", False, vm_pb2.VM, vm_pb2.VMList, vm_pb2.VMWatchEvent,
    fields={
        "status.phase": lambda o: str(o.status.phase),
        "spec.parent": lambda o: str(o.spec.parent),
        "spec.className": lambda o: str(o.spec.class_name),
        "spec.provider": lambda o: str(o.spec.provider),
        "status.nodeName": lambda o: str(o.status.node_name),
    },
)

EVENTS: Kind[event_pb2.Event] = Kind(
    "events", "Event", "v1", True, event_pb2.Event, event_pb2.EventList, event_pb2.EventWatchEvent,
    fields={
        "involvedObject.kind": lambda o: str(o.involved_object.kind),
        "involvedObject.namespace": lambda o: str(o.involved_object.namespace),
        "involvedObject.name": lambda o: str(o.involved_object.name),
        "involvedObject.uid": lambda o: str(o.involved_object.uid),
        "reason": lambda o: str(o.reason),
        "type": lambda o: str(o.type),
    },
)

LEASES: Kind[lease_pb2.Lease] = Kind(
    "leases", "Lease", "coordination.k8s.io/v1", True, lease_pb2.Lease, lease_pb2.LeaseList, None,
    fields={"spec.holderIdentity": lambda o: str(o.spec.holder_identity)},
)

WATCHED_KINDS: tuple[Kind[Any], ...] = (PODS, NODES, VMS, EVENTS)
