"""Would this pod fit on a fresh VM of this class? Asked of the scheduler's own code.

The autoscaler must agree with the scheduler, or it clones VMs the scheduler
then refuses to use. So the question goes to the scheduler's pure filter chain
(`scheduler.simulate.fits_on(pod, node)`) against a *node template*: the Node
a fresh VM of the class would register (its labels, its allocatable after the
agent's reserve, no taints, Ready).

The planner only sees a `FitChecker`, so a test may inject a table instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from cowpod.api.labels import CLASS_LABEL, HOSTNAME_LABEL
from cowpod.clusterconfig import ClusterConfig, VMClass
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2
from scheduler.simulate import FilterPlugin, default_filters, fits_on


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
    node.metadata.labels.setdefault(HOSTNAME_LABEL, name)
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


# ----------------------------------------------------- the scheduler's function


class SchedulerFit:
    """The scheduler's own filter chain (`scheduler.simulate.fits_on`) as a FitChecker.

    Built once: the default filter list is assembled here, not per question.
    The autoscaler runs in the controller and does not read the scheduler's
    config file, so a scheduler run with extra or fewer filters may disagree;
    `filters` lets a caller pass the same list the scheduler uses."""

    def __init__(self, filters: Sequence[FilterPlugin] | None = None) -> None:
        self._filters = tuple(filters) if filters is not None else default_filters()

    def __call__(self, pod: pod_pb2.Pod, node: node_pb2.Node) -> FitResult:
        status = fits_on(pod, node, filters=self._filters)
        return FitResult(status.ok, status.reasons)
