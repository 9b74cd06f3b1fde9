"""The Deployment controller: roll a Deployment's pods from one template to the next by
scaling ReplicaSets, as Kubernetes' deployment controller does.

    Deployment informer ──┐                               ┌─► ReplicaSetService.Create (<name>-<hash>)
                          ├─► driver (dirty deployments) ─┼─► ReplicaSetService.Scale / Update / Delete
    ReplicaSet informer ──┘   ─► plan_deployment (pure)   └─► DeploymentService.UpdateStatus

Words:
- pod-template hash: `template_hash` of `spec.template`; the new ReplicaSet is named
  `<deployment>-<hash>` and its selector, template labels and pods carry
  `pod-template-hash: <hash>`, so the sets of two revisions never claim each other's pods.
- new set: the owned ReplicaSet whose template hash is the Deployment's; old sets: the others.
- revision: `deployment.kubernetes.io/revision` on each set, one more than the highest old one
  when a set becomes new (also when `rollout undo` brings back an old template: its set is
  reused and renumbered). `rollout history` lists them.
- available: a set's `status.availableReplicas` (Ready for `minReadySeconds`; readiness
  probes gate it), counted as at most its `spec.replicas`: a set just scaled down may still
  report the pods it is deleting, and those must not be counted towards the minimum.

RollingUpdate, each pass (Kubernetes' rolloutRolling):
1. scale the new set up, keeping all sets' replicas within `replicas + maxSurge`;
2. scale old sets down: first pods that are not available (never costing availability),
   then available ones, only while the available count stays at or above
   `replicas - maxUnavailable`. So no moment has fewer available (hence Ready) pods than that.
Recreate: old sets to 0; the new set is scaled up only once no old pod is left, terminating
ones included (a pod informer of the sets' pods tells).
maxSurge rounds up, maxUnavailable down; both 0 after rounding reads as maxUnavailable 1.

Status: counts summed over the sets; Available (available >= replicas - maxUnavailable);
Progressing True (ReplicaSetUpdated / NewReplicaSetCreated, its `lastProbeTime` — Kubernetes'
lastUpdateTime — moved whenever the rollout takes a step or a count changes), True
NewReplicaSetAvailable once complete, False ProgressDeadlineExceeded when no step was taken for
`progressDeadlineSeconds`. No event announces that moment, so a Deployment in progress is
requeued for it (`progress_deadline_in`, a `Requeue` to the driver, as Kubernetes requeues after
the deadline); a set's pods turning available after `minReadySeconds` reach this loop as the
set's status update (the ReplicaSet controller requeues itself for that). `paused` stops rollouts
(Progressing Unknown, DeploymentPaused); scaling a paused Deployment still scales its new set.

Old sets beyond `revisionHistoryLimit` with no pods are deleted once a rollout is complete; a
deleted Deployment's sets are deleted (background cascade) and the ReplicaSet controller then
deletes their pods.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from controller.deployment_api import RECREATE
from controller.podowner import Key, PodIndex, controller_name, controller_uid, template_hash
from controller.replicaset_plan import is_terminating
from controller.resource import get_time, set_time
from controller.workload_api import resolve_int_or_percent
from cowpod.api.labels import CHANGE_CAUSE_ANNOTATION, DEPLOYMENT_REVISION_ANNOTATION, POD_TEMPLATE_HASH_LABEL
from cowpod.client import Client
from cowpod.clock import Clock, RealClock
from cowpod.informer import Informer
from cowpod.reconcile import Dirty, Driver, Requeue
from cowpod.v1 import event_pb2, meta_pb2, pod_pb2, workload_pb2

log = logging.getLogger(__name__)

KIND = "Deployment"
COMPONENT = "deployment-controller"
HASH_LABEL = POD_TEMPLATE_HASH_LABEL
REVISION_ANNOTATION = DEPLOYMENT_REVISION_ANNOTATION
DEFAULT_RESYNC_SECONDS = 10.0

AVAILABLE = "Available"
PROGRESSING = "Progressing"


# ---- actions ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateReplicaSet:
    rs: workload_pb2.ReplicaSet = field(hash=False)
    name: str


@dataclass(frozen=True)
class ScaleReplicaSet:
    name: str
    replicas: int
    old_replicas: int


@dataclass(frozen=True)
class SetRevision:
    """Renumber a set that becomes new again (rollout undo)."""

    rs: workload_pb2.ReplicaSet = field(hash=False)
    name: str
    revision: int


@dataclass(frozen=True)
class DeleteReplicaSet:
    name: str
    uid: str
    owner_uid: str
    reason: str  # "history" | "orphan"


@dataclass(frozen=True)
class UpdateDeploymentStatus:
    status: workload_pb2.DeploymentStatus = field(hash=False)


DeploymentAction = (CreateReplicaSet | ScaleReplicaSet | SetRevision | DeleteReplicaSet
                    | UpdateDeploymentStatus)


# ---- pure helpers ----------------------------------------------------------------------------------------


def revision_of(rs: workload_pb2.ReplicaSet) -> int:
    try:
        return int(rs.metadata.annotations.get(REVISION_ANNOTATION, "0"))
    except ValueError:
        return 0


def limits(d: workload_pb2.Deployment) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as pod counts."""
    if d.spec.strategy.type == RECREATE:
        return 0, 0
    ru = d.spec.strategy.rolling_update
    surge = resolve_int_or_percent(ru.max_surge or "25%", d.spec.replicas, round_up=True)
    unavailable = resolve_int_or_percent(ru.max_unavailable or "25%", d.spec.replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def new_replicaset(d: workload_pb2.Deployment, pod_hash: str, replicas: int, revision: int
                   ) -> workload_pb2.ReplicaSet:
    rs = workload_pb2.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
    rs.metadata.namespace = d.metadata.namespace
    rs.metadata.name = f"{d.metadata.name[:240]}-{pod_hash}"
    rs.metadata.labels.update(d.spec.template.metadata.labels)
    rs.metadata.labels[HASH_LABEL] = pod_hash
    rs.metadata.annotations[REVISION_ANNOTATION] = str(revision)
    cause = d.metadata.annotations.get(CHANGE_CAUSE_ANNOTATION)
    if cause:
        rs.metadata.annotations[CHANGE_CAUSE_ANNOTATION] = cause
    rs.metadata.owner_references.add(kind=KIND, name=d.metadata.name, uid=d.metadata.uid, controller=True)
    rs.spec.replicas = replicas
    rs.spec.min_ready_seconds = d.spec.min_ready_seconds
    rs.spec.selector.CopyFrom(d.spec.selector)
    rs.spec.selector.match_labels[HASH_LABEL] = pod_hash
    rs.spec.template.CopyFrom(d.spec.template)
    rs.spec.template.metadata.labels[HASH_LABEL] = pod_hash
    return rs


def _available(rs: workload_pb2.ReplicaSet, replicas: int) -> int:
    return max(0, min(rs.status.available_replicas, replicas))


def _condition(conds: Sequence[meta_pb2.Condition], type_: str) -> meta_pb2.Condition | None:
    return next((c for c in conds if c.type == type_), None)


def _set_condition(status: workload_pb2.DeploymentStatus, prev: Sequence[meta_pb2.Condition], type_: str,
                   value: str, reason: str, message: str, now: float, *, touched: bool) -> None:
    """Put a condition, keeping its transition time unless its status changes and its update
    time (lastProbeTime) unless `touched` or the reason changes."""
    old = _condition(prev, type_)
    c = meta_pb2.Condition(type=type_, status=value, reason=reason, message=message)
    if old is not None and old.status == value:
        c.last_transition_time.CopyFrom(old.last_transition_time)
    else:
        set_time(c.last_transition_time, now)
    if old is not None and not touched and old.reason == reason and old.status == value:
        c.last_probe_time.CopyFrom(old.last_probe_time)
    else:
        set_time(c.last_probe_time, now)
    status.conditions.append(c)


def plan_deployment(d: workload_pb2.Deployment, owned: Sequence[workload_pb2.ReplicaSet],
                    now: float, *, old_pods: Set[str] = frozenset()) -> list[DeploymentAction]:
    """Pure: what to do for one Deployment, given the ReplicaSets it owns (from the cache) and, for
    Recreate, the names of the sets that still have a pod, terminating ones included."""
    spec, meta = d.spec, d.metadata
    pod_hash = template_hash(spec.template, drop_label=HASH_LABEL)
    new = next((rs for rs in owned if rs.spec.template.metadata.labels.get(HASH_LABEL) == pod_hash), None)
    old = sorted((rs for rs in owned if rs is not new), key=lambda rs: (revision_of(rs), rs.metadata.name))
    max_old_revision = max((revision_of(rs) for rs in old), default=0)
    surge, max_unavailable = limits(d)
    actions: list[DeploymentAction] = []
    # Planned spec.replicas per set name (what the sets will have once the actions land).
    want: dict[str, int] = {rs.metadata.name: rs.spec.replicas for rs in owned}
    created = False

    def scale(rs: workload_pb2.ReplicaSet, n: int) -> None:
        want[rs.metadata.name] = n

    if new is None and not spec.paused:
        if spec.strategy.type == RECREATE:
            busy = any(rs.spec.replicas > 0 or rs.status.replicas > 0 or rs.metadata.name in old_pods
                       for rs in old)
            initial = 0 if busy else spec.replicas
        else:
            total = sum(want.values())
            initial = max(0, min(spec.replicas, spec.replicas + surge - total)) if old else spec.replicas
        new = new_replicaset(d, pod_hash, initial, max_old_revision + 1)
        actions.append(CreateReplicaSet(new, new.metadata.name))
        want[new.metadata.name] = initial
        created = True
    elif new is not None and revision_of(new) <= max_old_revision and not spec.paused:
        actions.append(SetRevision(new, new.metadata.name, max_old_revision + 1))

    if spec.paused:
        if new is not None and not old and new.spec.replicas != spec.replicas:
            scale(new, spec.replicas)
    elif spec.strategy.type == RECREATE:
        assert new is not None
        for rs in old:
            scale(rs, 0)
        # Kubernetes waits until no old pod is left at all, not only until none is active: a
        # terminating pod may still run for its grace period.
        if not any(rs.status.replicas > 0 or rs.metadata.name in old_pods for rs in old) and not created:
            scale(new, spec.replicas)
    else:
        assert new is not None
        new_name = new.metadata.name
        # 1. The new set up, within replicas + maxSurge in all.
        if want[new_name] > spec.replicas:
            scale(new, spec.replicas)
        elif want[new_name] < spec.replicas:
            room = spec.replicas + surge - sum(want.values())
            if room > 0:
                scale(new, want[new_name] + min(room, spec.replicas - want[new_name]))
        # 2. Old sets down, never taking availability below replicas - maxUnavailable.
        if any(want[rs.metadata.name] > 0 for rs in old):
            min_available = spec.replicas - max_unavailable
            new_unavailable = want[new_name] - (0 if created else _available(new, want[new_name]))
            budget = sum(want.values()) - min_available - new_unavailable
            for rs in old:  # unhealthy pods first: removing them costs no availability
                if budget <= 0:
                    break
                n = want[rs.metadata.name]
                unhealthy = n - _available(rs, n)
                if unhealthy > 0:
                    cut = min(budget, unhealthy)
                    scale(rs, n - cut)
                    budget -= cut
            available = sum(_available(rs, want[rs.metadata.name]) for rs in old)
            available += 0 if created else _available(new, want[new_name])
            excess = available - min_available
            for rs in old:
                if excess <= 0:
                    break
                n = want[rs.metadata.name]
                cut = min(n, excess)
                if cut > 0:
                    scale(rs, n - cut)
                    excess -= cut
    for rs in owned:
        if want[rs.metadata.name] != rs.spec.replicas:
            actions.append(ScaleReplicaSet(rs.metadata.name, want[rs.metadata.name], rs.spec.replicas))

    # ---- status
    counted = list(owned)
    status = workload_pb2.DeploymentStatus(
        observed_generation=meta.generation,
        replicas=sum(rs.status.replicas for rs in counted),
        updated_replicas=new.status.replicas if new is not None and not created else 0,
        ready_replicas=sum(rs.status.ready_replicas for rs in counted),
        available_replicas=sum(rs.status.available_replicas for rs in counted),
    )
    status.unavailable_replicas = max(0, spec.replicas - status.available_replicas)
    prev = d.status.conditions
    min_available = spec.replicas - max_unavailable
    if status.available_replicas >= min_available:
        _set_condition(status, prev, AVAILABLE, "True", "MinimumReplicasAvailable",
                       "Deployment has minimum availability.", now, touched=False)
    else:
        _set_condition(status, prev, AVAILABLE, "False", "MinimumReplicasUnavailable",
                       "Deployment does not have minimum availability.", now, touched=False)
    name = new.metadata.name if new is not None else f"{meta.name}-{pod_hash}"
    complete = (new is not None and not created and status.updated_replicas == spec.replicas
                and status.replicas == spec.replicas and status.available_replicas == spec.replicas
                and new.status.observed_generation >= new.metadata.generation)
    stepped = any(isinstance(a, CreateReplicaSet | ScaleReplicaSet | SetRevision) for a in actions)
    def counts(st: workload_pb2.DeploymentStatus) -> tuple[int, int, int, int]:
        return st.replicas, st.updated_replicas, st.ready_replicas, st.available_replicas

    counts_moved = counts(status) != counts(d.status)
    old_progress = _condition(prev, PROGRESSING)
    if spec.paused:
        _set_condition(status, prev, PROGRESSING, "Unknown", "DeploymentPaused", "Deployment is paused", now,
                       touched=False)
    elif complete:
        _set_condition(status, prev, PROGRESSING, "True", "NewReplicaSetAvailable",
                       f'ReplicaSet "{name}" has successfully progressed.', now, touched=False)
    elif stepped or counts_moved or old_progress is None or old_progress.reason in (
            "NewReplicaSetAvailable", "DeploymentPaused"):
        reason = "NewReplicaSetCreated" if created else "ReplicaSetUpdated"
        _set_condition(status, prev, PROGRESSING, "True", reason, f'ReplicaSet "{name}" is progressing.', now,
                       touched=True)
    elif old_progress.status == "True" and now - get_time(old_progress.last_probe_time) >= \
            spec.progress_deadline_seconds:
        _set_condition(status, prev, PROGRESSING, "False", "ProgressDeadlineExceeded",
                       f'ReplicaSet "{name}" has timed out progressing.', now, touched=True)
    else:
        status.conditions.append(old_progress)
    if status != d.status:
        actions.append(UpdateDeploymentStatus(status))

    # ---- history: old sets with no pods beyond revisionHistoryLimit, once the rollout is complete
    if complete:
        empty = [rs for rs in old if rs.spec.replicas == 0 and rs.status.replicas == 0]
        for rs in empty[: max(0, len(empty) - spec.revision_history_limit)]:
            actions.append(DeleteReplicaSet(rs.metadata.name, rs.metadata.uid, meta.uid, "history"))
    return actions


def progress_deadline_in(d: workload_pb2.Deployment, actions: Sequence[DeploymentAction],
                         now: float) -> float | None:
    """Seconds until the rollout's progress deadline passes with no step taken (then the plan sets
    Progressing False, ProgressDeadlineExceeded), from the status this plan writes or else the
    stored one; None when no deadline is running (complete, paused, already exceeded)."""
    status = next((a.status for a in actions if isinstance(a, UpdateDeploymentStatus)), d.status)
    progress = _condition(status.conditions, PROGRESSING)
    if d.spec.paused or progress is None or progress.status != "True" or \
            progress.reason not in ("ReplicaSetUpdated", "NewReplicaSetCreated"):
        return None
    due = get_time(progress.last_probe_time) + d.spec.progress_deadline_seconds
    return due - now if due > now else None


def plan_orphan_sets(sets: Sequence[workload_pb2.ReplicaSet], live_uids: set[str]) -> list[DeploymentAction]:
    """Pure: sets controlled by a Deployment uid that no longer exists."""
    out: list[DeploymentAction] = []
    for rs in sets:
        uid = controller_uid(rs.metadata, KIND)
        if uid and uid not in live_uids and not rs.metadata.HasField("deletion_timestamp"):
            out.append(DeleteReplicaSet(rs.metadata.name, rs.metadata.uid, uid, "orphan"))
    return out


# ---- the controller ---------------------------------------------------------------------------------


class DeploymentController:
    """Implements `cowpod.reconcile.Reconciler[Key, float, DeploymentAction]`. `run()` until cancelled."""

    def __init__(self, client: Client, clock: Clock | None = None, *,
                 resync_seconds: float = DEFAULT_RESYNC_SECONDS, registry: CollectorRegistry | None = None,
                 watch_deployments: Callable[..., Any] | None = None,
                 watch_sets: Callable[..., Any] | None = None, watch_pods: Callable[..., Any] | None = None,
                 ) -> None:
        """Writes go through `client`; watches too unless given (the controller passes its hubs')."""
        self.c = client
        self.clock: Clock = clock or RealClock()
        self.deployments: Informer[workload_pb2.Deployment] = Informer(
            watch_deployments or client.deployments.Watch, handler=self._on_deployment, clock=self.clock,
            name="deployment-informer")
        self.sets: Informer[workload_pb2.ReplicaSet] = Informer(
            watch_sets or client.replicasets.Watch, handler=self._on_set, clock=self.clock,
            name="deployment-replicaset-informer")
        # The sets' pods (every one carries the hash label), only to know when Recreate may start
        # the new pods: once the old ones are gone, terminating ones included.
        self.pods: Informer[pod_pb2.Pod] = Informer(
            watch_pods or client.pods.Watch, list_options=meta_pb2.ListOptions(label_selector=HASH_LABEL),
            handler=self._on_pod, clock=self.clock, name="deployment-pod-informer")
        self.pods_by_set = PodIndex("ReplicaSet")
        self.driver: Driver[Key, float, DeploymentAction] = Driver(
            self, self.clock, name=COMPONENT, sources=(self.deployments, self.sets, self.pods),
            resync_seconds=resync_seconds, registry=registry)

    async def run(self) -> None:
        await self.driver.run()

    async def _on_deployment(self, type_: int, d: workload_pb2.Deployment) -> None:
        self.driver.mark((d.metadata.namespace, d.metadata.name))

    async def _on_set(self, type_: int, rs: workload_pb2.ReplicaSet) -> None:
        if controller_uid(rs.metadata, KIND):
            self.driver.mark((rs.metadata.namespace, controller_name(rs.metadata)))

    async def _on_pod(self, type_: int, pod: pod_pb2.Pod) -> None:
        if self.pods_by_set.apply(type_, pod) and (type_ == meta_pb2.DELETED or is_terminating(pod)):
            rs = self.sets.cache.get((pod.metadata.namespace, controller_name(pod.metadata)))
            if rs is not None and controller_uid(rs.metadata, KIND):
                self.driver.mark((rs.metadata.namespace, controller_name(rs.metadata)))

    def ready(self) -> bool:
        return True

    async def observe(self) -> float:
        return self.clock.now()

    def owned(self, key: Key) -> list[workload_pb2.ReplicaSet]:
        ns, name = key
        return [rs for rs in self.sets.cache.values()
                if rs.metadata.namespace == ns and controller_name(rs.metadata) == name
                and controller_uid(rs.metadata, KIND)]

    def plan(self, state: float, dirty: Dirty[Key]) -> Mapping[Key, Sequence[DeploymentAction | Requeue]]:
        keys = set(dirty.keys)
        if dirty.everything:
            keys |= set(self.deployments.cache)
            keys |= {(rs.metadata.namespace, controller_name(rs.metadata)) for rs in self.sets.cache.values()
                     if controller_uid(rs.metadata, KIND)}
        live = {d.metadata.uid for d in self.deployments.cache.values()}
        out: dict[Key, list[DeploymentAction | Requeue]] = {}
        for key in keys:
            d = self.deployments.cache.get(key)
            sets = self.owned(key)
            actions: list[DeploymentAction | Requeue] = [*plan_orphan_sets(sets, live)]
            if d is not None:
                mine = [rs for rs in sets if controller_uid(rs.metadata, KIND) == d.metadata.uid]
                old_pods = {rs.metadata.name for rs in mine if self.pods_by_set.owned(rs.metadata.uid)}
                try:
                    own = plan_deployment(d, mine, state, old_pods=old_pods)
                    actions.extend(own)
                    wait = progress_deadline_in(d, own, state)
                    if wait is not None:
                        actions.append(Requeue(wait))
                except Exception:  # a bug on one object must not stop the loop for all the others
                    log.exception("%s: planning %s/%s failed; skipped this pass", COMPONENT, *key)
            if actions:
                out[key] = actions
        return out

    async def execute(self, key: Key, actions: Sequence[DeploymentAction]) -> None:
        ns, _ = key
        d = self.deployments.cache.get(key)
        # Creates and scale-ups before scale-downs is what the plan assumed; one call at a time.
        for a in actions:
            if isinstance(a, CreateReplicaSet):
                await self._create(d, a)
            elif isinstance(a, SetRevision):
                # Read fresh and write guarded: the cached set may predate a scale of ours.
                rs = await self.c.call(self.c.replicasets.Get, meta_pb2.ObjectKey(namespace=ns, name=a.name))
                rs.metadata.annotations[REVISION_ANNOTATION] = str(a.revision)
                await self.c.call(self.c.replicasets.Update, rs)
            elif isinstance(a, ScaleReplicaSet):
                req = workload_pb2.ScaleRequest(key=meta_pb2.ObjectKey(namespace=ns, name=a.name),
                                                replicas=a.replicas)
                await self.c.call(self.c.replicasets.Scale, req)
                if d is not None:
                    verb = "up" if a.replicas > a.old_replicas else "down"
                    await self._event(d, "ScalingReplicaSet", f"Scaled {verb} replica set {a.name} "
                                                              f"from {a.old_replicas} to {a.replicas}")
            elif isinstance(a, DeleteReplicaSet):
                await self._delete_set(key, a)
            elif isinstance(a, UpdateDeploymentStatus) and d is not None:
                req_d = workload_pb2.Deployment(status=a.status)
                req_d.metadata.namespace, req_d.metadata.name = key
                try:
                    await self.c.call(self.c.deployments.UpdateStatus, req_d)
                except grpc.RpcError as err:
                    if err.code() != grpc.StatusCode.NOT_FOUND:
                        raise

    async def _create(self, d: workload_pb2.Deployment | None, a: CreateReplicaSet) -> None:
        try:
            await self.c.call(self.c.replicasets.Create, a.rs)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            return  # ours from an earlier attempt (the name is the hash), or an orphan being collected
        if d is not None:
            await self._event(d, "ScalingReplicaSet",
                              f"Scaled up replica set {a.name} to {a.rs.spec.replicas}")

    async def _delete_set(self, key: Key, a: DeleteReplicaSet) -> None:
        ns, name = key
        if a.reason == "orphan":
            try:
                cur = await self.c.call(self.c.deployments.Get, meta_pb2.ObjectKey(namespace=ns, name=name))
                if cur.metadata.uid == a.owner_uid:
                    return  # the cache was behind
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise
        try:
            await self.c.call(self.c.replicasets.Delete,
                              meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(namespace=ns, name=a.name)))
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
        log.info("deleted replicaset %s/%s (%s)", ns, a.name, a.reason)

    async def _event(self, d: workload_pb2.Deployment, reason: str, message: str) -> None:
        ev = event_pb2.Event(
            involved_object=event_pb2.ObjectReference(kind=KIND, namespace=d.metadata.namespace,
                                                      name=d.metadata.name, uid=d.metadata.uid),
            reason=reason, message=message, type="Normal", source=event_pb2.EventSource(component=COMPONENT))
        ev.metadata.namespace = d.metadata.namespace
        try:
            await self.c.call(self.c.events.Create, ev)
        except grpc.RpcError as err:
            log.debug("event %s for deployment %s not recorded: %s", reason, d.metadata.name, err)

