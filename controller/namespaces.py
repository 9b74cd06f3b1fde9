"""Namespaces: the kind, the admission rule every create passes, and the loop that
empties a namespace being deleted.

As Kubernetes core/v1 has them:
- A Namespace is cluster-scoped; its name is an RFC 1123 label.
- The system namespaces (`SYSTEM_NAMESPACES`: `default`, `kube-system`, `kube-public`,
  `cowpod-system`, `cowpod-node-lease`) are created by the controller at start
  (idempotent) and can never be deleted. They count as existing even before that
  write lands, so a create racing the controller's start is never refused.
- Admission (Kubernetes' NamespaceLifecycle plugin): a `Create` of a namespaced
  object in a namespace that does not exist is NOT_FOUND, naming
  `metadata.namespace`; in a namespace that is Terminating it is
  FAILED_PRECONDITION (events and leases excepted, as Kubernetes lets a dying
  namespace's objects still report). It runs in the request chain
  (`controller.rpc.service_handler`), so every kind, including ones added later,
  gets it without code of its own.
- Delete sets `deletion_timestamp` and `status.phase: Terminating`; the
  `NamespaceController` then deletes everything in the namespace — workloads
  first (so nothing recreates pods), then pods gracefully (their agents stop the
  containers), then the rest — and removes the namespace once nothing is left.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from google.protobuf.message import Message

from controller import validation
from controller.kinds import DEFAULT_NAMESPACE, NODE_LEASE_NAMESPACE, PODS, Kind
from controller.metrics import Metrics
from controller.resource import Resource, set_time
from controller.rpc import Ctx
from controller.store import Store, decode
from cowpod.clock import Clock
from cowpod.errors import AlreadyExists, Conflict, CowpodError, FailedPrecondition, NotFound
from cowpod.leases import SYSTEM_NAMESPACE
from cowpod.v1 import meta_pb2, namespace_pb2, pod_pb2

log = logging.getLogger(__name__)

NAMESPACES: Kind[namespace_pb2.Namespace] = Kind(
    "namespaces", "Namespace", "v1", False, namespace_pb2.Namespace, namespace_pb2.NamespaceList,
    namespace_pb2.NamespaceWatchEvent,
    fields={"status.phase": lambda o: str(o.status.phase)},
)

ACTIVE = "Active"
TERMINATING = "Terminating"
# Set on a Namespace made for objects stored before namespaces existed.
ADOPTED = "cowpod.io/adopted"
# The finalizer a namespace carries until its contents are gone (Kubernetes' name for it).
CONTENT_FINALIZER = "kubernetes"
SYSTEM_NAMESPACES: tuple[str, ...] = (
    DEFAULT_NAMESPACE, "kube-system", "kube-public", SYSTEM_NAMESPACE, NODE_LEASE_NAMESPACE,
)
# Creates allowed in a Terminating namespace: what its remaining objects report with.
_CREATE_WHILE_TERMINATING = frozenset({"cowpod.v1.Event", "cowpod.v1.Lease"})
# How long an Active answer is trusted before the store is asked again. Deletes made
# through this process forget it at once; a namespace deleted through another
# controller process may still take creates this long, and its controller deletes them.
ACTIVE_CACHE_SECONDS = 2.0


def validate_namespace(ns: namespace_pb2.Namespace) -> None:
    errs = validation.Errors()
    validation.metadata(errs, ns.metadata, namespaced=False, name_label=True)
    if ns.status.phase:
        validation.one_of(errs, "status.phase", ns.status.phase, (ACTIVE, TERMINATING))
    errs.raise_if_any()


def new_namespace(name: str) -> namespace_pb2.Namespace:
    ns = namespace_pb2.Namespace()
    ns.metadata.name = name
    return ns


class Namespaces:
    """Namespace CRUD and the existence check the admission asks."""

    def __init__(self, res: Resource[namespace_pb2.Namespace], clock: Clock,
                 content_kinds: Sequence[Kind[Any]] = ()) -> None:
        self.res = res
        self.clock = clock
        self._active_until: dict[str, float] = {}
        # Namespaced kinds whose objects make a namespace with no Namespace object "legacy"
        # (stored before namespaces existed): it is adopted, not refused (`adopt_legacy`).
        # Events and leases do not count: one may outlive its namespace's removal by a moment.
        self.content_kinds = [k for k in content_kinds
                              if k.namespaced and k.resource not in ("events", "leases")]

    async def create(self, ns: namespace_pb2.Namespace) -> namespace_pb2.Namespace:
        ns.ClearField("status")
        ns.status.phase = ACTIVE
        ns.spec.ClearField("finalizers")
        ns.spec.finalizers.append(CONTENT_FINALIZER)
        self.res.prepare_new(ns)
        validate_namespace(ns)
        return await self.res.create(ns)

    async def ensure_system(self) -> None:
        """Create the system namespaces that are missing (every start; idempotent)."""
        for name in SYSTEM_NAMESPACES:
            try:
                await self.create(new_namespace(name))
                log.info("namespace %s created", name)
            except AlreadyExists:
                pass

    async def run_ensure_system(self, retry_seconds: float = 1.0) -> None:
        """`ensure_system` until it succeeds (etcd may not answer yet when the controller starts)."""
        while True:
            try:
                await self.ensure_system()
                return
            except CowpodError as err:
                log.warning("creating the system namespaces: %s; retrying", err)
            await self.clock.sleep(retry_seconds)

    async def update(self, req: namespace_pb2.Namespace) -> namespace_pb2.Namespace:
        def mutate(cur: namespace_pb2.Namespace) -> namespace_pb2.Namespace:
            cur.metadata.labels.clear()
            cur.metadata.labels.update(req.metadata.labels)
            cur.metadata.annotations.clear()
            cur.metadata.annotations.update(req.metadata.annotations)
            validate_namespace(cur)
            return cur

        _, name = self.res.names("", req.metadata.name)
        return await self.res.update("", name, req.metadata.resource_version, mutate)

    async def delete(self, opts: meta_pb2.DeleteOptions) -> namespace_pb2.Namespace:
        _, name = self.res.names("", opts.key.name)
        if name in SYSTEM_NAMESPACES:
            raise FailedPrecondition(f'namespace "{name}" is a system namespace and cannot be deleted')
        self._active_until.pop(name, None)

        def mutate(cur: namespace_pb2.Namespace) -> namespace_pb2.Namespace | None:
            if cur.status.phase == TERMINATING:
                return None
            cur.status.phase = TERMINATING
            set_time(cur.metadata.deletion_timestamp, self.clock.now())
            return cur

        out = await self.res.update("", name, opts.resource_version, mutate)
        self._active_until.pop(name, None)
        log.info("namespace %s terminating", name)
        return out

    async def phase(self, name: str) -> str:
        """ACTIVE, TERMINATING, or "" when the namespace does not exist."""
        if name in SYSTEM_NAMESPACES:
            return ACTIVE
        now = self.clock.monotonic()
        if self._active_until.get(name, 0.0) > now:
            return ACTIVE
        try:
            ns = await self.res.get("", name)
        except NotFound:
            return ""
        phase = ns.status.phase or ACTIVE
        if phase == ACTIVE:
            self._active_until[name] = now + ACTIVE_CACHE_SECONDS
        else:
            self._active_until.pop(name, None)
        return phase

    async def adopt_legacy(self, name: str) -> bool:
        """A cluster upgraded in place has objects in namespaces that never had a Namespace
        object; the first create there makes one (annotated `ADOPTED`) instead of breaking
        the workloads that live there. Asked only when a namespace is missing, and costs one
        scoped list per kind then."""
        for kind in self.content_kinds:
            kvs, _ = await self.res.store.list_raw(kind.prefix(name))
            if kvs:
                break
        else:
            return False
        ns = new_namespace(name)
        ns.metadata.annotations[ADOPTED] = "true"
        try:
            await self.create(ns)
            log.info("namespace %s adopted: it held objects but had no Namespace object", name)
        except AlreadyExists:
            pass
        return True

    async def admit_create(self, message: Message) -> None:
        """Raise unless `message` (a namespaced object being created) may live in its namespace."""
        meta: Any = getattr(message, "metadata", None)
        if meta is None:
            return
        name = str(meta.namespace) or DEFAULT_NAMESPACE
        errs = validation.Errors()
        validation.dns_label(errs, "metadata.namespace", name)
        if errs.items:
            return  # not a namespace name at all: the kind's validation says so (INVALID_ARGUMENT)
        phase = await self.phase(name)
        if not phase and await self.adopt_legacy(name):
            phase = ACTIVE
        if not phase:
            raise NotFound(f'metadata.namespace: namespaces "{name}" not found (create it first: '
                           "apply a `kind: Namespace` manifest)")
        if phase == TERMINATING and message.DESCRIPTOR.full_name not in _CREATE_WHILE_TERMINATING:
            raise FailedPrecondition(f"metadata.namespace: unable to create new content in namespace "
                                     f'"{name}" because it is being terminated')


class NamespaceAdmission:
    """The NamespaceLifecycle admission step of the request chain (`controller.rpc`).

    Looks at `Create` (one object) and `CreateBatch` (PodService: every pod) of any
    service whose request is an object of a namespaced kind; cluster-scoped kinds are
    named in `cluster_scoped` (message full names)."""

    def __init__(self, namespaces: Namespaces, cluster_scoped: Sequence[str]) -> None:
        self.namespaces = namespaces
        self.cluster_scoped = frozenset(cluster_scoped)

    async def __call__(self, method: str, request: Any) -> None:
        if method.endswith(".Create"):
            if isinstance(request, Message) and request.DESCRIPTOR.full_name not in self.cluster_scoped:
                await self.namespaces.admit_create(request)
        elif method == "PodService.CreateBatch":
            # The pods of a batch share a namespace as a rule: each namespace named is admitted
            # once, in the order the pods name it (the first refused is the one a walk over
            # every pod meets first; admitting depends on nothing but the namespace).
            first: dict[str, Message] = {}
            for pod in request.pods:
                first.setdefault(pod.metadata.namespace, pod)
            for pod in first.values():
                await self.namespaces.admit_create(pod)


class NamespaceServicer:
    def __init__(self, namespaces: Namespaces, metrics: Metrics) -> None:
        self.ns = namespaces
        self.res = namespaces.res
        self.metrics = metrics

    async def Create(self, req: namespace_pb2.Namespace, ctx: Ctx) -> namespace_pb2.Namespace:
        return await self.ns.create(req)

    async def Get(self, req: meta_pb2.ObjectKey, ctx: Ctx) -> namespace_pb2.Namespace:
        return await self.res.get("", req.name)

    async def List(self, req: meta_pb2.ListOptions, ctx: Ctx) -> namespace_pb2.NamespaceList:
        items, rev = await self.res.list(req)
        return namespace_pb2.NamespaceList(items=items, resource_version=rev)

    async def Update(self, req: namespace_pb2.Namespace, ctx: Ctx) -> namespace_pb2.Namespace:
        return await self.ns.update(req)

    async def Delete(self, req: meta_pb2.DeleteOptions, ctx: Ctx) -> namespace_pb2.Namespace:
        return await self.ns.delete(req)

    async def Watch(self, req: meta_pb2.WatchOptions, ctx: Ctx) -> AsyncIterator[bytes]:
        with self.metrics.watch_open("namespaces"):
            async for b in self.res.watch(req):
                yield b


DeletePod = Callable[[meta_pb2.DeleteOptions], Awaitable[Any]]


class NamespaceController:
    """Empties Terminating namespaces, then removes them (Kubernetes' namespace controller).

    One pass (`sync`) per period: for each Terminating namespace, delete the objects of
    `kinds` in it — `first` (workloads, whose controllers would otherwise recreate
    pods) before pods, pods through `delete_pod` (graceful: the agent stops their
    containers and finalizes them), everything else directly — and the namespace
    itself once a pass finds nothing left. Idempotent, so a crash mid-way is finished
    by the next pass or the next controller."""

    def __init__(self, store: Store, namespaces: Namespaces, kinds: Sequence[Kind[Any]],
                 delete_pod: DeletePod, clock: Clock, *, period: float = 1.0,
                 first: Sequence[str] = ()) -> None:
        self.store = store
        self.namespaces = namespaces
        self.kinds = [k for k in kinds if k.namespaced]
        self.delete_pod = delete_pod
        self.clock = clock
        self.period = period
        self.first = frozenset(first)

    async def run(self) -> None:
        while True:
            try:
                await self.sync()
            except CowpodError as err:  # etcd away: the next pass retries
                log.warning("namespace controller: %s", err)
            await self.clock.sleep(self.period)

    async def sync(self) -> None:
        items, _ = await self.store.list(NAMESPACES.prefix(), namespace_pb2.Namespace)
        for ns in items:
            if ns.status.phase == TERMINATING:
                await self.finalize(ns)

    async def finalize(self, ns: namespace_pb2.Namespace) -> bool:
        """Delete what is left in `ns`; remove `ns` when nothing was. True when it is gone."""
        name = ns.metadata.name
        ordered = sorted(self.kinds, key=lambda k: (k.resource not in self.first, k is PODS))
        left = 0
        for kind in ordered:
            kvs, _ = await self.store.list_raw(kind.prefix(name))
            for kv in kvs:
                left += 1
                if kind is PODS:
                    pod = decode(pod_pb2.Pod, kv.value, kv.mod_revision)
                    if pod.metadata.HasField("deletion_timestamp"):
                        continue  # its agent is stopping it
                    try:
                        await self.delete_pod(meta_pb2.DeleteOptions(
                            key=meta_pb2.ObjectKey(namespace=name, name=pod.metadata.name)))
                    except NotFound:
                        pass
                else:
                    try:
                        await self.store.delete(kv.key, kind.message, expected_revision=kv.mod_revision)
                    except (NotFound, Conflict):
                        pass
            if left and kind.resource in self.first:
                return False  # workloads go first: pods next pass, once nothing recreates them
        if left:
            return False
        try:
            await self.store.delete(NAMESPACES.key("", name), namespace_pb2.Namespace,
                                    expected_revision=ns.metadata.resource_version)
            log.info("namespace %s deleted", name)
        except (NotFound, Conflict):
            pass
        return True

