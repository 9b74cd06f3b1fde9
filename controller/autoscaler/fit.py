"""Would this pod fit on a fresh VM of this class? Asked of the scheduler's own code.

The autoscaler must agree with the scheduler, or it clones VMs the scheduler
then refuses to use. So the question goes to the scheduler's pure filter chain
(`scheduler.simulate.fits_on(pod, node)`) against a *node template*: the Node
a fresh VM of the class would register (its labels, its allocatable after the
agent's reserve, no taints, Ready). Until that function exists, a small
built-in check of the same rules (resources, nodeSelector, required node
affinity, taints) stands in; `load_fit_checker` picks whichever is there.

The planner only sees a `FitChecker`: tests inject a table.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from controller.autoscaler.model import CLASS_LABEL
from cowpod.clusterconfig import ClusterConfig, VMClass
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitResult:
    fits: bool
    # Why not, in the scheduler's words ("Insufficient cpu", "node(s) didn't match node selector").
    reasons: tuple[str, ...] = ()


FITS = FitResult(True)


class FitChecker(Protocol):
    def __call__(self, pod: pod_pb2.Pod, node: node_pb2.Node) -> FitResult:
        """Pure and synchronous: would `pod` pass every filter on the empty `node`?"""
        ...


def node_template(
    name: str,
    *,
    cpu_millis: int,
    memory_bytes: int,
    labels: Mapping[str, str],
    config: ClusterConfig,
) -> node_pb2.Node:
    """The Node a fresh VM of this size and these labels would register."""
    node = node_pb2.Node(api_version="v1", kind="Node")
    node.metadata.name = name
    node.metadata.labels.update(labels)
    node.metadata.labels.setdefault("kubernetes.io/hostname", name)
    node.status.capacity.CopyFrom(
        meta_pb2.ResourceList(
            cpu_millis=cpu_millis, memory_bytes=memory_bytes, pods=config.max_pods_per_node
        )
    )
    node.status.allocatable.CopyFrom(
        meta_pb2.ResourceList(
            cpu_millis=max(0, cpu_millis - config.reserve_cpu_millis),
            memory_bytes=max(0, memory_bytes - config.reserve_memory_bytes),
            pods=config.max_pods_per_node,
        )
    )
    node.status.conditions.add(type="Ready", status="True", reason="Template")
    node.status.phase = "Running"
    return node


def class_labels(vm_class: VMClass) -> dict[str, str]:
    """The labels every node of the class registers with."""
    return {**vm_class.labels, CLASS_LABEL: vm_class.name}


def class_template(vm_class: VMClass, config: ClusterConfig) -> node_pb2.Node:
    return node_template(
        f"template-{vm_class.name}",
        cpu_millis=vm_class.cpu_millis,
        memory_bytes=vm_class.memory_bytes,
        labels=class_labels(vm_class),
        config=config,
    )


# ------------------------------------------------------- the built-in stand-in


def _requests(spec: pod_pb2.PodSpec) -> tuple[int, int]:
    cpu = mem = 0
    for c in spec.containers:
        r, lim = c.resources.requests, c.resources.limits
        cpu += r.cpu_millis or lim.cpu_millis
        mem += r.memory_bytes or lim.memory_bytes
    for c in spec.init_containers:
        r, lim = c.resources.requests, c.resources.limits
        cpu = max(cpu, r.cpu_millis or lim.cpu_millis)
        mem = max(mem, r.memory_bytes or lim.memory_bytes)
    return cpu, mem


def _match_requirement(req: pod_pb2.NodeSelectorRequirement, labels: Mapping[str, str]) -> bool:
    present = req.key in labels
    value = labels.get(req.key, "")
    op = req.operator
    if op == "In":
        return present and value in req.values
    if op == "NotIn":
        return not present or value not in req.values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and len(req.values) == 1:
        try:
            have, want = int(value), int(req.values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def _tolerates(tolerations: Any, taint: node_pb2.Taint) -> bool:
    for t in tolerations:
        if t.effect and t.effect != taint.effect:
            continue
        if t.operator == "Exists":
            if not t.key or t.key == taint.key:
                return True
        elif t.key == taint.key and t.value == taint.value:
            return True
    return False


def builtin_fits(pod: pod_pb2.Pod, node: node_pb2.Node) -> FitResult:
    """Resources, nodeSelector, required node affinity and NoSchedule/NoExecute taints."""
    reasons: list[str] = []
    cpu, mem = _requests(pod.spec)
    alloc = node.status.allocatable
    if cpu > alloc.cpu_millis:
        reasons.append("Insufficient cpu")
    if mem > alloc.memory_bytes:
        reasons.append("Insufficient memory")
    labels = node.metadata.labels
    if any(labels.get(k) != v for k, v in pod.spec.node_selector.items()):
        reasons.append("node(s) didn't match node selector")
    required = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    terms = required.node_selector_terms
    if terms and not any(
        all(_match_requirement(r, labels) for r in term.match_expressions) for term in terms
    ):
        reasons.append("node(s) didn't match node affinity")
    for taint in node.spec.taints:
        if taint.effect in ("NoSchedule", "NoExecute") and not _tolerates(pod.spec.tolerations, taint):
            reasons.append(f"node(s) had untolerated taint {{{taint.key}: {taint.value}}}")
            break
    return FitResult(not reasons, tuple(reasons))


# ----------------------------------------------------- the scheduler's function


def _adapt_result(value: Any) -> FitResult:
    """Accept what a fit function may reasonably return: a bool, a (bool, reasons)
    pair, or a status object with `is_success()`/`ok`/`fits` and `reasons`."""
    if isinstance(value, FitResult):
        return value
    if isinstance(value, bool):
        return FitResult(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bool):
        ok, why = value
        return FitResult(ok, tuple(str(r) for r in (why or ())) if not isinstance(why, str) else (why,))
    for attr in ("is_success", "ok", "fits", "success"):
        v = getattr(value, attr, None)
        if v is None:
            continue
        ok = bool(v() if callable(v) else v)
        reasons = getattr(value, "reasons", ()) or ()
        if isinstance(reasons, str):
            reasons = (reasons,)
        if not reasons and not ok:
            msg = getattr(value, "message", None)
            reasons = (msg() if callable(msg) else msg,) if msg else ()
        return FitResult(ok, tuple(str(r) for r in reasons))
    raise TypeError(f"cannot read a fit result from {value!r}")


@dataclass(frozen=True)
class SchedulerFit:
    """Wraps the scheduler's pure fit function as a FitChecker."""

    fn: Any

    def __call__(self, pod: pod_pb2.Pod, node: node_pb2.Node) -> FitResult:
        return _adapt_result(self.fn(pod, node))


def load_fit_checker() -> FitChecker:
    """The scheduler's `scheduler.simulate.fits_on` if it is there, else the stand-in."""
    try:
        mod = importlib.import_module("scheduler.simulate")
    except ImportError:
        mod = None
    fn = getattr(mod, "fits_on", None) if mod is not None else None
    if fn is None:
        log.info("scheduler.simulate.fits_on not available; using the autoscaler's built-in fit check")
        return builtin_fits
    return SchedulerFit(fn)
