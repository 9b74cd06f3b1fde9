"""The Job controller's pure plan: parallelism, completions, back-off limit, deadline, TTL."""

from __future__ import annotations

from collections.abc import Sequence

from controller.job import (
    COMPLETE,
    FAILED,
    DeleteJob,
    UpdateJobStatus,
    finished_condition,
    job_due_in,
    plan_job,
)
from controller.podowner import CreatePod, DeletePod
from controller.replicaset_actions import InFlight
from controller.resource import set_time
from cowpod.v1 import pod_pb2, workload_pb2

NOW = 1_700_000_000.0
NONE = InFlight()


def make_job(completions: int = 3, parallelism: int = 2, backoff: int = 6, restart: str = "Never"
             ) -> workload_pb2.Job:
    j = workload_pb2.Job()
    j.metadata.namespace, j.metadata.name, j.metadata.uid = "default", "pi", "uid-pi"
    j.spec.completions, j.spec.parallelism, j.spec.backoff_limit = completions, parallelism, backoff
    j.spec.template.metadata.labels["controller-uid"] = "uid-pi"
    j.spec.template.spec.restart_policy = restart
    j.spec.template.spec.containers.add(name="c", image="busybox")
    return j


def pod(name: str, phase: str = "Running", restarts: int = 0) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.namespace, p.metadata.name, p.metadata.uid = "default", name, f"uid-{name}"
    p.metadata.owner_references.add(kind="Job", name="pi", uid="uid-pi", controller=True)
    p.status.phase = phase
    if restarts:
        p.status.container_statuses.add(name="c", restart_count=restarts)
    return p


def creates(actions: Sequence[object]) -> int:
    return sum(1 for a in actions if isinstance(a, CreatePod))


def status_of(actions: Sequence[object]) -> workload_pb2.JobStatus:
    [st] = [a.status for a in actions if isinstance(a, UpdateJobStatus)]
    return st


def with_status(job: workload_pb2.Job, actions: Sequence[object]) -> workload_pb2.Job:
    j = workload_pb2.Job()
    j.CopyFrom(job)
    j.status.CopyFrom(status_of(actions))
    return j


def test_starts_parallelism_pods_and_stamps_start_time() -> None:
    acts = plan_job(make_job(), [], NONE, NOW)
    assert creates(acts) == 2
    [c] = {a.pod.metadata.owner_references[0].uid for a in acts if isinstance(a, CreatePod)}
    assert c == "uid-pi"
    assert status_of(acts).start_time.seconds == int(NOW)


def test_never_more_active_than_completions_left() -> None:
    job = make_job(completions=3, parallelism=2)
    acts = plan_job(job, [pod("a", "Succeeded"), pod("b", "Succeeded"), pod("c")], NONE, NOW)
    assert creates(acts) == 0  # one completion left, one pod already running
    acts = plan_job(job, [pod("a", "Succeeded"), pod("b", "Succeeded")], NONE, NOW)
    assert creates(acts) == 1


def test_unseen_creates_block_more_creates() -> None:
    acts = plan_job(make_job(), [pod("a")], InFlight(creating=frozenset({"b"})), NOW)
    assert creates(acts) == 0


def test_complete_when_completions_succeeded() -> None:
    job = make_job(completions=2)
    acts = plan_job(job, [pod("a", "Succeeded"), pod("b", "Succeeded")], NONE, NOW)
    st = status_of(acts)
    assert st.succeeded == 2 and st.active == 0 and st.completion_time.seconds == int(NOW)
    done = finished_condition(with_status(job, acts))
    assert done is not None and done.type == COMPLETE
    # Finished: nothing more is created, even if a finished pod's object is deleted by hand.
    again = plan_job(with_status(job, acts), [pod("a", "Succeeded")], NONE, NOW + 1)
    assert creates(again) == 0 and not any(isinstance(a, UpdateJobStatus) for a in again)


def test_backoff_limit_fails_the_job_and_deletes_active_pods() -> None:
    job = make_job(completions=5, backoff=1)
    acts = plan_job(job, [pod("a", "Failed"), pod("b", "Failed"), pod("c")], NONE, NOW)
    done = finished_condition(with_status(job, acts))
    assert done is not None and (done.type, done.reason) == (FAILED, "BackoffLimitExceeded")
    assert [a.name for a in acts if isinstance(a, DeletePod)] == ["c"]
    assert creates(acts) == 0


def test_on_failure_restarts_count_towards_the_backoff_limit() -> None:
    job = make_job(completions=1, parallelism=1, backoff=2, restart="OnFailure")
    assert finished_condition(with_status(job, plan_job(job, [pod("a", restarts=2)], NONE, NOW))) is None
    done = finished_condition(with_status(job, plan_job(job, [pod("a", restarts=3)], NONE, NOW)))
    assert done is not None and done.reason == "BackoffLimitExceeded"


def test_active_deadline() -> None:
    job = make_job()
    job.spec.active_deadline_seconds = 30
    set_time(job.status.start_time, NOW)
    early = plan_job(job, [pod("a")], NONE, NOW + 29)
    assert not any(isinstance(a, DeletePod) for a in early)
    acts = plan_job(job, [pod("a")], NONE, NOW + 30)
    done = finished_condition(with_status(job, acts))
    assert done is not None and done.reason == "DeadlineExceeded"
    assert [a.name for a in acts if isinstance(a, DeletePod)] == ["a"]


def test_ttl_after_finished_deletes_the_job() -> None:
    job = make_job(completions=1)
    job.spec.ttl_seconds_after_finished = 60
    finished = with_status(job, plan_job(job, [pod("a", "Succeeded")], NONE, NOW))
    early = plan_job(finished, [pod("a", "Succeeded")], NONE, NOW + 59)
    assert not any(isinstance(a, DeleteJob) for a in early)
    assert DeleteJob("uid-pi") in plan_job(finished, [pod("a", "Succeeded")], NONE, NOW + 60)


def test_suspend_deletes_active_pods_and_starts_none() -> None:
    job = make_job()
    job.spec.suspend = True
    acts = plan_job(job, [pod("a")], NONE, NOW)
    assert creates(acts) == 0 and [a.name for a in acts if isinstance(a, DeletePod)] == ["a"]


def test_lower_parallelism_deletes_the_surplus() -> None:
    job = make_job(completions=5, parallelism=1)
    acts = plan_job(job, [pod("a"), pod("b")], NONE, NOW)
    assert len([a for a in acts if isinstance(a, DeletePod)]) == 1


def failed_at(name: str, when: float) -> pod_pb2.Pod:
    p = pod(name, "Failed")
    cs = p.status.container_statuses.add(name="c")
    set_time(cs.state.terminated.finished_at, when)
    return p


def test_a_failed_pod_is_replaced_after_the_failure_back_off() -> None:
    job = make_job(completions=1, parallelism=1)
    one = [failed_at("a", NOW)]
    assert creates(plan_job(job, one, NONE, NOW + 9)) == 0  # 10 s after the first failure
    assert creates(plan_job(job, one, NONE, NOW + 10)) == 1
    two = [failed_at("a", NOW - 100), failed_at("b", NOW)]
    assert creates(plan_job(job, two, NONE, NOW + 19)) == 0  # then 20 s
    assert creates(plan_job(job, two, NONE, NOW + 20)) == 1


# ---- when only time changes the plan (the Job is requeued for it) ---------------------------------


def test_due_in_names_the_active_deadline_from_the_start_time() -> None:
    job = make_job()
    job.spec.active_deadline_seconds = 30
    assert job_due_in(job, [pod("a")], NOW) is None  # not started yet: the plan stamps startTime first
    started = with_status(job, plan_job(job, [pod("a")], NONE, NOW))
    assert job_due_in(started, [pod("a")], NOW + 12) == 18
    # At that moment the plan fails the Job; a failed Job without a TTL waits on nothing.
    failed = with_status(started, plan_job(started, [pod("a")], NONE, NOW + 30))
    assert finished_condition(failed) is not None and job_due_in(failed, [pod("a")], NOW + 30) is None


def test_due_in_names_the_ttl_after_finishing() -> None:
    job = make_job(completions=1)
    job.spec.ttl_seconds_after_finished = 60
    finished = with_status(job, plan_job(job, [pod("a", "Succeeded")], NONE, NOW + 5))
    assert job_due_in(finished, [pod("a", "Succeeded")], NOW + 5) == 60
    assert job_due_in(finished, [pod("a", "Succeeded")], NOW + 65) is None  # due: the plan deletes it


def test_due_in_names_the_end_of_the_failure_back_off() -> None:
    job = make_job(completions=1, parallelism=1)
    assert job_due_in(job, [failed_at("a", NOW)], NOW + 4) == 6
    assert job_due_in(job, [failed_at("a", NOW - 100), failed_at("b", NOW)], NOW + 4) == 16


def test_a_suspended_job_waits_on_nothing() -> None:
    job = make_job()
    job.spec.active_deadline_seconds = 30
    set_time(job.status.start_time, NOW)
    job.spec.suspend = True
    assert job_due_in(job, [failed_at("a", NOW)], NOW) is None
