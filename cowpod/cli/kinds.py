"""How the CLI shows and reaches each kind: ONE entry per kind.

`cowpod.manifest.kinds` says what a kind is (its names, message, scope); this
table adds what the CLI needs to print and describe it: the table's columns
(and the extra `-o wide` ones), the row function, the describe function and
which related objects that describe shows. Which verbs a kind takes is not
written here at all: it is read from the kind's gRPC service in the protos
(`PodService`, `VMService`, ...), so `delete` is offered exactly where the
server has a Delete (or, for VMs, Destroy) and `get -w` where it has a Watch.
Adding a kind to the CLI is one `CliKind` entry; a unit test checks that every
manifest kind has one.

    manifest KindInfo --> CliKind(headers, wide, row, describe, related)
                              |
                              +-- rpcs (from the proto service) --> verbs
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from cowpod.cli import describe, printers, readiness
from cowpod.manifest import KindInfo
from cowpod.manifest.kinds import (
    CONFIGMAP,
    DAEMONSET,
    DEPLOYMENT,
    ENDPOINTS,
    EVENT,
    JOB,
    KINDS,
    LEASE,
    NAMESPACE,
    NODE,
    POD,
    PRIORITYCLASS,
    REPLICASET,
    SECRET,
    SERVICE,
    VM,
)
from cowpod.v1 import event_pb2, node_pb2, pod_pb2, service_pb2, workload_pb2

Row = printers.Row

# Objects a describe shows beside the described one; `cowpod describe` fetches what an entry
# names (its events always).
RelatedName = Literal["pods_on_node", "replica_sets", "endpoints"]


@dataclass(frozen=True)
class Related:
    events: Sequence[event_pb2.Event] = ()
    pods_on_node: Sequence[pod_pb2.Pod] = ()
    replica_sets: Sequence[workload_pb2.ReplicaSet] = ()
    endpoints: service_pb2.Endpoints | None = None


@dataclass(frozen=True)
class RowContext:
    wide: bool = False
    # Node rows: how many unfinished pods each node holds (None: not looked up, shown as ?).
    pods_per_node: Mapping[str, int] | None = None


RowFn = Callable[[Any, float, RowContext], Row]
DescribeFn = Callable[[Any, Related, float], str]
# When is an applied object "there" (`apply --wait`)? Given the object and, for an object that
# runs a node (a VM: `status.nodeName`), that node.
ReadinessFn = Callable[[Any, node_pb2.Node | None], readiness.Readiness]


@dataclass(frozen=True)
class CliKind:
    info: KindInfo
    headers: tuple[str, ...]
    row: RowFn
    describe: DescribeFn
    wide: tuple[str, ...] = ()
    related: frozenset[RelatedName] = field(default_factory=frozenset)
    # How a table orders the rows, when not by namespace and name (events: by time).
    order: Callable[[Sequence[Any]], list[Any]] | None = None
    # None: there as soon as it is created (a ConfigMap, a Service).
    readiness: ReadinessFn | None = None

    @property
    def client_attr(self) -> str:
        """The stub's attribute on `cowpod.client.Client` (named after the plural)."""
        return self.info.plural

    @cached_property
    def rpcs(self) -> frozenset[str]:
        """The methods of the kind's service (`<Kind>Service`) in the protos."""
        svc = self.info.message.DESCRIPTOR.file.services_by_name[f"{self.info.kind}Service"]
        return frozenset(svc.methods_by_name)

    @property
    def delete_rpc(self) -> str | None:
        """`Destroy` for VMs (their pods go with them), `Delete` elsewhere, None if neither."""
        return next((m for m in ("Delete", "Destroy") if m in self.rpcs), None)

    @property
    def can_watch(self) -> bool:
        return "Watch" in self.rpcs

    @property
    def can_change(self) -> bool:
        """label, annotate, patch, edit and apply over an existing object need an Update."""
        return "Update" in self.rpcs

    @property
    def can_get_one(self) -> bool:
        """Read by key (Events have only List: `get event NAME` finds it in the list)."""
        return "Get" in self.rpcs

    def header_row(self, *, wide: bool) -> list[str]:
        return [*self.headers, *(self.wide if wide else ())]


def _node_row(obj: Any, now: float, rc: RowContext) -> Row:
    count = None if rc.pods_per_node is None else rc.pods_per_node.get(obj.metadata.name, 0)
    return printers.node_row(obj, now, wide=rc.wide, pods_on_node=count)


def _wide_row(fn: Callable[..., Row]) -> RowFn:
    """A printers row function taking `wide=`."""
    return lambda obj, now, rc: fn(obj, now, wide=rc.wide)


def _plain_row(fn: Callable[[Any, float], Row]) -> RowFn:
    """A printers row function with no wide columns."""
    return lambda obj, now, rc: fn(obj, now)


def _alone(fn: Callable[[Any], readiness.Readiness]) -> ReadinessFn:
    """A readiness that needs no node."""
    return lambda obj, node: fn(obj)


def _events_only(fn: Callable[[Any, Sequence[event_pb2.Event], float], str]) -> DescribeFn:
    return lambda obj, rel, now: fn(obj, rel.events, now)


ENTRIES: tuple[CliKind, ...] = (
    CliKind(POD, tuple(printers.POD_HEADERS), _wide_row(printers.pod_row),
            _events_only(describe.describe_pod), wide=tuple(printers.POD_WIDE),
            readiness=_alone(readiness.pod_readiness)),
    CliKind(NODE, tuple(printers.NODE_HEADERS), _node_row,
            lambda o, rel, now: describe.describe_node(o, rel.pods_on_node, rel.events, now),
            wide=tuple(printers.NODE_WIDE), related=frozenset({"pods_on_node"}),
            readiness=_alone(readiness.node_readiness)),
    CliKind(VM, tuple(printers.VM_HEADERS), _wide_row(printers.vm_row), _events_only(describe.describe_vm),
            wide=tuple(printers.VM_WIDE), readiness=readiness.vm_readiness),
    CliKind(EVENT, tuple(printers.EVENT_HEADERS), _plain_row(printers.event_row),
            _events_only(describe.describe_event), order=printers.sort_events),
    CliKind(LEASE, tuple(printers.LEASE_HEADERS), _plain_row(printers.lease_row),
            _events_only(describe.describe_lease)),
    CliKind(REPLICASET, tuple(printers.REPLICASET_HEADERS), _wide_row(printers.replicaset_row),
            _events_only(describe.describe_replicaset), wide=tuple(printers.REPLICASET_WIDE)),
    CliKind(DEPLOYMENT, tuple(printers.DEPLOYMENT_HEADERS), _wide_row(printers.deployment_row),
            lambda o, rel, now: describe.describe_deployment(o, rel.replica_sets, rel.events, now),
            wide=tuple(printers.WORKLOAD_WIDE), related=frozenset({"replica_sets"}),
            readiness=_alone(readiness.deployment_readiness)),
    CliKind(JOB, tuple(printers.JOB_HEADERS), _wide_row(printers.job_row),
            _events_only(describe.describe_job), wide=tuple(printers.WORKLOAD_WIDE),
            readiness=_alone(readiness.job_readiness)),
    CliKind(DAEMONSET, tuple(printers.DAEMONSET_HEADERS), _wide_row(printers.daemonset_row),
            _events_only(describe.describe_daemonset), wide=tuple(printers.WORKLOAD_WIDE),
            readiness=_alone(readiness.daemonset_readiness)),
    CliKind(SERVICE, tuple(printers.SERVICE_HEADERS), _wide_row(printers.service_row),
            lambda o, rel, now: describe.describe_service(o, rel.endpoints, rel.events, now),
            wide=tuple(printers.SERVICE_WIDE), related=frozenset({"endpoints"})),
    CliKind(ENDPOINTS, tuple(printers.ENDPOINTS_HEADERS), _plain_row(printers.endpoints_row),
            _events_only(describe.describe_endpoints)),
    CliKind(NAMESPACE, tuple(printers.NAMESPACE_HEADERS), _plain_row(printers.namespace_row),
            _events_only(describe.describe_namespace)),
    CliKind(CONFIGMAP, tuple(printers.CONFIGMAP_HEADERS), _plain_row(printers.configmap_row),
            _events_only(describe.describe_configmap)),
    CliKind(SECRET, tuple(printers.SECRET_HEADERS), _plain_row(printers.secret_row),
            _events_only(describe.describe_secret)),
    CliKind(PRIORITYCLASS, tuple(printers.PRIORITYCLASS_HEADERS), _plain_row(printers.priorityclass_row),
            _events_only(describe.describe_priorityclass)),
)

_BY_INFO: dict[str, CliKind] = {e.info.kind: e for e in ENTRIES}

# `get all`: kubectl's "all" category (the workloads and what serves them), in kubectl's order.
# Not configuration (ConfigMaps, Secrets), not cluster objects (nodes, VMs, namespaces).
ALL_CATEGORY: tuple[KindInfo, ...] = (POD, SERVICE, DAEMONSET, DEPLOYMENT, REPLICASET, JOB)


def entry(info: KindInfo) -> CliKind:
    """The CLI's entry for a manifest kind (every kind in `cowpod.manifest.kinds.KINDS` has one)."""
    return _BY_INFO[info.kind]


def all_kinds() -> tuple[KindInfo, ...]:
    """Every kind, in the manifest table's order."""
    return tuple(k for k in KINDS if k.kind in _BY_INFO)


def kinds_where(pred: Callable[[CliKind], bool]) -> tuple[KindInfo, ...]:
    return tuple(k for k in all_kinds() if pred(entry(k)))


def type_help(kinds: Sequence[KindInfo]) -> str:
    """A verb's TYPE help: the kinds it takes (so `--help` never lags behind the table)."""
    return " | ".join(k.plural for k in kinds) + " (singular, plural or short name; or TYPE/NAME)"
