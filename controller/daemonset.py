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
admits it or fails it. A failed daemon pod is deleted and created again.

Updates: pods carry `controller-revision-hash` = the template's hash. With RollingUpdate
and `maxSurge: 0`, old pods are deleted (unavailable ones first, then at most
`maxUnavailable` available ones at a time) and their nodes get a new pod in the next pass;
with `maxSurge` > 0, a new pod starts beside the old one on up to `maxSurge` nodes, and
the old one goes once the new one is available. OnDelete replaces a pod only when someone
deletes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from controller import node_lifecycle
from controller.daemonset_api import ON_DELETE
from controller.podowner import (
    CollectOrphan,
    CreatePod,
    DeletePod,
    Key,
    OwnerExpectations,
    PodActions,
    PodIndex,
    controller_name,
    plan_orphans,
    pod_from_template,
    settled,
    template_hash,
)
from controller.replicaset_actions import InFlight
from controller.replicaset_plan import is_active, is_available, is_ready, is_terminating
from controller.workload_api import resolve_int_or_percent
from cowpod.api.labels import CONTROLLER_REVISION_HASH_LABEL
from cowpod.api.phases import is_terminal
from cowpod.client import Client
from cowpod.clock import Clock, RealClock
from cowpod.informer import Informer
from cowpod.reconcile import Dirty, Driver
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2, workload_pb2
from scheduler.convert import node_info, pod_info
from scheduler.plugins.node_affinity import required_match
from scheduler.plugins.node_unschedulable import UNSCHEDULABLE_TAINT
from scheduler.plugins.taint_toleration import first_untolerated

log = logging.getLogger(__name__)

KIND = "DaemonSet"
COMPONENT = "daemonset-controller"
REVISION_LABEL = CONTROLLER_REVISION_HASH_LABEL
DEFAULT_RESYNC_SECONDS = 30.0

# What Kubernetes' DaemonSet controller adds to every daemon pod (util.AddOrUpdateDaemonPodTolerations).
DEFAULT_TOLERATIONS: tuple[tuple[str, str], ...] = (
    (node_lifecycle.NOT_READY_TAINT, "NoExecute"),
    (node_lifecycle.UNREACHABLE_TAINT, "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    (UNSCHEDULABLE_TAINT.key, "NoSchedule"),
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
    pi, ni = pod_info(pod), node_info(node)
    return required_match(pi, ni.labels) and first_untolerated(pi, ni.taints) is None


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
        if is_terminal(p.status.phase) and not is_terminating(p):
            delete(p, "it had terminated")
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


# ---- the controller ---------------------------------------------------------------------------------


class DaemonSetController:
    """Implements `cowpod.reconcile.Reconciler[Key, float, DaemonSetAction]`. `run()` until cancelled."""

    def __init__(self, client: Client, clock: Clock | None = None, *,
                 resync_seconds: float = DEFAULT_RESYNC_SECONDS, registry: CollectorRegistry | None = None,
                 watch_sets: Callable[..., Any] | None = None, watch_nodes: Callable[..., Any] | None = None,
                 watch_pods: Callable[..., Any] | None = None) -> None:
        """Writes go through `client`; watches too unless given (the controller passes its hubs')."""
        self.c = client
        self.clock: Clock = clock or RealClock()
        self.sets: Informer[workload_pb2.DaemonSet] = Informer(
            watch_sets or client.daemonsets.Watch, handler=self._on_set, clock=self.clock,
            name="daemonset-informer")
        self.nodes: Informer[node_pb2.Node] = Informer(
            watch_nodes or client.nodes.Watch, handler=self._on_node, clock=self.clock,
            name="daemonset-node-informer")
        # Only pods with the label every daemon pod gets (daemon_pod).
        self.pods: Informer[pod_pb2.Pod] = Informer(
            watch_pods or client.pods.Watch, list_options=meta_pb2.ListOptions(label_selector=REVISION_LABEL),
            handler=self._on_pod, clock=self.clock, name="daemonset-pod-informer")
        self.index = PodIndex(KIND)
        self.expect = OwnerExpectations(self.clock, KIND)
        self.pod_actions = PodActions(client, self.expect, kind=KIND, component=COMPONENT,
                                      get_owner=client.daemonsets.Get)
        self.driver: Driver[Key, float, DaemonSetAction] = Driver(
            self, self.clock, name=COMPONENT, sources=(self.sets, self.nodes, self.pods),
            resync_seconds=resync_seconds, registry=registry)

    async def run(self) -> None:
        await self.driver.run()

    # -- informer handlers: bookkeeping and marking only

    async def _on_set(self, type_: int, ds: workload_pb2.DaemonSet) -> None:
        if type_ == meta_pb2.DELETED:
            self.expect.forget(ds.metadata.uid)
        self.driver.mark((ds.metadata.namespace, ds.metadata.name))

    async def _on_node(self, type_: int, node: node_pb2.Node) -> None:
        # A node added, relabelled, tainted or gone can change where every set runs.
        self.driver.mark_many(set(self.sets.cache))

    async def _on_pod(self, type_: int, pod: pod_pb2.Pod) -> None:
        if self.index.apply(type_, pod):
            self.expect.observe(pod, gone=type_ == meta_pb2.DELETED)
            self.driver.mark((pod.metadata.namespace, controller_name(pod.metadata)))

    # -- Reconciler

    def ready(self) -> bool:
        return True

    async def observe(self) -> float:
        return self.clock.now()

    def plan(self, state: float, dirty: Dirty[Key]) -> Mapping[Key, Sequence[DaemonSetAction]]:
        keys = set(dirty.keys)
        if dirty.everything:
            keys |= set(self.sets.cache)
            keys |= {(p.metadata.namespace, controller_name(p.metadata))
                     for uid in self.index.owners() for p in self.index.owned(uid)[:1]}
        live = {d.metadata.uid for d in self.sets.cache.values()}
        nodes = list(self.nodes.cache.values())
        out: dict[Key, list[DaemonSetAction]] = {}
        for key in keys:
            ds = self.sets.cache.get(key)
            actions: list[DaemonSetAction] = list(plan_orphans(self.index, live, *key))
            if ds is not None:
                uid = ds.metadata.uid
                actions.extend(plan_daemonset(ds, nodes, self.index.owned(uid), self.expect.view(uid), state))
            if actions:
                out[key] = actions
        return out

    async def execute(self, key: Key, actions: Sequence[DaemonSetAction]) -> None:
        ds = self.sets.cache.get(key)
        owner = ds.metadata if ds is not None else None
        calls = []
        for a in actions:
            if isinstance(a, CreatePod) and owner is not None:
                calls.append(self.pod_actions.create(a, owner))
            elif isinstance(a, DeletePod):
                calls.append(self.pod_actions.delete(a, owner))
            elif isinstance(a, CollectOrphan):
                calls.append(self.pod_actions.collect(a))
        results = await asyncio.gather(*calls, return_exceptions=True)
        for a in actions:
            if isinstance(a, UpdateDaemonSetStatus) and ds is not None:
                req = workload_pb2.DaemonSet(status=a.status)
                req.metadata.namespace, req.metadata.name = key
                try:
                    await self.c.call(self.c.daemonsets.UpdateStatus, req)
                except grpc.RpcError as err:
                    if err.code() != grpc.StatusCode.NOT_FOUND:
                        raise
        for r in results:
            if isinstance(r, BaseException):
                raise r
