"""The workload kinds served by the shared `workload_api` CRUD: one row each.

server.py registers every row (watch hub, servicer, gRPC service); adding a kind
here is all the API server needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor

from controller import daemonset_api, deployment_api, job_api
from controller.kinds import Kind
from controller.metrics import Metrics
from controller.resource import Resource
from controller.store import Store
from controller.watch import WatchHub
from controller.workload_api import Workloads, WorkloadServicer
from cowpod.clock import Clock
from cowpod.v1 import workload_pb2


@dataclass(frozen=True)
class WorkloadKind:
    kind: Kind[Any]
    service: ServiceDescriptor
    defaults: Callable[[Any], None]
    validate: Callable[[Any], None]
    merge: Callable[[Any, Any], Any]

    def servicer(self, store: Store, clock: Clock, hub: WatchHub[Any],
                 metrics: Metrics) -> WorkloadServicer[Any]:
        res: Resource[Any] = Resource(self.kind, store, clock, hub)
        crud: Workloads[Any] = Workloads(res, defaults=self.defaults, validate=self.validate,
                                         merge=self.merge)
        return WorkloadServicer(crud, metrics)


def _service(name: str) -> ServiceDescriptor:
    return workload_pb2.DESCRIPTOR.services_by_name[name]


WORKLOAD_KINDS: tuple[WorkloadKind, ...] = (
    WorkloadKind(deployment_api.DEPLOYMENTS, _service("DeploymentService"), deployment_api.apply_defaults,
                 deployment_api.validate, deployment_api.merge),
    WorkloadKind(job_api.JOBS, _service("JobService"), job_api.apply_defaults, job_api.validate,
                 job_api.merge),
    WorkloadKind(daemonset_api.DAEMONSETS, _service("DaemonSetService"), daemonset_api.apply_defaults,
                 daemonset_api.validate, daemonset_api.merge),
)

WORKLOAD_RESOURCES: tuple[Kind[Any], ...] = tuple(w.kind for w in WORKLOAD_KINDS)
