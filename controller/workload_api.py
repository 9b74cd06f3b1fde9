"""What the workload kinds' APIs share: template rules, int-or-percent, CRUD and the servicer.

Deployments, Jobs and DaemonSets (and the rules ReplicaSets use for their
template) are stored objects with a `spec.selector`, a `spec.template` and a
`status` that only their controller writes. Each kind's module
(`deployment_api`, `job_api`, `daemonset_api`) supplies three pure functions —
defaults, validation and how an update merges into the stored object — and
this module does the rest in one place: create (server-owned fields, defaults,
validation), update (compare-and-swap when a resource_version is given,
`metadata.generation` bumped when the spec changes), status updates, scale and
delete, and the gRPC servicer (decode -> domain -> encode).

Services use the same CRUD and servicer with their own three functions
(`controller.services_api`), and their read-only Endpoints the read half
(`ReadServicer`): one implementation of every verb for all these kinds.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from controller import validation
from controller.labelselector import is_empty, matches, to_string
from controller.metrics import Metrics
from controller.resource import Resource
from controller.rpc import Ctx, send_warnings
from cowpod.api import podfields
from cowpod.api.validation import LABEL_SELECTOR_OPERATORS
from cowpod.errors import Invalid
from cowpod.v1 import meta_pb2, pod_pb2, workload_pb2

M = TypeVar("M", bound=Message)

_INT_OR_PERCENT = re.compile(r"^(0|[1-9][0-9]*)%?$")


# ---- int or percent (Kubernetes' IntOrString for maxSurge/maxUnavailable) ---------------------------


def check_int_or_percent(errs: validation.Errors, path: str, value: str) -> None:
    """`value` is "" (unset), a whole number or a whole percent up to 100%."""
    if not value:
        return
    if not _INT_OR_PERCENT.match(value):
        errs.add(path, f"must be a whole number or a percent such as '25%' (got {value!r})")
    elif value.endswith("%") and int(value[:-1]) > 100:
        errs.add(path, f"must not be greater than 100% (got {value!r})")


def check_rolling_update(errs: validation.Errors, path: str, max_surge: str, max_unavailable: str) -> None:
    """`maxSurge` and `maxUnavailable` (Deployments, DaemonSets): each an int or percent, and not
    both zero, or the rollout could never take a step."""
    check_int_or_percent(errs, f"{path}.maxSurge", max_surge)
    check_int_or_percent(errs, f"{path}.maxUnavailable", max_unavailable)
    if max_surge in ("0", "0%") and max_unavailable in ("0", "0%"):
        errs.add(f"{path}.maxUnavailable", "may not be 0 when `maxSurge` is 0: the rollout could never "
                                           "replace a pod")


def resolve_int_or_percent(value: str, total: int, *, round_up: bool) -> int:
    """'25%' of `total` (rounded up for maxSurge, down for maxUnavailable, as Kubernetes does)
    or the number itself. `value` must have passed `check_int_or_percent`."""
    if value.endswith("%"):
        pct = int(value[:-1])
        whole, rest = divmod(pct * total, 100)
        return whole + (1 if round_up and rest else 0)
    return int(value)


# ---- selector and template ---------------------------------------------------------------------------


def selector(errs: validation.Errors, path: str, sel: pod_pb2.LabelSelector) -> None:
    validation.label_map(errs, f"{path}.matchLabels", sel.match_labels)
    for i, r in enumerate(sel.match_expressions):
        rp = f"{path}.matchExpressions[{i}]"
        validation.qualified_name(errs, f"{rp}.key", r.key)
        validation.one_of(errs, f"{rp}.operator", r.operator, LABEL_SELECTOR_OPERATORS)
        if r.operator in ("In", "NotIn") and not r.values:
            errs.add(f"{rp}.values", f"must be specified when `operator` is {r.operator!r}")
        if r.operator in ("Exists", "DoesNotExist") and r.values:
            errs.add(f"{rp}.values", f"may not be specified when `operator` is {r.operator!r}")


def template(errs: validation.Errors, sel: pod_pb2.LabelSelector, tmpl: workload_pb2.PodTemplateSpec,
             *, kind: str, restart_policies: Iterable[str] = ("Always",),
             restart_default: str = "Always") -> None:
    """The selector and pod template rules every workload kind has: a non-empty selector that
    matches the template's labels (or the controller never sees its own pods), a valid pod
    spec, and a restart policy the kind can work with (unset reads as `restart_default`)."""
    validation.label_map(errs, "spec.template.metadata.labels", tmpl.metadata.labels)
    validation.annotation_map(errs, "spec.template.metadata.annotations", tmpl.metadata.annotations)
    if is_empty(sel):
        errs.add("spec.selector", "required: set matchLabels (or give the template labels to default it)")
    else:
        selector(errs, "spec.selector", sel)
        if not matches(sel, tmpl.metadata.labels):
            errs.add("spec.template.metadata.labels",
                     f"must match `spec.selector` ({to_string(sel)}), or the {kind} never sees its pods")
    sub = validation.Errors()
    validation.pod_spec(sub, tmpl.spec)
    for path, reason in sub.items:
        errs.add(f"spec.template.{path}", reason)
    allowed = tuple(restart_policies)
    policy = tmpl.spec.restart_policy or restart_default
    if policy not in allowed:
        errs.add("spec.template.spec.restartPolicy",
                 f"must be {' or '.join(repr(a) for a in allowed)} for a {kind} (got {policy!r})")


def default_selector(sel: pod_pb2.LabelSelector, tmpl: workload_pb2.PodTemplateSpec) -> None:
    """An empty selector becomes the template's labels (kept from extensions/v1beta1: an empty
    selector is never what anyone meant)."""
    if is_empty(sel) and tmpl.metadata.labels:
        sel.match_labels.update(tmpl.metadata.labels)


def check_object(obj: Any, validate_spec: Callable[[validation.Errors, Any], None]) -> None:
    errs = validation.Errors()
    validation.metadata(errs, obj.metadata, namespaced=True)
    validate_spec(errs, obj.spec)
    validation.conditions(errs, "status.conditions", obj.status.conditions)
    errs.raise_if_any()


# ---- CRUD --------------------------------------------------------------------------------------------


class Workloads(Generic[M]):
    """CRUD of one workload kind (or Services) over a `Resource`, parameterized by the kind's
    pure rules.

    defaults(obj)        fill what Kubernetes defaults, on create (uid already assigned)
    validate(obj)        raise `Invalid` naming the field path
    merge(cur, req)      the updated spec (a new message): what the request may change, with
                         immutable fields refused (`Invalid`) and absent ones kept
    """

    def __init__(self, res: Resource[M], *, defaults: Callable[[Any], None],
                 validate: Callable[[Any], None], merge: Callable[[Any, Any], Any]) -> None:
        self.res = res
        self._defaults = defaults
        self._validate = validate
        self._merge = merge

    async def create(self, obj: M) -> M:
        o: Any = obj
        o.ClearField("status")
        self.res.prepare_new(obj)
        self._defaults(o)
        self._validate(o)
        return await self.res.create(obj)

    async def update(self, req: M) -> M:
        r: Any = req

        def mutate(cur: Any) -> Any:
            new = type(cur)()
            new.CopyFrom(cur)
            new.metadata.labels.clear()
            new.metadata.labels.update(r.metadata.labels)
            new.metadata.annotations.clear()
            new.metadata.annotations.update(r.metadata.annotations)
            new.spec.CopyFrom(self._merge(cur, r))
            if new.spec != cur.spec:
                new.metadata.generation = cur.metadata.generation + 1
            self._validate(new)
            return new

        ns, name = self.res.names(r.metadata.namespace, r.metadata.name)
        return await self.res.update(ns, name, r.metadata.resource_version, mutate)

    async def update_status(self, req: M) -> M:
        r: Any = req
        errs = validation.Errors()
        validation.conditions(errs, "status.conditions", r.status.conditions)
        errs.raise_if_any()

        def mutate(cur: Any) -> Any:
            if cur.status == r.status:
                return None
            cur.status.CopyFrom(r.status)
            return cur

        ns, name = self.res.names(r.metadata.namespace, r.metadata.name)
        return await self.res.update(ns, name, r.metadata.resource_version, mutate)

    async def scale(self, req: workload_pb2.ScaleRequest) -> M:
        if req.replicas < 0:
            raise Invalid("replicas", f"must be greater than or equal to 0 (got {req.replicas})")

        def mutate(cur: Any) -> Any:
            if cur.spec.replicas == req.replicas:
                return None
            cur.spec.replicas = req.replicas
            cur.metadata.generation += 1
            return cur

        ns, name = self.res.names(req.key.namespace, req.key.name)
        return await self.res.update(ns, name, req.resource_version, mutate)

    async def delete(self, opts: meta_pb2.DeleteOptions) -> M:
        ns, name = self.res.names(opts.key.namespace, opts.key.name)
        return await self.res.remove(ns, name, opts.resource_version)


class ReadServicer(Generic[M]):
    """Get, List and Watch of a stored kind: all a read-only kind serves (Endpoints, which only
    their loop writes), and the read half of `WorkloadServicer`."""

    def __init__(self, res: Resource[M], metrics: Metrics) -> None:
        self.res = res
        self.metrics = metrics

    async def Get(self, req: meta_pb2.ObjectKey, ctx: Ctx) -> M:
        return await self.res.get_key(req)

    async def List(self, req: meta_pb2.ListOptions, ctx: Ctx) -> Message:
        items, rev = await self.res.list(req)
        list_message = self.res.kind.list_message
        assert list_message is not None
        return list_message(items=items, resource_version=rev)  # type: ignore[call-arg]

    async def Watch(self, req: meta_pb2.WatchOptions, ctx: Ctx) -> AsyncIterator[bytes]:
        with self.metrics.watch_open(self.res.kind.resource):
            async for b in self.res.watch(req):
                yield b


class WorkloadServicer(ReadServicer[M]):
    """The gRPC methods every workload service has (and Services: `controller.services_api`).
    Only the methods the kind's proto service names are served (`rpc.service_handler`), so
    `Scale` only where the kind has replicas, `UpdateStatus` only where a loop writes a status."""

    def __init__(self, workloads: Workloads[M], metrics: Metrics) -> None:
        super().__init__(workloads.res, metrics)
        self.w = workloads

    async def Create(self, req: M, ctx: Ctx) -> M:
        # Of the pod template, as for a Pod (of a Service: that a LoadBalancer gets none).
        warnings = podfields.object_warnings(req)
        out = await self.w.create(req)
        send_warnings(ctx, warnings)
        return out

    async def Update(self, req: M, ctx: Ctx) -> M:
        return await self.w.update(req)

    async def UpdateStatus(self, req: M, ctx: Ctx) -> M:
        return await self.w.update_status(req)

    async def Scale(self, req: workload_pb2.ScaleRequest, ctx: Ctx) -> M:
        return await self.w.scale(req)

    async def Delete(self, req: meta_pb2.DeleteOptions, ctx: Ctx) -> M:
        return await self.w.delete(req)
