"""The agent's brain, with no I/O: what should happen to one pod now.

    plan_pod(desired, containers, memory, now, config) -> [Action, ...]

`desired` is the pod from the API (None once it is gone), `containers` what
Docker reports for that pod's UID (every instance, dead or alive), `memory`
the little the agent keeps in RAM (probe verdicts, image errors, admission),
`now` a wall-clock time (Docker's timestamps are wall clock). The executor
carries the actions out and the worker plans again, until only `Requeue`
(or nothing) is left. `plan` is the same over a whole node, for tests and
for garbage collection of pods that no longer exist.

Rules, in the order they bind (kubelet's, simplified):
1. Pod gone or deleting: stop app/init containers (gracefully, preStop),
   then remove every container and volume, then finalize (if it exists).
2. Pod terminal (Succeeded/Failed, or rejected): stop what still runs,
   start nothing.
3. Sandbox first: no running sandbox -> stop the pod's containers, start a
   new sandbox. A pod without one (a single container on a VM's network,
   see `desired.needs_sandbox`) skips this; one that already has a sandbox
   (an older agent made it) keeps the sandbox model for its lifetime.
4. Init containers one at a time, in order, each to success.
5. App containers: start the missing; restart the dead per restart policy
   after crash back-off; replace a running one whose spec changed or that
   failed its liveness/startup probe.
6. Garbage: old sandboxes and dead instances beyond a small history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.config import BackoffPolicy
from agent.desired import DesiredPod, Want
from agent.runtime import ContainerInfo, Kind, RunState
from cowpod.api import phases

# A pod that vanished from the API was force-deleted (or its node record
# wiped): stop its containers promptly, like kubelet's minimum grace.
ORPHAN_GRACE = 2

# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class StartSandbox:
    attempt: int


@dataclass(frozen=True)
class StartContainer:
    name: str
    kind: Kind
    attempt: int
    streak: int
    sandbox_id: str  # "" for a pod without a sandbox: it joins the VM directly


@dataclass(frozen=True)
class KillContainer:
    id: str
    name: str
    grace: int
    reason: str  # why, for the Killing event
    pre_stop: bool = True


@dataclass(frozen=True)
class RemoveContainer:
    id: str
    name: str


@dataclass(frozen=True)
class RemoveVolumes:
    pod_uid: str


@dataclass(frozen=True)
class Finalize:
    """Ask the controller to drop the pod object: its containers are gone."""


@dataclass(frozen=True)
class Requeue:
    """Nothing to do until `at` (a back-off ends)."""

    at: float


Action = StartSandbox | StartContainer | KillContainer | RemoveContainer | RemoveVolumes | Finalize | Requeue


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class PendingError:
    """A start that failed before the container ran (image, config)."""

    reason: str  # ErrImageNotFound | ImagePullBackOff | CreateContainerError ...
    message: str
    retry_at: float
    streak: int = 1


@dataclass
class PodMemory:
    """What the agent knows about a pod beyond Docker's labels; lost on restart
    and harmless to lose (probes re-run, errors recur)."""

    errors: dict[str, PendingError] = field(default_factory=dict)
    # container id -> message, for containers whose liveness/startup probe failed
    unhealthy: dict[str, str] = field(default_factory=dict)
    ready: dict[str, bool] = field(default_factory=dict)
    started: dict[str, bool] = field(default_factory=dict)
    rejected: tuple[str, str] | None = None


@dataclass(frozen=True)
class PlanConfig:
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    keep_dead: int = 1


# ---------------------------------------------------------------- helpers

DEADLINE_EXCEEDED = "DeadlineExceeded"


def deadline_exceeded(desired: DesiredPod, now: float) -> tuple[str, str] | None:
    """(reason, message) once a pod outlived spec.activeDeadlineSeconds: the worker records it
    as the pod's rejection, so its containers stop and it fails, as kubelet does."""
    if desired.active_deadline is None or now < desired.active_deadline or desired.terminal_phase:
        return None
    return DEADLINE_EXCEEDED, "Pod was active on the node longer than the specified deadline"



def instances(containers: Iterable[ContainerInfo], name: str, kind: Kind) -> list[ContainerInfo]:
    """Every instance of one container, oldest attempt first."""
    return sorted(
        (c for c in containers if c.name == name and c.kind == kind),
        key=lambda c: (c.attempt, c.created_at),
    )


def latest(containers: Iterable[ContainerInfo], name: str, kind: Kind) -> ContainerInfo | None:
    inst = instances(containers, name, kind)
    return inst[-1] if inst else None


def end_time(c: ContainerInfo) -> float:
    return c.finished_at or c.started_at or c.created_at


def next_streak(c: ContainerInfo, policy: BackoffPolicy) -> int:
    """The streak of the restart after `c` died: a long, healthy run resets it."""
    ran = (c.finished_at - c.started_at) if (c.finished_at and c.started_at) else 0.0
    return 1 if ran >= policy.reset_after else c.streak + 1


def restart_due(c: ContainerInfo, policy: BackoffPolicy) -> tuple[int, float]:
    streak = next_streak(c, policy)
    return streak, end_time(c) + policy.delay(streak)


def wants_restart(c: ContainerInfo, restart_policy: str) -> bool:
    if restart_policy == "Never":
        return False
    if restart_policy == "OnFailure":
        return not c.succeeded
    return True


def inits_done(desired: DesiredPod, containers: Sequence[ContainerInfo]) -> bool:
    if any(c.kind == Kind.APP for c in containers):
        return True
    for w in desired.init:
        last = latest(containers, w.name, Kind.INIT)
        if last is None or not last.succeeded:
            return False
    return True


def init_failed(desired: DesiredPod, containers: Sequence[ContainerInfo]) -> ContainerInfo | None:
    """The init container that failed for good (restartPolicy Never), if any."""
    if desired.restart_policy != "Never" or inits_done(desired, containers):
        return None
    for w in desired.init:
        last = latest(containers, w.name, Kind.INIT)
        if last is not None and last.dead and not last.succeeded:
            return last
    return None


@dataclass(frozen=True)
class Phase:
    phase: str
    reason: str = ""
    message: str = ""


def pod_phase(desired: DesiredPod, containers: Sequence[ContainerInfo], memory: PodMemory) -> Phase:
    """Kubelet's getPhase over our facts."""
    if memory.rejected is not None:
        return Phase("Failed", *memory.rejected)
    if desired.terminal_phase:
        return Phase(desired.terminal_phase)
    if init_failed(desired, containers) is not None:
        return Phase("Failed", "", "an init container failed")
    if not inits_done(desired, containers):
        return Phase("Pending")
    waiting = running = stopped = succeeded = 0
    for w in desired.apps:
        last = latest(containers, w.name, Kind.APP)
        if last is None:
            waiting += 1
        elif last.running:
            running += 1
        else:
            stopped += 1
            if last.succeeded:
                succeeded += 1
    if waiting:
        return Phase("Pending")
    if running:
        return Phase("Running")
    if not desired.apps:
        return Phase("Succeeded")
    if desired.restart_policy == "Always":
        return Phase("Running")
    if stopped == succeeded:
        return Phase("Succeeded")
    if desired.restart_policy == "Never":
        return Phase("Failed")
    return Phase("Running")  # OnFailure: the failed ones restart


def is_terminal(desired: DesiredPod, containers: Sequence[ContainerInfo], memory: PodMemory) -> bool:
    return phases.is_terminal(pod_phase(desired, containers, memory).phase)


# ---------------------------------------------------------------- the plan


def _teardown(desired: DesiredPod | None, uid: str, containers: Sequence[ContainerInfo]) -> list[Action]:
    workers = [c for c in containers if c.running and c.kind != Kind.SANDBOX]
    if workers:
        grace = desired.grace_seconds if desired is not None else None
        return [
            KillContainer(
                c.id, c.name, min(c.grace_seconds, ORPHAN_GRACE) if grace is None else grace, "Stopping"
            )
            for c in workers
        ]
    out: list[Action] = [RemoveContainer(c.id, c.name) for c in containers]
    out.append(RemoveVolumes(uid))
    if desired is not None:
        out.append(Finalize())
    return out


def _garbage(desired: DesiredPod, containers: Sequence[ContainerInfo], keep_dead: int) -> list[Action]:
    out: list[Action] = []
    wanted = {(w.name, w.kind) for w in (*desired.init, *desired.apps)}
    sandboxes = sorted(
        (c for c in containers if c.kind == Kind.SANDBOX), key=lambda c: (c.attempt, c.created_at)
    )
    out += [RemoveContainer(c.id, c.name) for c in sandboxes[:-1] if c.dead]
    names = {(c.name, c.kind) for c in containers if c.kind != Kind.SANDBOX}
    for name, kind in sorted(names):
        inst = instances(containers, name, kind)
        if (name, kind) not in wanted:
            out += [RemoveContainer(c.id, c.name) for c in inst if c.dead]
            continue
        newest = inst[-1]
        dead = sorted((c for c in inst if c.dead and c is not newest), key=lambda c: -c.attempt)
        budget = keep_dead - (1 if newest.dead else 0)
        out += [RemoveContainer(c.id, c.name) for c in dead[max(budget, 0) :]]
    return out


def _start_or_wait(
    w: Want,
    last: ContainerInfo | None,
    memory: PodMemory,
    now: float,
    cfg: PlanConfig,
    sandbox_id: str,
) -> Action | None:
    """Start instance 0, or the next instance once its back-off is over."""
    err = memory.errors.get(w.name)
    if err is not None and now < err.retry_at:
        return Requeue(err.retry_at)
    if last is None:
        return StartContainer(w.name, w.kind, 0, 0, sandbox_id)
    streak, due = restart_due(last, cfg.backoff)
    if now < due:
        return Requeue(due)
    return StartContainer(w.name, w.kind, last.attempt + 1, streak, sandbox_id)


def plan_pod(
    desired: DesiredPod | None,
    containers: Sequence[ContainerInfo],
    memory: PodMemory,
    now: float,
    cfg: PlanConfig,
    *,
    uid: str = "",
) -> list[Action]:
    uid = desired.uid if desired is not None else uid
    if desired is None or desired.deleting:
        return _teardown(desired, uid, containers)

    out: list[Action] = []
    # Terminal, rejected at admission (nothing runs) or evicted later (what runs stops).
    if is_terminal(desired, containers, memory):
        workers = [c for c in containers if c.running and c.kind != Kind.SANDBOX]
        out += [KillContainer(c.id, c.name, desired.grace_seconds, "PodTerminated") for c in workers]
        if not workers:
            out += [
                KillContainer(c.id, c.name, 0, "PodTerminated", False)
                for c in containers
                if c.running and c.kind == Kind.SANDBOX
            ]
        return out + _garbage(desired, containers, cfg.keep_dead)

    sandboxes = sorted(
        (c for c in containers if c.kind == Kind.SANDBOX), key=lambda c: (c.attempt, c.created_at)
    )
    sandbox = sandboxes[-1] if sandboxes else None
    if sandbox is None and not desired.sandbox:
        sandbox_id = ""
    elif sandbox is None or not sandbox.running:
        workers = [c for c in containers if c.running and c.kind != Kind.SANDBOX]
        if workers:
            return [KillContainer(c.id, c.name, desired.grace_seconds, "SandboxChanged") for c in workers]
        err = memory.errors.get("")
        if err is not None and now < err.retry_at:
            return [Requeue(err.retry_at)]
        return [
            StartSandbox(sandbox.attempt + 1 if sandbox else 0),
            *_garbage(desired, containers, cfg.keep_dead),
        ]
    else:
        sandbox_id = sandbox.id

    # Containers running that the spec no longer names.
    known = {(w.name, w.kind) for w in (*desired.init, *desired.apps)}
    out += [
        KillContainer(c.id, c.name, desired.grace_seconds, "NotInSpec")
        for c in containers
        if c.running and c.kind != Kind.SANDBOX and (c.name, c.kind) not in known
    ]

    if not inits_done(desired, containers):
        for w in desired.init:
            last = latest(containers, w.name, Kind.INIT)
            if last is not None and last.succeeded:
                continue
            if last is not None and last.running:
                break
            a = _start_or_wait(w, last, memory, now, cfg, sandbox_id)
            if a is not None:
                out.append(a)
            break
        return out + _garbage(desired, containers, cfg.keep_dead)

    if desired.active_deadline is not None:
        out.append(Requeue(desired.active_deadline))  # wake to enforce it
    for w in desired.apps:
        last = latest(containers, w.name, Kind.APP)
        if last is not None and last.running:
            if last.spec_hash and last.spec_hash != w.spec_hash:
                out.append(KillContainer(last.id, w.name, desired.grace_seconds, "SpecChanged"))
            elif last.id in memory.unhealthy:
                out.append(KillContainer(last.id, w.name, desired.grace_seconds, "Unhealthy"))
            continue
        if last is not None and not wants_restart(last, desired.restart_policy):
            continue
        a = _start_or_wait(w, last, memory, now, cfg, sandbox_id)
        if a is not None:
            out.append(a)
    return out + _garbage(desired, containers, cfg.keep_dead)


def plan(
    desired: Mapping[str, DesiredPod],
    containers: Sequence[ContainerInfo],
    memories: Mapping[str, PodMemory],
    now: float,
    cfg: PlanConfig,
) -> dict[str, list[Action]]:
    """The plan for a whole node, by pod UID: every desired pod, and every
    pod UID that Docker still has containers for but the API no longer has."""
    by_uid: dict[str, list[ContainerInfo]] = {}
    for c in containers:
        by_uid.setdefault(c.pod_uid, []).append(c)
    out: dict[str, list[Action]] = {}
    for uid in sorted(set(desired) | set(by_uid)):
        mem = memories.get(uid) or PodMemory()
        actions = plan_pod(desired.get(uid), by_uid.get(uid, []), mem, now, cfg, uid=uid)
        if actions:
            out[uid] = actions
    return out


def first_requeue(actions: Sequence[Action]) -> float | None:
    times = [a.at for a in actions if isinstance(a, Requeue)]
    return min(times) if times else None


__all__ = [
    "Action",
    "Finalize",
    "KillContainer",
    "PendingError",
    "Phase",
    "PlanConfig",
    "PodMemory",
    "RemoveContainer",
    "RemoveVolumes",
    "Requeue",
    "RunState",
    "StartContainer",
    "StartSandbox",
    "first_requeue",
    "plan",
    "plan_pod",
    "pod_phase",
]
