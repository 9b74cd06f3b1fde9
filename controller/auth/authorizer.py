"""Authorization: may this identity call this method with this request?

`authorize(identity, method, request)` is a pure function over the decision
table below, so every rule is a table row in a unit test. Where the answer
depends on stored state the request does not show (is the pod this agent
reads bound to *its* node?), the decision carries a `PodCheck` that the
interceptor resolves against the store.

    role        may
    ---------   ---------------------------------------------------------------
    admin       everything
    edit        pods (not bind, not status), events, ReplicaSets, Deployments, Jobs,
                DaemonSets (not status), Services; read
                nodes, VMs, leases, Endpoints;
                ConfigMaps and Secrets (Create/Update/Delete, and read Secrets);
                read Namespaces and PriorityClasses (creating and deleting them is admin's)
    view        read (Get/List/Watch) everything but tokens and Secrets; pod logs
    node X      its own Node (register, heartbeat (unary or each message of a
                HeartbeatStream), get, status; never update:
                see noderestriction.py), the pods
                bound to X (list/watch by spec.nodeName=X, get, status, delete),
                its lease in cowpod-node-lease, create events, its own serving
                certificate, list/watch Endpoints (its DNS), get a ConfigMap or
                Secret while a pod bound to X references it. Never: create or
                bind pods, other nodes or their pods, VMs, tokens.
    scheduler   read pods, nodes, VMs; bind; status of unbound pods (why pending, the
                node nominated for preemption); delete pods (preemption's victims, with
                their grace period, as kube-scheduler may); create events; its
                leader-election lease cowpod-system/cowpod-scheduler
    bootstrap   exchange a bootstrap token for a node certificate
    anonymous   health, who-am-I, exchange a bootstrap token; else UNAUTHENTICATED
    none        health, who-am-I

Services this table does not name are denied to every role but admin: a
service added later stays closed until someone decides who may call it
(least privilege; before, edit could call any verb of an unlisted service).
The scheduler's leader-election lease is one lease, `cowpod-system/
cowpod-scheduler`: it may not take the autoscaler's or anyone else's.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from controller.auth.identity import Identity, Role
from controller.auth.noderestriction import register_violation
from cowpod.leases import SCHEDULER_LEASE_NAME, SYSTEM_NAMESPACE

NODE_LEASE_NAMESPACE = "cowpod-node-lease"

READ_VERBS = frozenset({"Get", "List", "Watch"})

POD = "cowpod.v1.PodService"
NODE = "cowpod.v1.NodeService"
VM = "cowpod.v1.VMService"
REPLICASET = "cowpod.v1.ReplicaSetService"
DEPLOYMENT = "cowpod.v1.DeploymentService"
JOB = "cowpod.v1.JobService"
DAEMONSET = "cowpod.v1.DaemonSetService"
SERVICE = "cowpod.v1.ServiceService"
ENDPOINTS = "cowpod.v1.EndpointsService"
EVENT = "cowpod.v1.EventService"
NAMESPACE = "cowpod.v1.NamespaceService"
CONFIGMAP = "cowpod.v1.ConfigMapService"
SECRET = "cowpod.v1.SecretService"
PRIORITYCLASS = "cowpod.v1.PriorityClassService"
LEASE = "cowpod.v1.LeaseService"
TOKEN = "cowpod.v1.TokenService"
BOOTSTRAP = "cowpod.v1.BootstrapService"
IDENTITY = "cowpod.v1.IdentityService"
HEALTH = "grpc.health.v1.Health"
REFLECTION = frozenset({"grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"})

# Methods anyone who completed the TLS handshake may call.
PUBLIC = frozenset({(HEALTH, "Check"), (HEALTH, "Watch"), (IDENTITY, "WhoAmI"), (BOOTSTRAP, "ExchangeToken")})

# Per service: what edit may do beyond reading. A service missing here is admin-only.
_EDIT_WRITES: dict[str, frozenset[str]] = {
    POD: frozenset({"Create", "CreateBatch", "Update", "Delete", "Logs", "Exec", "ExecStream"}),
    REPLICASET: frozenset({"Create", "Update", "Scale", "Delete"}),
    DEPLOYMENT: frozenset({"Create", "Update", "Scale", "Delete"}),
    JOB: frozenset({"Create", "Update", "Delete"}),
    DAEMONSET: frozenset({"Create", "Update", "Delete"}),
    SERVICE: frozenset({"Create", "Update", "Delete"}),
    ENDPOINTS: frozenset(),  # the controller's endpoints loop writes them
    EVENT: frozenset({"Create"}),
    CONFIGMAP: frozenset({"Create", "Update", "Delete"}),
    SECRET: frozenset({"Create", "Update", "Delete"}),
    NAMESPACE: frozenset(),
    PRIORITYCLASS: frozenset(),  # cluster-wide scheduling policy: admin's, as in Kubernetes
    NODE: frozenset(),
    VM: frozenset(),
    LEASE: frozenset(),
    TOKEN: frozenset(),
}
# Reads beyond Get/List/Watch that view may do.
_VIEW_EXTRA: dict[str, frozenset[str]] = {POD: frozenset({"Logs"})}
# Services whose reads are admin-only too.
_ADMIN_ONLY = frozenset({TOKEN})
# Services view may not read (Kubernetes' view role cannot read Secrets: they are credentials).
_NOT_FOR_VIEW = frozenset({SECRET})


class Requirement(enum.Enum):
    """What the interceptor must confirm in the store before or after the call."""

    BOUND_BEFORE = "bound-before"  # stored pod (namespace/name) is bound to `node` before the call
    BOUND_RESPONSE = "bound-response"  # the Pod the call returns is bound to `node`
    # a pod bound to `node` in `namespace` references the ConfigMap/Secret (`kind`) `name`
    REFERENCED = "referenced"


@dataclass(frozen=True)
class PodCheck:
    requirement: Requirement
    node: str
    namespace: str = ""
    name: str = ""
    kind: str = ""  # REFERENCED: "ConfigMap" | "Secret"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""
    # When denied: was the caller unknown (UNAUTHENTICATED) or known but not allowed?
    unauthenticated: bool = False
    check: PodCheck | None = None


ALLOW = Decision(True)


def split_method(method: str) -> tuple[str, str]:
    """'/cowpod.v1.PodService/Create' -> ('cowpod.v1.PodService', 'Create')."""
    _, _, rest = method.partition("/")
    service, _, verb = rest.partition("/")
    return service, verb


def short(service: str) -> str:
    return service.rsplit(".", 1)[-1]


def _deny(identity: Identity, service: str, verb: str, why: str) -> Decision:
    return Decision(
        False,
        f"{identity.describe()} may not call {short(service)}/{verb}: {why}",
        unauthenticated=not identity.authenticated,
    )


def authorize(identity: Identity, method: str, request: Any) -> Decision:
    return decide(identity, *split_method(method), request)


def decide(identity: Identity, service: str, verb: str, request: Any) -> Decision:
    """`authorize` for a method already split (the interceptor splits each method once)."""
    if (service, verb) in PUBLIC:
        return ALLOW
    if identity.role is Role.ANONYMOUS:
        return Decision(
            False,
            f"{short(service)}/{verb} needs credentials: a client certificate of the cluster "
            "or a bearer token (see `cowpod config`)",
            unauthenticated=True,
        )
    role = identity.role
    if role is Role.ADMIN:
        return ALLOW
    if role is Role.NODE:
        return _node(identity, service, verb, request)
    if role is Role.SCHEDULER:
        return _scheduler(identity, service, verb, request)
    if role in (Role.EDIT, Role.VIEW):
        return _user(identity, service, verb)
    return _deny(identity, service, verb, f"the {role.value} role has no permissions")


def _user(identity: Identity, service: str, verb: str) -> Decision:
    if service in _ADMIN_ONLY:
        return _deny(identity, service, verb, "only admin manages tokens")
    if service in REFLECTION:
        return ALLOW
    if service in _NOT_FOR_VIEW and identity.role is Role.VIEW:
        return _deny(identity, service, verb, "the view role may not read Secrets")
    writes = _EDIT_WRITES.get(service)
    if writes is None:
        return _deny(identity, service, verb, "the service is not in the authorization table (admin only)")
    if verb in READ_VERBS or verb in _VIEW_EXTRA.get(service, frozenset()):
        return ALLOW
    if identity.role is Role.VIEW:
        return _deny(identity, service, verb, "the view role only reads")
    if verb not in writes:
        return _deny(identity, service, verb, "the edit role changes pods and workloads, not this")
    return ALLOW


def _scheduler(identity: Identity, service: str, verb: str, request: Any) -> Decision:
    if service in (POD, NODE, VM) and verb in READ_VERBS:
        return ALLOW
    if service == POD and verb in ("Bind", "BindBatch", "Delete"):
        return ALLOW
    if service == POD and verb == "UpdateStatus":
        # Saying why a pod is pending (PodScheduled=False) on pods no node owns yet.
        meta = request.metadata
        return Decision(True, check=PodCheck(Requirement.BOUND_BEFORE, "", meta.namespace, meta.name))
    if service == EVENT and verb == "Create":
        return ALLOW
    if service == LEASE and verb in ("Get", "Create", "Update"):
        if _lease_key(verb, request) == (SYSTEM_NAMESPACE, SCHEDULER_LEASE_NAME):
            return ALLOW
        why = f"the scheduler may only take its own lease {SYSTEM_NAMESPACE}/{SCHEDULER_LEASE_NAME}"
        return _deny(identity, service, verb, why)
    return _deny(identity, service, verb, "the scheduler may only read, bind and preempt")


def _lease_key(verb: str, request: Any) -> tuple[str, str]:
    """(namespace, name) of the lease a LeaseService request is about."""
    if verb in ("Create", "Update"):
        return str(request.metadata.namespace), str(request.metadata.name)
    if verb == "Delete":
        return str(request.key.namespace), str(request.key.name)
    return str(getattr(request, "namespace", "")), str(getattr(request, "name", ""))


def selector_pins(selector: str, field: str, value: str) -> bool:
    """Does a field selector (comma = AND) contain the term `field=value`?"""
    for term in selector.split(","):
        key, sep, v = term.partition("==") if "==" in term else term.partition("=")
        if sep and not key.endswith("!") and key.strip() == field and v.strip() == value:
            return True
    return False


def _only_own(identity: Identity, service: str, verb: str, name: str, what: str) -> Decision:
    me = identity.node_name
    if name == me:
        return ALLOW
    return _deny(identity, service, verb, f"a node may only touch its own {what} ({me!r}, not {name!r})")


def _node(identity: Identity, service: str, verb: str, request: Any) -> Decision:
    me = identity.node_name
    if service == NODE:
        if verb == "Register":
            why = register_violation(request)
            if why is not None and request.metadata.name == me:
                return _deny(identity, service, verb, why)
            return _only_own(identity, service, verb, request.metadata.name, "Node")
        if verb == "UpdateStatus":
            return _only_own(identity, service, verb, request.metadata.name, "Node")
        if verb == "Update":
            return _deny(identity, service, verb, "a node changes only its status and heartbeat; "
                         "its spec, labels and taints are for admins and the controller")
        if verb == "Heartbeat":
            return _only_own(identity, service, verb, request.node_name, "Node")
        if verb == "HeartbeatStream":
            # Opening it is allowed; the interceptor then admits every message as a
            # Heartbeat (the row above), so a node's stream renews only that node.
            return ALLOW
        if verb == "Get":
            return _only_own(identity, service, verb, request.name, "Node")
        if verb in ("List", "Watch"):
            opts = request.list if verb == "Watch" else request
            if selector_pins(opts.field_selector, "metadata.name", me):
                return ALLOW
            return _deny(identity, service, verb, f"a node must select fieldSelector metadata.name={me}")
        return _deny(identity, service, verb, "nodes do not delete nodes")
    if service == POD:
        if verb in ("List", "Watch"):
            opts = request.list if verb == "Watch" else request
            if selector_pins(opts.field_selector, "spec.nodeName", me):
                return ALLOW
            why = f"a node may only list its own pods (fieldSelector spec.nodeName={me})"
            return _deny(identity, service, verb, why)
        if verb == "Get":
            return Decision(True, check=PodCheck(Requirement.BOUND_RESPONSE, me))
        if verb == "UpdateStatus":
            meta = request.metadata
            return Decision(True, check=PodCheck(Requirement.BOUND_BEFORE, me, meta.namespace, meta.name))
        if verb == "Delete":
            key = request.key
            return Decision(True, check=PodCheck(Requirement.BOUND_BEFORE, me, key.namespace, key.name))
        return _deny(identity, service, verb, "nodes may not create, change, bind or exec into pods")
    if service == EVENT and verb == "Create":
        return ALLOW
    if service == ENDPOINTS and verb in ("List", "Watch"):
        return ALLOW  # the agent's DNS answers Service names from every namespace's Endpoints
    if service in (CONFIGMAP, SECRET):
        if verb == "Get":
            kind = "ConfigMap" if service == CONFIGMAP else "Secret"
            return Decision(True, check=PodCheck(Requirement.REFERENCED, me, request.namespace, request.name,
                                                 kind=kind))
        return _deny(identity, service, verb, "a node may only get the ConfigMaps and Secrets its pods use")
    if service == BOOTSTRAP and verb == "SignServingCertificate":
        return ALLOW  # the servicer signs only for the caller's own node name
    if service == LEASE and verb in ("Get", "Create", "Update", "Delete"):
        if verb in ("Create", "Update"):
            ns, name = request.metadata.namespace, request.metadata.name
        elif verb == "Delete":
            ns, name = request.key.namespace, request.key.name
        else:
            ns, name = request.namespace, request.name
        if ns == NODE_LEASE_NAMESPACE and name == me:
            return ALLOW
        return _deny(identity, service, verb, f"a node may only use its lease {NODE_LEASE_NAMESPACE}/{me}")
    return _deny(identity, service, verb, "not allowed for nodes")
