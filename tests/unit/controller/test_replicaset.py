"""ReplicaSet: the pure planner as a table, the executor against a fake API, and the
API's validation and defaults."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Sequence
from typing import Any

import grpc
import pytest

from controller.replicaset_actions import CollectOrphan, CreatePods, DeletePod, InFlight, UpdateStatus
from controller.replicaset_api import apply_defaults, validate_replicaset
from controller.replicaset_executor import Executor, Expectations, ReplicaSetMetrics
from controller.replicaset_plan import (
    Observed,
    compute_status,
    plan,
    plan_dirty,
    plan_replicaset,
    pod_from_template,
)
from controller.resource import set_time
from cowpod.clock import FakeClock
from cowpod.errors import Invalid
from cowpod.reconcile import Dirty, Requeue
from cowpod.v1 import meta_pb2, pod_pb2, workload_pb2
from cowpod.watches import Watches

T0 = 1_700_000_000.0


# ---- builders -------------------------------------------------------------------------------------


def rs(name: str = "web", replicas: int = 3, *, uid: str = "rs-uid", generation: int = 1,
       status: workload_pb2.ReplicaSetStatus | None = None) -> workload_pb2.ReplicaSet:
    r = workload_pb2.ReplicaSet()
    r.metadata.name, r.metadata.namespace, r.metadata.uid = name, "default", uid
    r.metadata.generation = generation
    r.spec.replicas = replicas
    r.spec.selector.match_labels["app"] = name
    r.spec.template.metadata.labels["app"] = name
    r.spec.template.spec.containers.add(name="c", image="cowpod/busybox:latest", command=["sleep", "1d"])
    r.spec.template.spec.restart_policy = "Always"
    if status is not None:
        r.status.CopyFrom(status)
    return r


def pod(name: str, *, owner: str = "rs-uid", node: str = "n1", phase: str = "Running", ready: bool = True,
        terminating: bool = False, created: float = T0, restarts: int = 0) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name, p.metadata.namespace, p.metadata.uid = name, "default", f"uid-{name}"
    p.metadata.labels["app"] = "web"
    set_time(p.metadata.creation_timestamp, created)
    if owner:
        p.metadata.owner_references.add(kind="ReplicaSet", name="web", uid=owner, controller=True)
    p.spec.node_name = node
    p.status.phase = phase
    c = p.status.conditions.add(type="Ready", status="True" if ready else "False")
    set_time(c.last_transition_time, created)
    p.status.container_statuses.add(name="c", restart_count=restarts)
    if terminating:
        set_time(p.metadata.deletion_timestamp, T0)
    return p


def status(replicas: int, ready: int | None = None, generation: int = 1) -> workload_pb2.ReplicaSetStatus:
    r = replicas if ready is None else ready
    return workload_pb2.ReplicaSetStatus(replicas=replicas, fully_labeled_replicas=replicas, ready_replicas=r,
                                         available_replicas=r, observed_generation=generation)


def kinds(actions: Sequence[Any]) -> list[str]:
    return [type(a).__name__ for a in actions]


# ---- the planner ----------------------------------------------------------------------------------


def test_creates_the_missing_pods_and_reports_status() -> None:
    acts = plan_replicaset(rs(replicas=3), [pod("a")], InFlight(), T0)
    assert kinds(acts) == ["CreatePods", "UpdateStatus"]
    assert isinstance(acts[0], CreatePods) and acts[0].count == 2
    assert isinstance(acts[1], UpdateStatus) and acts[1].status == status(1)


def test_steady_state_does_nothing() -> None:
    pods = [pod("a"), pod("b"), pod("c")]
    assert plan_replicaset(rs(replicas=3, status=status(3)), pods, InFlight(), T0) == []


def test_creates_are_capped_by_burst() -> None:
    acts = plan_replicaset(rs(replicas=1000), [], InFlight(), T0, burst=100)
    assert isinstance(acts[0], CreatePods) and acts[0].count == 100


def test_surplus_goes_unscheduled_first_then_not_ready_then_newest() -> None:
    pods = [
        pod("old-ready", created=T0),
        pod("new-ready", created=T0 + 10),
        pod("not-ready", ready=False),
        pod("pending", node="", phase="Pending", ready=False),
        pod("restarty", restarts=5, created=T0 - 10),
    ]
    acts = plan_replicaset(rs(replicas=1, status=status(1)), pods, InFlight(), T0)
    deleted = [a.name for a in acts if isinstance(a, DeletePod)]
    assert deleted == ["pending", "not-ready", "restarty", "new-ready"]
    assert all(isinstance(a, DeletePod) and a.reason == "surplus" for a in acts if isinstance(a, DeletePod))


def test_lost_pods_do_not_count_and_are_replaced() -> None:
    # Evicted from a lost node: Failed and terminating. It is left to the eviction/agent.
    lost = pod("lost", phase="Failed", terminating=True)
    acts = plan_replicaset(rs(replicas=2, status=status(2)), [pod("a"), lost], InFlight(), T0)
    assert kinds(acts) == ["CreatePods", "UpdateStatus"]
    assert isinstance(acts[0], CreatePods) and acts[0].count == 1


def test_terminal_pods_not_yet_terminating_are_deleted_and_replaced() -> None:
    rejected = pod("rejected", phase="Failed", ready=False)
    acts = plan_replicaset(rs(replicas=1, status=status(0)), [rejected], InFlight(), T0)
    assert kinds(acts) == ["DeletePod", "CreatePods"]
    assert isinstance(acts[0], DeletePod) and acts[0].reason == "terminal"


def test_nothing_is_scaled_while_creates_are_in_flight() -> None:
    fl = InFlight(creating=frozenset({"web-new"}))
    assert kinds(plan_replicaset(rs(replicas=3), [pod("a")], fl, T0)) == ["UpdateStatus"]
    # Once the cache shows the created pod, the set is planned again.
    acts = plan_replicaset(rs(replicas=3), [pod("a"), pod("web-new")], fl, T0)
    assert isinstance(acts[0], CreatePods) and acts[0].count == 1


def test_pods_being_deleted_do_not_count_and_block_scaling() -> None:
    fl = InFlight(deleting=frozenset({"uid-b"}))
    acts = plan_replicaset(rs(replicas=1, status=status(1)), [pod("a"), pod("b")], fl, T0)
    assert acts == []


def test_status_counts_ready_available_and_generation() -> None:
    r = rs(replicas=3, generation=4)
    r.spec.min_ready_seconds = 30
    pods = [pod("a", created=T0 - 100), pod("b", created=T0 - 5), pod("c", ready=False)]
    st = compute_status(r, pods, T0)
    assert (st.replicas, st.ready_replicas, st.available_replicas, st.observed_generation) == (3, 2, 1, 4)


def test_a_set_with_pods_short_of_min_ready_seconds_is_requeued_for_when_they_turn_available() -> None:
    r = rs(replicas=3, status=status(3, ready=3))
    r.spec.min_ready_seconds = 2
    made = [pod("a", created=T0 - 0.5), pod("b", created=T0 - 1.5), pod("c", ready=False)]
    pods = {("default", p.metadata.name): p for p in made}
    key = ("default", "web")

    def planned(now: float) -> list[Any]:
        return list(plan_dirty(Observed({key: r}, {"rs-uid": pods}, {}, now), Dirty(frozenset({key})))[key])

    acts = planned(T0)
    assert acts[-1] == Requeue(0.5)  # b turns available first (a, 1.5 s on, is asked for then)
    [update] = [a for a in acts if isinstance(a, UpdateStatus)]
    assert (update.status.ready_replicas, update.status.available_replicas) == (2, 0)
    assert planned(T0 + 1.0)[-1] == Requeue(0.5)  # b is available now; a in 0.5 s
    # Once every Ready pod is available, nothing is waiting on time (c is not Ready at all).
    assert not any(isinstance(a, Requeue) for a in planned(T0 + 1.5))


def test_orphans_of_a_deleted_set_are_collected() -> None:
    pods = [pod("a", owner="gone-uid"), pod("b", owner=""), pod("c", owner="gone-uid", terminating=True)]
    acts = plan([], pods, {}, T0)
    assert acts == [CollectOrphan("default", "a", "uid-a", "web", "gone-uid")]


def test_whole_cluster_plan_groups_pods_by_owner() -> None:
    sets = [rs("web", 1, uid="u1", status=status(1)), rs("api", 2, uid="u2", status=status(0))]
    pods = [pod("w1", owner="u1"), pod("a1", owner="u2")]
    acts = plan(sets, pods, {}, T0)
    creates = [a for a in acts if isinstance(a, CreatePods)]
    assert [(c.name, c.count) for c in creates] == [("api", 1)]


def test_pod_from_template_is_owned_and_labelled() -> None:
    p = pod_from_template(rs(), "web-abcde")
    assert p.metadata.name == "web-abcde" and p.metadata.namespace == "default"
    assert dict(p.metadata.labels) == {"app": "web"}
    [ref] = p.metadata.owner_references
    assert (ref.kind, ref.name, ref.uid, ref.controller) == ("ReplicaSet", "web", "rs-uid", True)
    assert p.spec.containers[0].image == "cowpod/busybox:latest"


# ---- expectations ---------------------------------------------------------------------------------


async def test_expectations_resolve_on_observation_and_expire() -> None:
    clock = FakeClock(start=T0)
    ex = Expectations(clock, timeout=60)
    ex.expect_create("rs-uid", "web-x")
    ex.expect_delete("rs-uid", "uid-b")
    assert ex.view("rs-uid") == InFlight(frozenset({"web-x"}), frozenset({"uid-b"}))
    ex.observe(pod("web-x"))
    ex.observe(pod("b", terminating=True))
    assert ex.view("rs-uid").empty
    ex.expect_create("rs-uid", "web-y")
    await clock.advance(61)
    assert ex.view("rs-uid").empty


# ---- executor -------------------------------------------------------------------------------------


class RpcErr(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class FakeAPI:
    def __init__(self) -> None:
        self.created: list[pod_pb2.Pod] = []
        self.deleted: list[str] = []
        self.statuses: list[workload_pb2.ReplicaSetStatus] = []
        self.events: list[tuple[str, str]] = []
        self.sets: dict[str, workload_pb2.ReplicaSet] = {}
        self.fail_create: grpc.StatusCode | None = None

    async def create_pod(self, p: pod_pb2.Pod) -> None:
        if self.fail_create is not None:
            raise RpcErr(self.fail_create, "nope")
        self.created.append(p)

    async def delete_pod(self, namespace: str, name: str) -> None:
        self.deleted.append(name)

    async def get_replicaset(self, namespace: str, name: str) -> workload_pb2.ReplicaSet | None:
        return self.sets.get(name)

    async def update_status(self, namespace: str, name: str, st: workload_pb2.ReplicaSetStatus) -> None:
        self.statuses.append(st)

    async def event(self, namespace: str, name: str, uid: str, reason: str, message: str,
                    *, warning: bool = False) -> None:
        self.events.append((reason, message))


def executor(api: FakeAPI) -> tuple[Executor, Expectations]:
    ex = Expectations(FakeClock(start=T0))
    names = iter(f"web-{i}" for i in range(100))
    return Executor(api, ex, ReplicaSetMetrics(), name_fn=lambda _: next(names)), ex


async def test_executor_creates_named_owned_pods_and_expects_them() -> None:
    api = FakeAPI()
    exe, ex = executor(api)
    await exe.execute([CreatePods(rs(), "default", "web", 2)])
    assert [p.metadata.name for p in api.created] == ["web-0", "web-1"]
    assert ex.view("rs-uid").creating == {"web-0", "web-1"}
    assert ("SuccessfulCreate", "Created pod: web-0") in api.events


async def test_already_exists_is_our_own_earlier_attempt() -> None:
    api = FakeAPI()
    api.fail_create = grpc.StatusCode.ALREADY_EXISTS
    exe, ex = executor(api)
    await exe.execute([CreatePods(rs(), "default", "web", 1)])
    assert ex.view("rs-uid").creating == {"web-0"}


async def test_a_failed_create_is_forgotten_so_the_next_pass_retries() -> None:
    api = FakeAPI()
    api.fail_create = grpc.StatusCode.INVALID_ARGUMENT
    exe, ex = executor(api)
    await exe.execute([CreatePods(rs(), "default", "web", 1)])
    assert ex.view("rs-uid").empty
    assert api.events and api.events[0][0] == "FailedCreate"


async def test_cancelled_execute_leaves_no_job_never_awaited() -> None:
    """The controller stopping mid-execute: jobs still waiting for a place are closed, not
    left for the collector to warn about ("coroutine ... was never awaited")."""
    api = FakeAPI()
    started = asyncio.Event()

    async def stuck(p: pod_pb2.Pod) -> None:
        started.set()
        await asyncio.Event().wait()

    api.create_pod = stuck  # type: ignore[method-assign]
    exe = Executor(api, Expectations(FakeClock(start=T0)), ReplicaSetMetrics(), concurrency=1)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        status = UpdateStatus("default", "web", workload_pb2.ReplicaSetStatus())
        task = asyncio.create_task(exe.execute([CreatePods(rs(), "default", "web", 3), status]))
        await started.wait()
        task.cancel()
        await asyncio.wait([task])
        assert task.cancelled()
        del task  # with it the frame holding the jobs
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()
    assert [str(w.message) for w in seen if issubclass(w.category, RuntimeWarning)] == []


async def test_orphans_are_deleted_only_when_the_owner_is_really_gone() -> None:
    api = FakeAPI()
    exe, _ = executor(api)
    api.sets["web"] = rs(uid="live-uid")
    await exe.execute([CollectOrphan("default", "a", "uid-a", "web", "live-uid")])
    assert api.deleted == []  # the cache was behind
    await exe.execute([CollectOrphan("default", "a", "uid-a", "web", "old-uid")])
    assert api.deleted == ["a"]  # same name, different uid: recreated set, old pod goes


# ---- API validation and defaults ------------------------------------------------------------------


def test_defaults_replicas_selector_and_restart_policy() -> None:
    r = workload_pb2.ReplicaSet()
    r.metadata.name, r.metadata.namespace = "web", "default"
    r.spec.template.metadata.labels["app"] = "web"
    r.spec.template.spec.containers.add(name="c", image="x")
    apply_defaults(r.spec)
    assert r.spec.replicas == 1
    assert dict(r.spec.selector.match_labels) == {"app": "web"}
    assert r.spec.template.spec.restart_policy == "Always"
    validate_replicaset(r)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: setattr(r.spec, "replicas", -1), "spec.replicas"),
        (lambda r: r.spec.selector.match_labels.clear(), "spec.selector"),
        (lambda r: r.spec.selector.match_labels.__setitem__("app", "other"), "spec.template.metadata.labels"),
        (lambda r: r.spec.template.spec.containers[0].ClearField("image"),
         "spec.template.spec.containers[0].image"),
        (lambda r: setattr(r.spec.template.spec, "restart_policy", "Never"),
         "spec.template.spec.restartPolicy"),
        (lambda r: setattr(r.metadata, "name", "Bad_Name"), "metadata.name"),
    ],
)
def test_validation_names_the_field(mutate: Any, field: str) -> None:
    r = rs()
    mutate(r)
    with pytest.raises(Invalid) as info:
        validate_replicaset(r)
    assert info.value.field == field


# ---- the controller's bookkeeping (handlers + one sync, no informer streams) ---------------------


async def test_controller_syncs_dirty_sets_and_waits_for_its_own_creates() -> None:
    from controller.replicaset import ReplicaSetController

    api = FakeAPI()
    rsc = ReplicaSetController(api, Watches.over(None), FakeClock(start=T0))
    rsc.executor = executor(api)[0]
    rsc.expect = rsc.executor.expect
    rsc.replicasets.synced = rsc.pods.synced = True
    web = rs(replicas=2)
    rsc.replicasets.cache[("default", "web")] = web
    await rsc._on_rs(meta_pb2.ADDED, web)
    acts = await rsc.sync_once()
    assert [type(a).__name__ for a in acts] == ["CreatePods", "UpdateStatus"]
    assert [p.metadata.name for p in api.created] == ["web-0", "web-1"]
    # Nothing new is created while the cache has not shown those pods yet.
    await rsc._on_rs(meta_pb2.MODIFIED, web)
    assert not [a for a in await rsc.sync_once() if isinstance(a, CreatePods)]
    # The informer delivers them: in steady state there is nothing to do.
    for p in api.created:
        p.metadata.uid = f"uid-{p.metadata.name}"
        p.status.phase = "Running"
        await rsc.pods.shared.deliver(meta_pb2.ADDED, p)
    web.status.CopyFrom(status(2, ready=0))
    assert await rsc.sync_once() == []
    # A pod vanishes: the set is dirty again and one is replaced.
    await rsc.pods.shared.deliver(meta_pb2.DELETED, api.created[0])
    acts = await rsc.sync_once()
    assert any(isinstance(a, CreatePods) and a.count == 1 for a in acts)
    # The set is deleted: its remaining pod is an orphan and is collected.
    await rsc._on_rs(meta_pb2.DELETED, web)
    del rsc.replicasets.cache[("default", "web")]
    acts = await rsc.sync_once()
    assert [a.name for a in acts if isinstance(a, CollectOrphan)] == ["web-1"]
    assert "web-1" in api.deleted


async def test_a_set_whose_calls_failed_backs_off_and_is_retried() -> None:
    from controller.replicaset import FAILURE_BACKOFF, ReplicaSetController

    api = FakeAPI()
    api.fail_create = grpc.StatusCode.UNAVAILABLE
    clock = FakeClock(start=T0)
    rsc = ReplicaSetController(api, Watches.over(None), clock)
    rsc.executor = executor(api)[0]
    rsc.expect = rsc.executor.expect
    web = rs(replicas=1)
    rsc.replicasets.cache[("default", "web")] = web
    await rsc._on_rs(meta_pb2.ADDED, web)
    await rsc.sync_once()
    key = ("default", "web")
    assert rsc.driver.backoff.failures(key) == 1 and key in rsc.driver.dirty
    assert rsc.driver.backoff.due(key) == clock.monotonic() + FAILURE_BACKOFF.delay(1)
    # Not retried before its back-off is over; then it is, and a success clears it.
    assert await rsc.sync_once() == []
    api.fail_create = None
    await clock.advance(FAILURE_BACKOFF.delay(1))
    acts = await rsc.sync_once()
    assert any(isinstance(a, CreatePods) for a in acts) and len(api.created) == 1
    assert rsc.driver.backoff.failures(key) == 0


async def test_controller_looks_again_when_a_pod_turns_available_without_an_event() -> None:
    """minReadySeconds 2: the pass that sees the pod Ready asks for a requeue at +2 s; at +2 s the
    set is planned again with nothing marking it, and availableReplicas becomes 1."""
    from controller.replicaset import ReplicaSetController

    api = FakeAPI()
    clock = FakeClock(start=T0)
    rsc = ReplicaSetController(api, Watches.over(None), clock, resync_seconds=3600.0)
    rsc.executor = executor(api)[0]
    rsc.expect = rsc.executor.expect
    web = rs(replicas=1, status=status(1, ready=0))
    web.spec.min_ready_seconds = 2
    rsc.replicasets.cache[("default", "web")] = web
    await rsc._on_rs(meta_pb2.ADDED, web)
    await rsc.pods.shared.deliver(meta_pb2.ADDED, pod("a", created=T0))  # Ready since T0
    [update] = await rsc.sync_once()
    assert isinstance(update, UpdateStatus) and update.status.available_replicas == 0
    web.status.CopyFrom(update.status)
    assert rsc.driver.requeued == {("default", "web"): 2.0}
    await clock.advance(1.9)
    assert await rsc.sync_once() == []  # not due yet, and nothing marked it
    await clock.advance(0.1)
    [update] = await rsc.sync_once()
    assert isinstance(update, UpdateStatus) and update.status.available_replicas == 1
    assert rsc.driver.requeued == {}
