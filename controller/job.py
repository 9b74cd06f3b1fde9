"""The Job controller: run a Job's pods until `completions` of them succeed.

    Job informer ──┐                              ┌─► PodService.Create / Delete
                   ├─► driver (dirty jobs) ─► plan ┼─► JobService.UpdateStatus (counts, conditions)
    Pod informer ──┘   (controller-uid pods)       └─► JobService.Delete (ttlSecondsAfterFinished)

`plan_job` is pure over (job, the pods it owns, in-flight creates/deletes, now); the
reconcile driver (`cowpod.reconcile`) runs it per dirty Job and the executor here
carries the actions out through the API.

The rules, as Kubernetes batch/v1 has them (non-indexed completion mode):
- At most `parallelism` pods are active at once, and never more than the completions
  still missing; creates the pod cache has not shown yet count as active (expectations),
  so a lagging cache never starts a third pod of a parallelism-2 Job.
- A pod that ends Succeeded is one completion; Failed is one failure, and with
  `restartPolicy: OnFailure` each container restart is one too. More failures than
  `backoffLimit` fail the Job (reason BackoffLimitExceeded); so does running longer than
  `activeDeadlineSeconds` from `status.startTime` (DeadlineExceeded). A failed Job's
  active pods are deleted; its finished pods are kept for `logs`, as Kubernetes keeps them.
- `completions` successes make the Job Complete (`status.completionTime`); the pods still
  running then are deleted.
- `suspend: true` deletes the active pods and starts none.
- A finished Job with `ttlSecondsAfterFinished` is deleted that long after it finished; its
  pods then go with it (orphans are collected, background cascade).
- Counts never go down: a finished pod deleted by hand stays counted (status is the record).
- After a Failed pod, the next pod waits Kubernetes' pod-failure back-off: 10 s after the
  last failure, doubling with each failure up to 6 minutes (`failure_backoff`).
Time-based transitions (the active deadline, the TTL, the end of a pod-failure back-off) come
with no event; `job_due_in` names the next one and the Job is requeued for it (a `Requeue` to the
driver), so each lands when it is due, not at the next resync.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from controller.pod_informer import SharedPodInformer
from controller.podowner import (
    CollectOrphan,
    CreatePod,
    DeletePod,
    PodOwnerLoop,
    finished_at,
    pod_from_template,
    settled,
)
from controller.replicaset_actions import InFlight
from controller.replicaset_plan import deletion_rank, is_active, is_ready
from controller.resource import get_time, set_time
from cowpod.api.labels import JOB_CONTROLLER_UID_LABEL
from cowpod.backoff import Backoff
from cowpod.client import Client
from cowpod.clock import Clock
from cowpod.reconcile import Requeue
from cowpod.v1 import meta_pb2, pod_pb2, workload_pb2

log = logging.getLogger(__name__)

KIND = "Job"
COMPONENT = "job-controller"
COMPLETE = "Complete"
FAILED = "Failed"
DEFAULT_RESYNC_SECONDS = 5.0
# Kubernetes' Job controller: DefaultJobPodFailureBackOff 10 s, MaxJobPodFailureBackOff 360 s.
FAILURE_BACKOFF = Backoff(initial=10.0, cap=360.0)


@dataclass(frozen=True)
class UpdateJobStatus:
    status: workload_pb2.JobStatus = field(hash=False)


@dataclass(frozen=True)
class DeleteJob:
    """ttlSecondsAfterFinished has passed."""

    uid: str


JobAction = CreatePod | DeletePod | CollectOrphan | UpdateJobStatus | DeleteJob


def finished_condition(job: workload_pb2.Job) -> meta_pb2.Condition | None:
    for c in job.status.conditions:
        if c.type in (COMPLETE, FAILED) and c.status == "True":
            return c
    return None


def _condition(type_: str, reason: str, message: str, now: float) -> meta_pb2.Condition:
    c = meta_pb2.Condition(type=type_, status="True", reason=reason, message=message)
    set_time(c.last_transition_time, now)
    set_time(c.last_probe_time, now)
    return c


def failures(job: workload_pb2.Job, owned: Iterable[pod_pb2.Pod]) -> int:
    n = 0
    for p in owned:
        if p.status.phase == "Failed":
            n += 1
        elif job.spec.template.spec.restart_policy == "OnFailure":
            n += sum(cs.restart_count for cs in p.status.container_statuses)
    return n


def last_failure(owned: Iterable[pod_pb2.Pod]) -> float:
    """When the most recent Failed pod's last container finished (0 if no such time is known)."""
    return max((finished_at(p) for p in owned if p.status.phase == "Failed"), default=0.0)


def plan_job(job: workload_pb2.Job, owned: Sequence[pod_pb2.Pod], in_flight: InFlight,
             now: float) -> list[JobAction]:
    """Pure: what to do for one Job, given the pods it owns (from the cache)."""
    meta, spec = job.metadata, job.spec
    actions: list[JobAction] = []
    active = [p for p in owned if is_active(p) and p.metadata.uid not in in_flight.deleting]
    status = workload_pb2.JobStatus()
    status.CopyFrom(job.status)
    status.succeeded = max(job.status.succeeded, sum(1 for p in owned if p.status.phase == "Succeeded"))
    status.failed = max(job.status.failed, failures(job, owned))

    def delete_all(reason: str) -> None:
        for p in active:
            actions.append(DeletePod(meta.namespace, p.metadata.name, p.metadata.uid, meta.uid, reason))

    done = finished_condition(job)
    if done is None and not spec.suspend:
        if not status.HasField("start_time"):
            set_time(status.start_time, now)
        started = get_time(status.start_time)
        if status.failed > spec.backoff_limit:
            done = _condition(FAILED, "BackoffLimitExceeded", "Job has reached the specified backoff limit",
                              now)
        elif spec.HasField("active_deadline_seconds") and now - started >= spec.active_deadline_seconds:
            done = _condition(FAILED, "DeadlineExceeded", "Job was active longer than specified deadline",
                              now)
        elif status.succeeded >= spec.completions:
            done = _condition(COMPLETE, "CompletionsReached", "Reached expected number of succeeded pods",
                              now)
            set_time(status.completion_time, now)
        if done is not None:
            status.conditions.append(done)
    if done is not None:
        delete_all("the job has finished" if done.type == COMPLETE else f"the job failed: {done.reason}")
        if spec.HasField("ttl_seconds_after_finished") and \
                now >= get_time(done.last_transition_time) + spec.ttl_seconds_after_finished:
            actions.append(DeleteJob(meta.uid))
    elif spec.suspend:
        delete_all("the job is suspended")
    elif settled(in_flight, owned):
        want = max(0, min(spec.parallelism, spec.completions - status.succeeded))
        failed_at = last_failure(owned)
        if want > len(active) and failed_at and now < failed_at + FAILURE_BACKOFF.delay(status.failed):
            want = len(active)  # requeued for when the back-off is over (job_due_in)
        if want > len(active):
            pod = pod_from_template(spec.template, KIND, meta)
            actions.extend(CreatePod(meta.uid, meta.name, pod) for _ in range(want - len(active)))
        for p in sorted(active, key=deletion_rank)[: max(0, len(active) - want)]:
            actions.append(DeletePod(meta.namespace, p.metadata.name, p.metadata.uid, meta.uid,
                                     "more than parallelism allows"))
    deleting = {a.uid for a in actions if isinstance(a, DeletePod)}
    status.active = sum(1 for p in active if p.metadata.uid not in deleting)
    status.ready = sum(1 for p in active if p.metadata.uid not in deleting and is_ready(p))
    if status != job.status:
        actions.append(UpdateJobStatus(status))
    return actions


def job_due_in(job: workload_pb2.Job, owned: Iterable[pod_pb2.Pod], now: float) -> float | None:
    """Seconds until the next moment only time changes this Job's plan: `activeDeadlineSeconds`
    after its start, `ttlSecondsAfterFinished` after it finished, or the end of the back-off
    after a failed pod. None when none is ahead (read from the stored status: the status a plan
    writes comes back as an event and is planned, and so requeued, again)."""
    spec = job.spec
    done = finished_condition(job)
    dues: list[float] = []
    if done is not None:
        if spec.HasField("ttl_seconds_after_finished"):
            dues.append(get_time(done.last_transition_time) + spec.ttl_seconds_after_finished)
    elif not spec.suspend:
        if spec.HasField("active_deadline_seconds") and job.status.HasField("start_time"):
            dues.append(get_time(job.status.start_time) + spec.active_deadline_seconds)
        owned = list(owned)
        failed_at = last_failure(owned)
        if failed_at:
            n = max(job.status.failed, failures(job, owned))
            dues.append(failed_at + FAILURE_BACKOFF.delay(n))
    ahead = [due - now for due in dues if due > now]
    return min(ahead, default=None)


# ---- the controller ---------------------------------------------------------------------------------


class JobController(PodOwnerLoop):
    """Jobs on the shared pod-owner loop (`podowner.PodOwnerLoop`). `run()` until cancelled."""

    kind = KIND
    component = COMPONENT
    # Only pods with the label every Job's template gets (job_api.apply_defaults) count.
    pod_label = JOB_CONTROLLER_UID_LABEL

    def __init__(self, client: Client, clock: Clock | None = None, *,
                 resync_seconds: float = DEFAULT_RESYNC_SECONDS, registry: CollectorRegistry | None = None,
                 watch_jobs: Callable[..., Any] | None = None,
                 watch_pods: Callable[..., Any] | SharedPodInformer | None = None) -> None:
        """Writes go through `client`; watches too unless given (the controller passes its hubs'
        and its shared pod informer)."""
        super().__init__(client, clock, watch_owners=watch_jobs or client.jobs.Watch,
                         watch_pods=watch_pods or client.pods.Watch, get_owner=client.jobs.Get,
                         resync_seconds=resync_seconds, registry=registry)

    def plan_owner(self, owner: workload_pb2.Job, owned: Sequence[pod_pb2.Pod], in_flight: InFlight,
                   now: float) -> list[JobAction | Requeue]:
        actions: list[JobAction | Requeue] = [*plan_job(owner, owned, in_flight, now)]
        wait = job_due_in(owner, owned, now)
        if wait is not None:
            actions.append(Requeue(wait))
        return actions

    async def execute_own(self, job: workload_pb2.Job, action: JobAction) -> None:
        if isinstance(action, UpdateJobStatus):
            req = workload_pb2.Job(status=action.status)
            req.metadata.namespace, req.metadata.name = job.metadata.namespace, job.metadata.name
            if not await self.update_status(self.c.jobs.UpdateStatus, req):
                return
            old, new = finished_condition(job), finished_condition(req)
            if old is None and new is not None:
                await self.pod_actions.event(job.metadata, new.reason, new.message,
                                             warning=new.type == FAILED)
        elif isinstance(action, DeleteJob):
            await self._delete(job)

    async def _delete(self, job: workload_pb2.Job) -> None:
        key = meta_pb2.ObjectKey(namespace=job.metadata.namespace, name=job.metadata.name)
        try:
            cur = await self.c.call(self.c.jobs.Get, key)
            if cur.metadata.uid != job.metadata.uid:
                return
            opts = meta_pb2.DeleteOptions(key=key, resource_version=cur.metadata.resource_version)
            await self.c.call(self.c.jobs.Delete, opts)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
        log.info("deleted job %s/%s: ttlSecondsAfterFinished has passed", key.namespace, key.name)
