"""The DaemonSet controller: one pod of the set on every node that should run it.

    DaemonSet informer ──┐                                   ┌─► PodService.Create (spec.nodeName set)
    Node informer ───────┼─► driver (dirty sets) ─► plan ────┼─► PodService.Delete
    Pod informer ────────┘   a node event marks every set    └─► DaemonSetService.UpdateStatus

Which nodes: the scheduler's own pure rules decide (`scheduler.plugins.node_affinity.
required_match` for `nodeSelector` and required node affinity, `taint_toleration.
first_untolerated` for NoSchedule/NoExecute taints), asked about the pod the set would
create, which carries the tolerations Kubernetes' DaemonSet controller adds to every daemon
pod: `node.kubernetes.io/{not-ready,unreachable}:NoExecute`, `.../unschedulable`,
`.../{disk,memory,pid}-pressure:NoSchedule`. So a cordoned or not-ready node still runs
its daemons, and a warm parent's `cowpod.io/parent:NoSchedule` taint keeps them off
unless the template tolerates it.

A node that registers (a VM cloned later) is an ADDED event on the node informer, which
marks every set dirty at once: its daemon pods are created in the next pass, not at the
next resync.

Placement: the pod is created with `spec.nodeName` (bound at create, as Kubernetes'
DaemonSet controller did before it handed placement to the scheduler); the node's agent
admits it or fails it. A failed daemon pod is deleted and created again, `FAILED_POD_BACKOFF`
after it ended.

Time: a pod Ready for `minReadySeconds` turns available, and a failed pod's back-off ends,
with no watch event; `daemonset_due_in` names the next such moment and the set is requeued
for it (a `Requeue` to the reconcile driver, as the ReplicaSet and Job loops do), so
`numberAvailable` and a rollout gated on it move then, not at the next resync.

Updates: pods carry `controller-revision-hash` = the template's hash. With RollingUpdate
and `maxSurge: 0`, old pods are deleted (unavailable ones first, then at most
`maxUnavailable` available ones at a time) and their nodes get a new pod in the next pass;
with `maxSurge` > 0, a new pod starts beside the old one on up to `maxSurge` nodes, and
the old one goes once the new one is available. OnDelete replaces a pod only when someone
deletes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from controller.daemonset_api import ON_DELETE
from controller.pod_informer import SharedPodInformer
from controller.podowner import (
    CollectOrphan,
    CreatePod,
    DeletePod,
    PodOwnerLoop,
    finished_at,
    pod_from_template,
    settled,
    template_hash,
)
from controller.replicaset_actions import InFlight
from controller.replicaset_plan import is_active, is_available, is_ready, is_terminating, next_available_in
from controller.resource import get_time
from controller.workload_api import resolve_int_or_percent
from cowpod.api import labels
from cowpod.api.labels import CONTROLLER_REVISION_HASH_LABEL
from cowpod.api.phases import is_terminal
from cowpod.client import Client
from cowpod.clock import Clock, RealClock
from cowpod.informer import Informer
from cowpod.reconcile import Requeue
from cowpod.v1 import node_pb2, pod_pb2, workload_pb2
from scheduler.simulate import may_run_on

log = logging.getLogger(__name__)

KIND = "DaemonSet"
COMPONENT = "daemonset-controller"
REVISION_LABEL = CONTROLLER_REVISION_HASH_LABEL
DEFAULT_RESYNC_SECONDS = 10.0
# A daemon pod that ended (say its node refused it) is replaced this long after it ended, so a
# node that keeps refusing it is not sent a new pod on every pass.
FAILED_POD_BACKOFF = 10.0

# What Kubernetes' DaemonSet controller adds to every daemon pod (util.AddOrUpdateDaemonPodTolerations).
DEFAULT_TOLERATIONS: tuple[tuple[str, str], ...] = (
    (labels.NOT_READY_TAINT, "NoExecute"),
    (labels.UNREACHABLE_TAINT, "NoExecute"),
    (labels.DISK_PRESSURE_TAINT, "NoSchedule"),
    (labels.MEMORY_PRESSURE_TAINT, "NoSchedule"),
    (labels.PID_PRESSURE_TAINT, "NoSchedule"),
    (labels.UNSCHEDULABLE_TAINT, "NoSchedule"),
)


@dataclass(frozen=True)
class UpdateDaemonSetStatus:
    status: workload_pb2.DaemonSetStatus = field(hash=False)


DaemonSetAction = CreatePod | DeletePod | CollectOrphan | UpdateDaemonSetStatus


def daemon_pod(ds: workload_pb2.DaemonSet, revision: str) -> pod_pb2.Pod:
    """The pod the set creates (no node, no name yet): the template, its revision label and the
    default daemon tolerations the template does not already have."""
    pod = pod_from_template(ds.spec.template, KIND, ds.metadata, extra_labels={REVISION_LABEL: revision})
    have = {(t.key, t.operator or "Equal", t.effect) for t in pod.spec.tolerations}
    for key, effect in DEFAULT_TOLERATIONS:
        if (key, "Exists", effect) not in have:
            pod.spec.tolerations.add(key=key, operator="Exists", effect=effect)
    return pod


def should_run(pod: pod_pb2.Pod, node: node_pb2.Node) -> bool:
    """Would the scheduler's node selector/affinity and taint rules let `pod` onto `node`?"""
    return may_run_on(pod, node)


def failed_retry_at(p: pod_pb2.Pod) -> float | None:
    """When a terminated (not yet deleting) daemon pod's `FAILED_POD_BACKOFF` ends and it is
    deleted to be created again; None for any other pod."""
    if not is_terminal(p.status.phase) or is_terminating(p):
        return None
    return (finished_at(p) or get_time(p.metadata.creation_timestamp)) + FAILED_POD_BACKOFF


def plan_daemonset(ds: workload_pb2.DaemonSet, nodes: Sequence[node_pb2.Node], owned: Sequence[pod_pb2.Pod],
                   in_flight: InFlight, now: float) -> list[DaemonSetAction]:
    """Pure: what to do for one set, given every node and the pods it owns (from the caches)."""
    meta, spec = ds.metadata, ds.spec
    revision = template_hash(spec.template)
    template_pod = daemon_pod(ds, revision)
    wanted = sorted(n.metadata.name for n in nodes if should_run(template_pod, n))
    wanted_set = set(wanted)
    actions: list[DaemonSetAction] = []

    def delete(p: pod_pb2.Pod, reason: str) -> None:
        actions.append(DeletePod(meta.namespace, p.metadata.name, p.metadata.uid, meta.uid, reason))

    by_node: dict[str, list[pod_pb2.Pod]] = {}
    for p in owned:
        if p.metadata.uid in in_flight.deleting:
            continue
        retry_at = failed_retry_at(p)
        if retry_at is not None:
            if now >= retry_at:
                delete(p, "it had terminated")
            else:  # it holds its node until the back-off is over: a refused pod is not retried hot
                by_node.setdefault(p.spec.node_name, []).append(p)
        elif is_active(p):
            by_node.setdefault(p.spec.node_name, []).append(p)

    def is_new(p: pod_pb2.Pod) -> bool:
        return p.metadata.labels.get(REVISION_LABEL) == revision

    def available(p: pod_pb2.Pod) -> bool:
        return is_available(p, spec.min_ready_seconds, now)

    if settled(in_flight, owned):
        for node, pods in sorted(by_node.items()):
            if node not in wanted_set:
                for p in pods:
                    delete(p, f"node {node or '(none)'} should not run it")
        desired = len(wanted)
        rolling = spec.update_strategy.type != ON_DELETE
        ru = spec.update_strategy.rolling_update
        max_surge = resolve_int_or_percent(ru.max_surge or "0", desired, round_up=True) if rolling else 0
        max_unavailable = resolve_int_or_percent(ru.max_unavailable or "1", desired, round_up=True)
        if rolling and max_surge == 0 and max_unavailable == 0:
            max_unavailable = 1
        unavailable = sum(1 for n in wanted if not any(available(p) for p in by_node.get(n, ())))
        surging = sum(1 for n in wanted if {is_new(p) for p in by_node.get(n, ())} == {True, False})
        for node in wanted:
            pods = by_node.get(node, [])
            new = sorted((p for p in pods if is_new(p)), key=lambda p: p.metadata.creation_timestamp.seconds)
            old = [p for p in pods if not is_new(p)]
            for extra in new[1:]:
                delete(extra, "a second pod on the node")
            if not pods:
                pod = pod_pb2.Pod()
                pod.CopyFrom(template_pod)
                pod.spec.node_name = node
                actions.append(CreatePod(meta.uid, meta.name, pod, why=f" on node {node}"))
                continue
            if not old or not rolling:
                continue
            if new:
                if available(new[0]) or not any(available(p) for p in old):
                    for p in old:
                        delete(p, "replaced by the new revision")
            elif not any(available(p) for p in old):
                for p in old:
                    delete(p, "an unavailable pod of an old revision")
            elif max_surge > 0:
                if surging < max_surge:
                    surging += 1
                    pod = pod_pb2.Pod()
                    pod.CopyFrom(template_pod)
                    pod.spec.node_name = node
                    actions.append(CreatePod(meta.uid, meta.name, pod, why=f" on node {node} (surge)"))
            elif unavailable < max_unavailable:
                unavailable += 1
                for p in old:
                    delete(p, "rolling update to the new revision")

    deleting = {a.uid for a in actions if isinstance(a, DeletePod)}
    live = {n: [p for p in ps if p.metadata.uid not in deleting] for n, ps in by_node.items()}
    status = workload_pb2.DaemonSetStatus(
        desired_number_scheduled=len(wanted),
        current_number_scheduled=sum(1 for n in wanted if live.get(n)),
        number_misscheduled=sum(1 for n, ps in live.items() if ps and n not in wanted_set),
        number_ready=sum(1 for n in wanted if any(is_ready(p) for p in live.get(n, ()))),
        number_available=sum(1 for n in wanted if any(available(p) for p in live.get(n, ()))),
        updated_number_scheduled=sum(1 for n in wanted if any(is_new(p) for p in live.get(n, ()))),
        observed_generation=meta.generation,
    )
    status.number_unavailable = status.desired_number_scheduled - status.number_available
    status.conditions.extend(ds.status.conditions)
    if status != ds.status:
        actions.append(UpdateDaemonSetStatus(status))
    return actions


def daemonset_due_in(ds: workload_pb2.DaemonSet, owned: Sequence[pod_pb2.Pod], now: float) -> float | None:
    """Seconds until the next moment only time changes this set's plan: a Ready pod turning
    available after `minReadySeconds`, or a failed pod's `FAILED_POD_BACKOFF` ending. None when
    none is ahead."""
    dues = [next_available_in((p for p in owned if is_active(p)), ds.spec.min_ready_seconds, now)]
    for p in owned:
        retry_at = failed_retry_at(p)
        if retry_at is not None and retry_at > now:
            dues.append(retry_at - now)
    return min((d for d in dues if d is not None), default=None)


# ---- the controller ---------------------------------------------------------------------------------


class DaemonSetController(PodOwnerLoop):
    """DaemonSets on the shared pod-owner loop (`podowner.PodOwnerLoop`), plus a node informer.
    `run()` until cancelled."""

    kind = KIND
    component = COMPONENT
    # Only pods with the label every daemon pod gets (daemon_pod) count.
    pod_label = REVISION_LABEL

    def __init__(self, client: Client, clock: Clock | None = None, *,
                 resync_seconds: float = DEFAULT_RESYNC_SECONDS, registry: CollectorRegistry | None = None,
                 watch_sets: Callable[..., Any] | None = None, watch_nodes: Callable[..., Any] | None = None,
                 watch_pods: Callable[..., Any] | SharedPodInformer | None = None) -> None:
        """Writes go through `client`; watches too unless given (the controller passes its hubs'
        and its shared pod informer)."""
        self.nodes: Informer[node_pb2.Node] = Informer(
            watch_nodes or client.nodes.Watch, handler=self._on_node, clock=clock or RealClock(),
            name="daemonset-node-informer")
        super().__init__(client, clock, watch_owners=watch_sets or client.daemonsets.Watch,
                         watch_pods=watch_pods or client.pods.Watch, get_owner=client.daemonsets.Get,
                         resync_seconds=resync_seconds, registry=registry, extra_sources=(self.nodes,))

    async def _on_node(self, type_: int, node: node_pb2.Node) -> None:
        # A node added, relabelled, tainted or gone can change where every set runs.
        self.driver.mark_many(set(self.owners.cache))

    def plan_owner(self, owner: workload_pb2.DaemonSet, owned: Sequence[pod_pb2.Pod], in_flight: InFlight,
                   now: float) -> list[DaemonSetAction | Requeue]:
        actions: list[DaemonSetAction | Requeue] = [
            *plan_daemonset(owner, list(self.nodes.cache.values()), owned, in_flight, now)]
        wait = daemonset_due_in(owner, owned, now)
        if wait is not None:
            actions.append(Requeue(wait))
        return actions

    async def execute_own(self, ds: workload_pb2.DaemonSet, action: DaemonSetAction) -> None:
        if isinstance(action, UpdateDaemonSetStatus):
            req = workload_pb2.DaemonSet(status=action.status)
            req.metadata.namespace, req.metadata.name = ds.metadata.namespace, ds.metadata.name
            await self.update_status(self.c.daemonsets.UpdateStatus, req)
