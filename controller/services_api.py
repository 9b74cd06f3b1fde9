"""Services and Endpoints as stored objects: kinds, validation, defaults, CRUD, servicers.

cowpod runs no service proxy, so every Service is headless (Kubernetes'
`clusterIP: None`): a Service is a name and a selector, and its Endpoints —
kept by `controller.endpoints` — list the ready pods' addresses, which each
node agent's DNS answers for `<service>`, `<service>.<namespace>` and
`<service>.<namespace>.svc.cluster.local`. What that rules out is refused at
create with the field and the reason rather than accepted and ignored:
`type: NodePort|ExternalName` and a `clusterIP` other than None. `type: LoadBalancer`
is accepted as on a Kubernetes cluster without a cloud provider: no load balancer,
EXTERNAL-IP `<pending>`, a warning, and the Service works as a ClusterIP one.

Endpoints are read-only to clients (the API has no write verb for them); the
endpoints loop writes them in-process, and deleting a Service deletes them.

CRUD and the servicers are the workload kinds' (`controller.workload_api`): this
module gives only the Service's defaults, validation and update merge.
"""

from __future__ import annotations

from controller import validation
from controller.kinds import Kind
from controller.resource import Resource
from controller.workload_api import ReadServicer, Workloads, WorkloadServicer
from cowpod.api.validation import PROTOCOLS
from cowpod.errors import NotFound
from cowpod.v1 import meta_pb2, service_pb2

SERVICES: Kind[service_pb2.Service] = Kind(
    "services", "Service", "v1", True, service_pb2.Service, service_pb2.ServiceList,
    service_pb2.ServiceWatchEvent,
)
ENDPOINTS: Kind[service_pb2.Endpoints] = Kind(
    "endpoints", "Endpoints", "v1", True, service_pb2.Endpoints, service_pb2.EndpointsList,
    service_pb2.EndpointsWatchEvent,
)

HEADLESS = "None"
# LoadBalancer is accepted as Kubernetes without a cloud provider accepts it: nothing is
# provisioned (EXTERNAL-IP stays <pending>), apply warns, and the Service works as ClusterIP.
SERVICE_TYPES = ("ClusterIP", "LoadBalancer")
_WHY_HEADLESS = "cowpod has no service proxy: every Service is headless (its name resolves to the ready pods)"


def target_port(p: service_pb2.ServicePort) -> str:
    """The pods' port a Service port sends to: a number or a containerPort name."""
    return p.target_port or str(p.port)


def validate_service(svc: service_pb2.Service) -> None:
    errs = validation.Errors()
    validation.metadata(errs, svc.metadata, namespaced=True)
    # A Service's name is a DNS label: it becomes the first label of a DNS name.
    validation.dns_label(errs, "metadata.name", svc.metadata.name)
    spec = svc.spec
    validation.label_map(errs, "spec.selector", spec.selector)
    if spec.type not in SERVICE_TYPES:
        errs.add("spec.type", f"unsupported value {spec.type!r}: must be ClusterIP or LoadBalancer "
                              f"({_WHY_HEADLESS})")
    if spec.cluster_ip != HEADLESS:
        errs.add("spec.clusterIP", f"unsupported value {spec.cluster_ip!r}: must be None ({_WHY_HEADLESS})")
    names: set[str] = set()
    seen: set[tuple[int, str]] = set()
    for i, p in enumerate(spec.ports):
        path = f"spec.ports[{i}]"
        if len(spec.ports) > 1 and not p.name:
            errs.add(f"{path}.name", "required when the Service has more than one port")
        if p.name:
            validation.dns_label(errs, f"{path}.name", p.name)
            if p.name in names:
                errs.add(f"{path}.name", f"duplicate port name {p.name!r}")
            names.add(p.name)
        if not 1 <= p.port <= 65535:
            errs.add(f"{path}.port", f"must be between 1 and 65535 (got {p.port})")
        validation.one_of(errs, f"{path}.protocol", p.protocol, PROTOCOLS)
        if (p.port, p.protocol) in seen:
            errs.add(f"{path}.port", f"duplicate port {p.port}/{p.protocol}")
        seen.add((p.port, p.protocol))
        tp = p.target_port
        if tp.isdigit():
            if not 1 <= int(tp) <= 65535:
                errs.add(f"{path}.targetPort", f"must be between 1 and 65535 (got {tp})")
        elif tp:
            validation.port_name(errs, f"{path}.targetPort", tp)
    errs.raise_if_any()


def apply_defaults(svc: service_pb2.Service) -> None:
    default_spec(svc.spec)


def default_spec(spec: service_pb2.ServiceSpec) -> None:
    """What Kubernetes defaults in a Service's spec (and cowpod's `clusterIP: None`)."""
    spec.type = spec.type or "ClusterIP"
    spec.cluster_ip = spec.cluster_ip or HEADLESS
    for p in spec.ports:
        p.protocol = p.protocol or "TCP"
        p.target_port = p.target_port or str(p.port)


def merge(cur: service_pb2.Service, req: service_pb2.Service) -> service_pb2.ServiceSpec:
    """An update replaces the whole spec (defaulted again); nothing in it is immutable."""
    spec = service_pb2.ServiceSpec()
    spec.CopyFrom(req.spec)
    default_spec(spec)
    return spec


class Services(Workloads[service_pb2.Service]):
    """The shared workload CRUD (`controller.workload_api.Workloads`) with the Service rules,
    and a delete that takes the Service's Endpoints with it."""

    def __init__(self, res: Resource[service_pb2.Service],
                 endpoints: Resource[service_pb2.Endpoints]) -> None:
        super().__init__(res, defaults=apply_defaults, validate=validate_service, merge=merge)
        self.endpoints = endpoints

    async def delete(self, opts: meta_pb2.DeleteOptions) -> service_pb2.Service:
        gone = await super().delete(opts)
        ns, name = self.res.names(opts.key.namespace, opts.key.name)
        try:
            await self.endpoints.remove(ns, name)
        except NotFound:
            pass  # never written (no selector, or the loop has not run yet)
        return gone


class ServiceServicer(WorkloadServicer[service_pb2.Service]):
    """The shared workload servicer: Create (warning that a LoadBalancer gets none), Get, List,
    Update, Delete, Watch."""


class EndpointsServicer(ReadServicer[service_pb2.Endpoints]):
    """Get, List and Watch only: the endpoints loop writes Endpoints in-process."""
