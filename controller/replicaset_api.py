"""ReplicaSets as stored objects: the kind, validation, defaults, CRUD and the servicer.

The reconciler that makes pods match `spec.replicas` is `controller.replicaset`;
this module is only the API surface (`ReplicaSetService`), in the same shape as
the other kinds: servicer (decode -> domain -> encode) over a `Resource`.

Defaults and rules, as Kubernetes apps/v1 has them:
- `spec.replicas` absent -> 1; negative is invalid.
- `spec.selector` empty -> the template's labels (a convenience apps/v1 dropped;
  kept because an empty selector is never what anyone meant). It must match the
  template's labels, and it is immutable: changing it would orphan every pod.
- `spec.template.spec.restartPolicy` must be Always (a replica that exits is
  restarted in place, not replaced).
- Delete removes the object at once; the reconciler then deletes the pods it owned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from controller import validation, workload_api
from controller.kinds import Kind
from controller.labelselector import is_empty
from controller.metrics import Metrics
from controller.resource import Resource
from controller.rpc import Ctx, send_warnings
from controller.store import Store
from cowpod.api import podfields
from cowpod.clock import Clock
from cowpod.errors import Invalid
from cowpod.v1 import meta_pb2, workload_pb2

REPLICASETS: Kind[workload_pb2.ReplicaSet] = Kind(
    "replicasets", "ReplicaSet", "apps/v1", True, workload_pb2.ReplicaSet, workload_pb2.ReplicaSetList,
    workload_pb2.ReplicaSetWatchEvent,
)

def validate_spec(errs: validation.Errors, spec: workload_pb2.ReplicaSetSpec) -> None:
    if spec.HasField("replicas") and spec.replicas < 0:
        errs.add("spec.replicas", f"must be greater than or equal to 0 (got {spec.replicas})")
    if spec.min_ready_seconds < 0:
        errs.add("spec.minReadySeconds", "must be greater than or equal to 0")
    workload_api.template(errs, spec.selector, spec.template, kind="ReplicaSet")


def validate_replicaset(rs: workload_pb2.ReplicaSet) -> None:
    errs = validation.Errors()
    validation.metadata(errs, rs.metadata, namespaced=True)
    validate_spec(errs, rs.spec)
    validation.conditions(errs, "status.conditions", rs.status.conditions)
    errs.raise_if_any()


def apply_defaults(spec: workload_pb2.ReplicaSetSpec) -> None:
    if not spec.HasField("replicas"):
        spec.replicas = 1
    if is_empty(spec.selector) and spec.template.metadata.labels:
        spec.selector.match_labels.update(spec.template.metadata.labels)
    if not spec.template.spec.restart_policy:
        spec.template.spec.restart_policy = "Always"


class ReplicaSets:
    def __init__(self, res: Resource[workload_pb2.ReplicaSet], store: Store, clock: Clock) -> None:
        self.res = res
        self.store = store
        self.clock = clock

    async def create(self, rs: workload_pb2.ReplicaSet) -> workload_pb2.ReplicaSet:
        rs.ClearField("status")
        apply_defaults(rs.spec)
        self.res.prepare_new(rs)
        validate_replicaset(rs)
        return await self.res.create(rs)

    async def update(self, req: workload_pb2.ReplicaSet) -> workload_pb2.ReplicaSet:
        def mutate(cur: workload_pb2.ReplicaSet) -> workload_pb2.ReplicaSet:
            new = workload_pb2.ReplicaSet()
            new.CopyFrom(cur)
            new.metadata.labels.clear()
            new.metadata.labels.update(req.metadata.labels)
            new.metadata.annotations.clear()
            new.metadata.annotations.update(req.metadata.annotations)
            spec = workload_pb2.ReplicaSetSpec()
            spec.CopyFrom(req.spec)
            if not spec.HasField("replicas"):
                spec.replicas = cur.spec.replicas
            if is_empty(spec.selector):
                spec.selector.CopyFrom(cur.spec.selector)
            if not spec.template.spec.restart_policy:
                spec.template.spec.restart_policy = "Always"
            if spec.selector != cur.spec.selector:
                raise Invalid("spec.selector", "field is immutable: delete and recreate the ReplicaSet")
            new.spec.CopyFrom(spec)
            if new.spec != cur.spec:
                new.metadata.generation = cur.metadata.generation + 1
            validate_replicaset(new)
            return new

        ns, name = self.res.names(req.metadata.namespace, req.metadata.name)
        return await self.res.update(ns, name, req.metadata.resource_version, mutate)

    async def update_status(self, req: workload_pb2.ReplicaSet) -> workload_pb2.ReplicaSet:
        errs = validation.Errors()
        validation.conditions(errs, "status.conditions", req.status.conditions)
        errs.raise_if_any()

        def mutate(cur: workload_pb2.ReplicaSet) -> workload_pb2.ReplicaSet | None:
            if cur.status == req.status:
                return None
            cur.status.CopyFrom(req.status)
            return cur

        ns, name = self.res.names(req.metadata.namespace, req.metadata.name)
        return await self.res.update(ns, name, req.metadata.resource_version, mutate)

    async def scale(self, req: workload_pb2.ScaleRequest) -> workload_pb2.ReplicaSet:
        if req.replicas < 0:
            raise Invalid("replicas", f"must be greater than or equal to 0 (got {req.replicas})")

        def mutate(cur: workload_pb2.ReplicaSet) -> workload_pb2.ReplicaSet | None:
            if cur.spec.replicas == req.replicas:
                return None
            cur.spec.replicas = req.replicas
            cur.metadata.generation += 1
            return cur

        ns, name = self.res.names(req.key.namespace, req.key.name)
        return await self.res.update(ns, name, req.resource_version, mutate)

    async def delete(self, opts: meta_pb2.DeleteOptions) -> workload_pb2.ReplicaSet:
        ns, name = self.res.names(opts.key.namespace, opts.key.name)
        return await self.res.remove(ns, name, opts.resource_version)


class ReplicaSetServicer:
    def __init__(self, replicasets: ReplicaSets, metrics: Metrics) -> None:
        self.rs = replicasets
        self.res = replicasets.res
        self.metrics = metrics

    async def Create(self, req: workload_pb2.ReplicaSet, ctx: Ctx) -> workload_pb2.ReplicaSet:
        warnings = podfields.object_warnings(req)  # of the pod template, as for a Pod
        out = await self.rs.create(req)
        send_warnings(ctx, warnings)
        return out

    async def Get(self, req: meta_pb2.ObjectKey, ctx: Ctx) -> workload_pb2.ReplicaSet:
        return await self.res.get_key(req)

    async def List(self, req: meta_pb2.ListOptions, ctx: Ctx) -> workload_pb2.ReplicaSetList:
        items, rev = await self.res.list(req)
        return workload_pb2.ReplicaSetList(items=items, resource_version=rev)

    async def Update(self, req: workload_pb2.ReplicaSet, ctx: Ctx) -> workload_pb2.ReplicaSet:
        return await self.rs.update(req)

    async def UpdateStatus(self, req: workload_pb2.ReplicaSet, ctx: Ctx) -> workload_pb2.ReplicaSet:
        return await self.rs.update_status(req)

    async def Scale(self, req: workload_pb2.ScaleRequest, ctx: Ctx) -> workload_pb2.ReplicaSet:
        return await self.rs.scale(req)

    async def Delete(self, req: meta_pb2.DeleteOptions, ctx: Ctx) -> workload_pb2.ReplicaSet:
        return await self.rs.delete(req)

    async def Watch(self, req: meta_pb2.WatchOptions, ctx: Ctx) -> AsyncIterator[bytes]:
        with self.metrics.watch_open("replicasets"):
            async for b in self.res.watch(req):
                yield b
