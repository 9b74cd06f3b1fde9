"""Pod status from facts: the Docker containers of a pod, the agent's memory
and the previous status (for transition times). Pure; the status manager
sends what this returns.

Container states follow Kubernetes: `waiting` (ContainerCreating,
PodInitializing, CrashLoopBackOff, ErrImageNotFound, ImagePullBackOff...),
`running`, `terminated` (Completed, Error, OOMKilled, ContainerCannotRun);
`lastState` holds the previous instance's termination and `restartCount`
is the instance's attempt number from its Docker label.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from agent.config import BackoffPolicy
from agent.desired import DesiredPod
from agent.plan import (
    PodMemory,
    inits_done,
    instances,
    pod_phase,
    restart_due,
    wants_restart,
)
from agent.runtime import ContainerInfo, Kind, RunState
from cowpod.api.phases import is_terminal
from cowpod.api.times import to_timestamp
from cowpod.v1 import meta_pb2, pod_pb2


def ts(t: float | None) -> Timestamp:
    """An unset Timestamp for no time (0 or None): a container that never started has none."""
    return to_timestamp(t) if t else Timestamp()


def terminated_reason(c: ContainerInfo) -> str:
    if c.oom_killed:
        return "OOMKilled"
    if c.state == RunState.CREATED:
        return "ContainerCannotRun"
    return "Completed" if c.exit_code == 0 else "Error"


def terminated(c: ContainerInfo) -> pod_pb2.ContainerState:
    return pod_pb2.ContainerState(
        terminated=pod_pb2.ContainerStateTerminated(
            exit_code=c.exit_code,
            signal=c.exit_code - 128 if c.exit_code > 128 else 0,
            reason=terminated_reason(c),
            message=c.error,
            started_at=ts(c.started_at),
            finished_at=ts(c.finished_at or c.created_at),
            container_id=f"docker://{c.id}",
        )
    )


def _waiting(reason: str, message: str = "") -> pod_pb2.ContainerState:
    return pod_pb2.ContainerState(waiting=pod_pb2.ContainerStateWaiting(reason=reason, message=message))


def container_status(
    spec: pod_pb2.Container,
    kind: Kind,
    desired: DesiredPod,
    containers: Sequence[ContainerInfo],
    memory: PodMemory,
    now: float,
    backoff: BackoffPolicy,
    *,
    default_waiting: str,
    terminal: bool,
) -> pod_pb2.ContainerStatus:
    inst = instances(containers, spec.name, kind)
    last = inst[-1] if inst else None
    prev = inst[-2] if len(inst) > 1 else None
    st = pod_pb2.ContainerStatus(name=spec.name, image=spec.image)
    err = memory.errors.get(spec.name)
    if last is None:
        if err is not None:
            st.state.CopyFrom(_waiting(err.reason, err.message))
        else:
            st.state.CopyFrom(_waiting(default_waiting))
        return st
    st.restart_count = last.attempt
    st.container_id = f"docker://{last.id}"
    st.image_id = last.image_id
    if last.running:
        st.state.CopyFrom(
            pod_pb2.ContainerState(running=pod_pb2.ContainerStateRunning(started_at=ts(last.started_at)))
        )
        has_startup = spec.HasField("startup_probe")
        st.started = memory.started.get(last.id, not has_startup)
        has_readiness = spec.HasField("readiness_probe")
        st.ready = kind == Kind.APP and st.started and memory.ready.get(last.id, not has_readiness)
        if prev is not None:
            st.last_state.CopyFrom(terminated(prev))
        return st
    restarting = (
        not terminal
        and not desired.deleting
        and wants_restart(last, desired.restart_policy)
        and (kind == Kind.APP or not last.succeeded)
    )
    if restarting:
        st.last_state.CopyFrom(terminated(last))
        streak, due = restart_due(last, backoff)
        if err is not None:
            st.state.CopyFrom(_waiting(err.reason, err.message))
        elif now < due:
            delay = backoff.delay(streak)
            st.state.CopyFrom(
                _waiting(
                    "CrashLoopBackOff",
                    f"back-off {delay:g}s restarting failed container={spec.name} pod={desired.name}",
                )
            )
        else:
            st.state.CopyFrom(_waiting("ContainerCreating"))
        return st
    st.state.CopyFrom(terminated(last))
    if prev is not None:
        st.last_state.CopyFrom(terminated(prev))
    return st


def _condition(
    type_: str, ok: bool, previous: pod_pb2.PodStatus | None, now: float, reason: str = ""
) -> meta_pb2.Condition:
    status = "True" if ok else "False"
    c = meta_pb2.Condition(type=type_, status=status, reason=reason)
    old = None
    if previous is not None:
        old = next((x for x in previous.conditions if x.type == type_), None)
    if old is not None and old.status == status and old.HasField("last_transition_time"):
        c.last_transition_time.CopyFrom(old.last_transition_time)
    else:
        c.last_transition_time.CopyFrom(ts(now))
    return c


def build_status(
    pod: pod_pb2.Pod,
    desired: DesiredPod,
    containers: Sequence[ContainerInfo],
    memory: PodMemory,
    now: float,
    backoff: BackoffPolicy,
    *,
    pod_ip: str,
    host_ip: str,
    previous: pod_pb2.PodStatus | None,
) -> pod_pb2.PodStatus:
    ph = pod_phase(desired, containers, memory)
    terminal = is_terminal(ph.phase)
    out = pod_pb2.PodStatus(phase=ph.phase, reason=ph.reason, message=ph.message, host_ip=host_ip)
    if previous is not None and previous.HasField("start_time"):
        out.start_time.CopyFrom(previous.start_time)
    else:
        out.start_time.CopyFrom(ts(now))
    if previous is not None:
        out.qos_class = previous.qos_class
        out.nominated_node_name = previous.nominated_node_name
    if memory.rejected is not None:
        out.conditions.append(_condition("PodScheduled", True, previous, now))
        return out
    sandbox_running = any(c.kind == Kind.SANDBOX and c.running for c in containers)
    if pod_ip and (sandbox_running or any(c.kind != Kind.SANDBOX for c in containers)):
        out.pod_ip = pod_ip
    initialized = inits_done(desired, containers)
    for c in pod.spec.init_containers:
        out.init_container_statuses.append(
            container_status(
                c,
                Kind.INIT,
                desired,
                containers,
                memory,
                now,
                backoff,
                default_waiting="PodInitializing",
                terminal=terminal,
            )
        )
    for c in pod.spec.containers:
        out.container_statuses.append(
            container_status(
                c,
                Kind.APP,
                desired,
                containers,
                memory,
                now,
                backoff,
                default_waiting="ContainerCreating" if initialized else "PodInitializing",
                terminal=terminal,
            )
        )
    all_ready = bool(out.container_statuses) and all(s.ready for s in out.container_statuses)
    ready_reason = "" if all_ready else ("PodCompleted" if terminal else "ContainersNotReady")
    out.conditions.append(_condition("PodScheduled", True, previous, now))
    out.conditions.append(
        _condition(
            "Initialized", initialized, previous, now, "" if initialized else "ContainersNotInitialized"
        )
    )
    out.conditions.append(_condition("ContainersReady", all_ready, previous, now, ready_reason))
    out.conditions.append(_condition("Ready", all_ready, previous, now, ready_reason))
    return out


def same_status(a: pod_pb2.PodStatus, b: pod_pb2.PodStatus) -> bool:
    """Byte-equal. Builders keep transition and start times from the previous
    status, so an unchanged pod yields an equal status and no write."""
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)
