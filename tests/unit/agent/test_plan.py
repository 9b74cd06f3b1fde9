"""plan_pod, table-driven: (desired, Docker facts, memory, now) -> actions.
No Docker, no clock: each row is one situation a reviewer can read."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from agent.config import BackoffPolicy
from agent.desired import DesiredPod
from agent.plan import (
    Action,
    Finalize,
    KillContainer,
    PendingError,
    PlanConfig,
    PodMemory,
    RemoveContainer,
    RemoveVolumes,
    Requeue,
    StartContainer,
    StartSandbox,
    plan,
    plan_pod,
    pod_phase,
)
from agent.runtime import ContainerInfo, Kind, RunState
from tests.unit.agent.fakes import ctr, desired, exited, sandbox

CFG = PlanConfig(backoff=BackoffPolicy(initial=10, maximum=300, reset_after=600), keep_dead=1)
SB = sandbox()
SBID = SB.id


@dataclass
class Row:
    id: str
    want: DesiredPod | None
    have: list[ContainerInfo]
    expect: list[Action]
    now: float = 200.0
    memory: PodMemory = field(default_factory=PodMemory)


NOSB = replace(desired(), sandbox=False)

ROWS = [
    Row("empty pod starts its sandbox", desired(), [], [StartSandbox(0)]),
    Row(
        "a pod without a sandbox starts its app at once, joined to the VM",
        NOSB,
        [],
        [StartContainer("app", Kind.APP, 0, 0, "")],
    ),
    Row("a pod without a sandbox, app running: nothing", NOSB, [ctr()], []),
    Row(
        "a pod without a sandbox restarts its crashed app without one",
        NOSB,
        [exited("app", 1)],
        [StartContainer("app", Kind.APP, 1, 1, "")],
    ),
    Row(
        "a pod an older agent gave a sandbox keeps that model",
        NOSB,
        [sandbox(state=RunState.EXITED), ctr()],
        [KillContainer("app-0-app", "app", 30, "SandboxChanged")],
    ),
    Row("sandbox up: start the app", desired(), [SB], [StartContainer("app", Kind.APP, 0, 0, SBID)]),
    Row(
        "several apps start together",
        desired(("a", "b")),
        [SB],
        [StartContainer("a", Kind.APP, 0, 0, SBID), StartContainer("b", Kind.APP, 0, 0, SBID)],
    ),
    Row("healthy running app: nothing", desired(), [SB, ctr()], []),
    Row(
        "init containers run one at a time, first",
        desired(init=("i1", "i2")),
        [SB],
        [StartContainer("i1", Kind.INIT, 0, 0, SBID)],
    ),
    Row(
        "init i1 done: i2 next, apps wait",
        desired(init=("i1", "i2")),
        [SB, exited("i1", 0, kind=Kind.INIT)],
        [StartContainer("i2", Kind.INIT, 0, 0, SBID)],
    ),
    Row("init running: wait", desired(init=("i1",)), [SB, ctr("i1", kind=Kind.INIT)], []),
    Row(
        "all inits done: apps start",
        desired(init=("i1", "i2")),
        [SB, exited("i1", 0, kind=Kind.INIT), exited("i2", 0, kind=Kind.INIT)],
        [StartContainer("app", Kind.APP, 0, 0, SBID)],
    ),
    Row(
        "failed init, Always: restarted (first restart immediate)",
        desired(init=("i1",)),
        [SB, exited("i1", 1, kind=Kind.INIT)],
        [StartContainer("i1", Kind.INIT, 1, 1, SBID)],
    ),
    Row(
        "failed init, Never: pod fails, sandbox stops",
        desired(init=("i1",), restart="Never"),
        [SB, exited("i1", 1, kind=Kind.INIT)],
        [KillContainer(SBID, "POD", 0, "PodTerminated", False)],
    ),
    Row(
        "crash, Always: first restart at once",
        desired(),
        [SB, exited("app", 1)],
        [StartContainer("app", Kind.APP, 1, 1, SBID)],
    ),
    Row(
        "second crash: back-off 10s from the finish",
        desired(),
        [SB, exited("app", 1, attempt=1, streak=1, started=190, finished=195)],
        [Requeue(205.0)],
    ),
    Row(
        "second crash after its back-off: restart",
        desired(),
        [SB, exited("app", 1, attempt=1, streak=1, started=190, finished=195)],
        [StartContainer("app", Kind.APP, 2, 2, SBID)],
        now=205.0,
    ),
    Row(
        "back-off doubles: streak 3 waits 20s",
        desired(),
        [SB, exited("app", 1, attempt=2, streak=2, started=190, finished=195)],
        [Requeue(215.0)],
    ),
    Row(
        "back-off is capped at the maximum",
        desired(),
        [SB, exited("app", 1, attempt=20, streak=20, started=190, finished=195)],
        [Requeue(495.0)],
    ),
    Row(
        "a run of 10 minutes resets the back-off",
        desired(),
        [SB, exited("app", 1, attempt=9, streak=9, started=100, finished=800)],
        [StartContainer("app", Kind.APP, 10, 1, SBID)],
        now=800.5,
    ),
    Row(
        "OnFailure: exit 0 stays done",
        desired(("a", "b"), restart="OnFailure"),
        [SB, exited("a", 0), ctr("b")],
        [],
    ),
    Row(
        "OnFailure: exit 1 restarts",
        desired(restart="OnFailure"),
        [SB, exited("app", 1)],
        [StartContainer("app", Kind.APP, 1, 1, SBID)],
    ),
    Row(
        "Never: a finished pod stops its sandbox",
        desired(restart="Never"),
        [SB, exited("app", 3)],
        [KillContainer(SBID, "POD", 0, "PodTerminated", False)],
    ),
    Row(
        "Never: one container still running keeps the pod",
        desired(("a", "b"), restart="Never"),
        [SB, exited("a", 1), ctr("b")],
        [],
    ),
    Row(
        "failed liveness kills the container",
        desired(),
        [SB, ctr(cid="c1")],
        [KillContainer("c1", "app", 30, "Unhealthy")],
        memory=PodMemory(unhealthy={"c1": "liveness failed"}),
    ),
    Row(
        "a changed spec replaces the container",
        desired(),
        [SB, ctr(cid="c1", spec_hash="old")],
        [KillContainer("c1", "app", 30, "SpecChanged")],
    ),
    Row(
        "deleting: stop app containers with the pod's grace",
        desired(deleting=True, grace=5),
        [SB, ctr(cid="c1")],
        [KillContainer("c1", "app", 5, "Stopping")],
    ),
    Row(
        "deleting, all stopped: remove everything, then finalize",
        desired(deleting=True),
        [SB, exited("app", 143, cid="c1")],
        [RemoveContainer(SBID, "POD"), RemoveContainer("c1", "app"), RemoveVolumes("u1"), Finalize()],
    ),
    Row(
        "pod gone from the API: stop, remove, no finalize",
        None,
        [SB, exited("app", 0, cid="c1")],
        [RemoveContainer(SBID, "POD"), RemoveContainer("c1", "app"), RemoveVolumes("u1")],
    ),
    Row(
        "pod gone while running: stopped with a short grace",
        None,
        [SB, ctr(cid="c1")],
        [KillContainer("c1", "app", 2, "Stopping")],
    ),
    Row(
        "sandbox died: stop the app first",
        desired(),
        [sandbox(state=RunState.EXITED), ctr(cid="c1")],
        [KillContainer("c1", "app", 30, "SandboxChanged")],
    ),
    Row(
        "sandbox died, app stopped: new sandbox",
        desired(),
        [sandbox(state=RunState.EXITED), exited("app", 137, cid="c1")],
        [StartSandbox(1)],
    ),
    Row(
        "dead instances beyond one are removed",
        desired(),
        [SB, exited("app", 1, attempt=0, cid="a0"), exited("app", 1, attempt=1, cid="a1"), ctr(attempt=2)],
        [RemoveContainer("a0", "app")],
    ),
    Row(
        "image error: wait for its back-off",
        desired(),
        [SB],
        [Requeue(300.0)],
        memory=PodMemory(errors={"app": PendingError("ErrImageNotFound", "no image", 300.0)}),
    ),
    Row(
        "image error back-off over: try again",
        desired(),
        [SB],
        [StartContainer("app", Kind.APP, 0, 0, SBID)],
        now=301.0,
        memory=PodMemory(errors={"app": PendingError("ErrImageNotFound", "no image", 300.0)}),
    ),
    Row(
        "rejected by admission: nothing ever starts",
        desired(),
        [],
        [],
        memory=PodMemory(rejected=("OutOfmemory", "x")),
    ),
    Row(
        "already terminal in the API: never restarted",
        desired(terminal="Succeeded"),
        [SB, exited("app", 0)],
        [KillContainer(SBID, "POD", 0, "PodTerminated", False)],
    ),
    Row(
        "a container the spec no longer names is stopped",
        desired(("a",)),
        [SB, ctr("a"), ctr("gone", cid="g")],
        [KillContainer("g", "gone", 30, "NotInSpec")],
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_plan_pod(row: Row) -> None:
    assert plan_pod(row.want, row.have, row.memory, row.now, CFG, uid="u1") == row.expect


@pytest.mark.parametrize(
    ("want", "have", "phase"),
    [
        (desired(), [], "Pending"),
        (desired(init=("i",)), [SB, ctr("i", kind=Kind.INIT)], "Pending"),
        (desired(), [SB, ctr()], "Running"),
        (desired(), [SB, exited("app", 1)], "Running"),  # Always: restarting
        (desired(restart="Never"), [SB, exited("app", 0)], "Succeeded"),
        (desired(restart="Never"), [SB, exited("app", 2)], "Failed"),
        (desired(restart="OnFailure"), [SB, exited("app", 0)], "Succeeded"),
        (desired(restart="OnFailure"), [SB, exited("app", 1)], "Running"),
        (desired(("a", "b"), restart="Never"), [SB, exited("a", 0), exited("b", 1)], "Failed"),
        (desired(init=("i",), restart="Never"), [SB, exited("i", 1, kind=Kind.INIT)], "Failed"),
        (desired(terminal="Failed"), [], "Failed"),
    ],
)
def test_pod_phase(want: DesiredPod, have: list[ContainerInfo], phase: str) -> None:
    assert pod_phase(want, have, PodMemory()).phase == phase


def test_rejected_pod_phase_carries_reason() -> None:
    ph = pod_phase(desired(), [], PodMemory(rejected=("OutOfmemory", "Node didn't have enough resource")))
    assert (ph.phase, ph.reason) == ("Failed", "OutOfmemory")


def test_whole_node_plan_collects_orphans() -> None:
    orphan = exited("app", 0, cid="o1", uid="gone-uid")
    out = plan({"u1": desired()}, [SB, ctr(), orphan], {}, 200.0, CFG)
    assert out == {"gone-uid": [RemoveContainer("o1", "app"), RemoveVolumes("gone-uid")]}


def test_backoff_sequence() -> None:
    b = BackoffPolicy(initial=10, maximum=300)
    assert [b.delay(s) for s in range(1, 9)] == [0, 10, 20, 40, 80, 160, 300, 300]
