"""The ReplicaSet controller's pure rules: which pods a set owns and counts, what to
create or delete, its status, and the orphans of deleted sets. No I/O, no clock:
`now` and the in-flight creates/deletes are parameters (see `replicaset.py`).

A pod Ready for less than `minReadySeconds` turns available with no event to say so;
`plan_dirty` asks the driver to look at its set again at that moment (`Requeue`), as
Kubernetes' ReplicaSet controller requeues the set after minReadySeconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass

from controller.replicaset_actions import (
    NOTHING_IN_FLIGHT,
    Action,
    CollectOrphan,
    CreatePods,
    DeletePod,
    InFlight,
    UpdateStatus,
)
from cowpod.api.phases import is_terminal
from cowpod.reconcile import Dirty, Requeue
from cowpod.v1 import meta_pb2, pod_pb2, workload_pb2

KIND = "ReplicaSet"
DEFAULT_BURST = 100

Key = tuple[str, str]
# The key of "pods whose ReplicaSet is gone" (a set's name is never empty).
ORPHANS: Key = ("", "")


# ---- pure helpers -------------------------------------------------------------------------------


def controller_ref(pod: pod_pb2.Pod) -> meta_pb2.OwnerReference | None:
    for ref in pod.metadata.owner_references:
        if ref.controller:
            return ref
    return None


def owner_uid(pod: pod_pb2.Pod) -> str:
    """The uid of the ReplicaSet that controls `pod`, or ""."""
    ref = controller_ref(pod)
    return ref.uid if ref is not None and ref.kind == KIND else ""


def is_terminating(pod: pod_pb2.Pod) -> bool:
    return pod.metadata.HasField("deletion_timestamp")


def is_active(pod: pod_pb2.Pod) -> bool:
    return not is_terminating(pod) and not is_terminal(pod.status.phase)


def condition(pod: pod_pb2.Pod, type_: str) -> meta_pb2.Condition | None:
    for c in pod.status.conditions:
        if c.type == type_:
            return c
    return None


def is_ready(pod: pod_pb2.Pod) -> bool:
    c = condition(pod, "Ready")
    return bool(c is not None and c.status == "True")


def available_from(pod: pod_pb2.Pod, min_ready_seconds: int) -> float | None:
    """When a Ready pod counts as available (Ready for `min_ready_seconds`); None if not Ready."""
    c = condition(pod, "Ready")
    if c is None or c.status != "True":
        return None
    if min_ready_seconds <= 0:
        return 0.0
    since = c.last_transition_time.seconds + c.last_transition_time.nanos / 1e9
    return since + min_ready_seconds


def is_available(pod: pod_pb2.Pod, min_ready_seconds: int, now: float) -> bool:
    at = available_from(pod, min_ready_seconds)
    return at is not None and now >= at


def next_available_in(pods: Iterable[pod_pb2.Pod], min_ready_seconds: int, now: float) -> float | None:
    """Seconds until the next of these Ready pods turns available, None if none is waiting to:
    when the set's `availableReplicas` changes next with no event (a `Requeue`)."""
    waits = [at - now for p in pods if (at := available_from(p, min_ready_seconds)) is not None and at > now]
    return min(waits, default=None)


_PHASE_RANK = {"Pending": 0, "Unknown": 1, "": 1, "Running": 2}


def deletion_rank(pod: pod_pb2.Pod) -> tuple[int, int, int, int, float]:
    """Sort key: the pods to give up first come first (kubelet-cheap ones before working ones):
    unscheduled < scheduled; Pending < Unknown < Running; not ready < ready; more restarts
    first; newer first."""
    restarts = sum(cs.restart_count for cs in pod.status.container_statuses)
    created = pod.metadata.creation_timestamp.seconds + pod.metadata.creation_timestamp.nanos / 1e9
    return (
        1 if pod.spec.node_name else 0,
        _PHASE_RANK.get(pod.status.phase, 1),
        1 if is_ready(pod) else 0,
        -restarts,
        -created,
    )


def compute_status(rs: workload_pb2.ReplicaSet, active: Sequence[pod_pb2.Pod],
                   now: float) -> workload_pb2.ReplicaSetStatus:
    tmpl_labels = rs.spec.template.metadata.labels
    st = workload_pb2.ReplicaSetStatus(
        replicas=len(active),
        fully_labeled_replicas=sum(
            1 for p in active if all(p.metadata.labels.get(k) == v for k, v in tmpl_labels.items())
        ),
        ready_replicas=sum(1 for p in active if is_ready(p)),
        available_replicas=sum(1 for p in active if is_available(p, rs.spec.min_ready_seconds, now)),
        observed_generation=rs.metadata.generation,
    )
    st.conditions.extend(rs.status.conditions)
    return st


# ---- the planner --------------------------------------------------------------------------------


def plan_replicaset(rs: workload_pb2.ReplicaSet, owned: Iterable[pod_pb2.Pod], in_flight: InFlight,
                    now: float, *, burst: int = DEFAULT_BURST) -> list[Action]:
    """Pure: what to do for one set, given the pods it owns (from the cache)."""
    meta = rs.metadata
    owned = list(owned)
    actions: list[Action] = []
    active = [p for p in owned if is_active(p) and p.metadata.uid not in in_flight.deleting]
    # A terminal pod (e.g. rejected by its node) is replaced and its object removed, so
    # such pods do not pile up; a terminating one is already going.
    for p in owned:
        terminal = is_terminal(p.status.phase)
        if terminal and not is_terminating(p) and p.metadata.uid not in in_flight.deleting:
            actions.append(DeletePod(meta.namespace, p.metadata.name, p.metadata.uid, meta.name, meta.uid,
                                     "terminal"))
    seen_names = {p.metadata.name for p in owned}
    unseen_creates = in_flight.creating - seen_names
    if not unseen_creates and not in_flight.deleting:
        want = rs.spec.replicas
        diff = want - len(active)
        if diff > 0:
            actions.append(CreatePods(rs, meta.namespace, meta.name, min(diff, burst)))
        elif diff < 0:
            for p in sorted(active, key=deletion_rank)[: -diff]:
                actions.append(DeletePod(meta.namespace, p.metadata.name, p.metadata.uid, meta.name,
                                         meta.uid, "surplus"))
    status = compute_status(rs, active, now)
    if status != rs.status:
        actions.append(UpdateStatus(meta.namespace, meta.name, status))
    return actions


def plan_orphans(pods: Iterable[pod_pb2.Pod], live_rs_uids: Set[str]) -> list[Action]:
    """Pure: pods controlled by a ReplicaSet uid that no longer exists."""
    out: list[Action] = []
    for p in pods:
        ref = controller_ref(p)
        if ref is None or ref.kind != KIND or ref.uid in live_rs_uids or is_terminating(p):
            continue
        out.append(CollectOrphan(p.metadata.namespace, p.metadata.name, p.metadata.uid, ref.name, ref.uid))
    return out


def plan(replicasets: Sequence[workload_pb2.ReplicaSet], pods: Sequence[pod_pb2.Pod],
         in_flight: Mapping[str, InFlight], now: float, *, burst: int = DEFAULT_BURST) -> list[Action]:
    """Pure, whole-cluster form (tests and a full resync): every set, then the orphans."""
    by_owner: dict[str, list[pod_pb2.Pod]] = {}
    for p in pods:
        uid = owner_uid(p)
        if uid:
            by_owner.setdefault(uid, []).append(p)
    actions: list[Action] = []
    for rs in replicasets:
        actions.extend(plan_replicaset(rs, by_owner.get(rs.metadata.uid, ()),
                                       in_flight.get(rs.metadata.uid, NOTHING_IN_FLIGHT), now, burst=burst))
    actions.extend(plan_orphans(pods, {rs.metadata.uid for rs in replicasets}))
    return actions


def pod_from_template(rs: workload_pb2.ReplicaSet, name: str) -> pod_pb2.Pod:
    tmpl = rs.spec.template
    pod = pod_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name = name
    pod.metadata.namespace = rs.metadata.namespace
    pod.metadata.labels.update(tmpl.metadata.labels)
    pod.metadata.annotations.update(tmpl.metadata.annotations)
    pod.metadata.owner_references.add(kind=KIND, name=rs.metadata.name, uid=rs.metadata.uid, controller=True)
    pod.spec.CopyFrom(tmpl.spec)
    return pod


@dataclass(frozen=True)
class Observed:
    """What one pass plans from: the caches (read only) and the creates/deletes in flight."""

    sets: Mapping[Key, workload_pb2.ReplicaSet]
    owned: Mapping[str, Mapping[Key, pod_pb2.Pod]]  # ReplicaSet uid -> its pods
    in_flight: Mapping[str, InFlight]  # ReplicaSet uid -> not yet in the cache
    now: float


def plan_dirty(state: Observed, dirty: Dirty[Key], *,
               burst: int = DEFAULT_BURST) -> dict[Key, list[Action | Requeue]]:
    """Pure: the actions of each dirty set (and of ORPHANS), from a pass's observed state, and a
    `Requeue` for a set with a pod still short of `minReadySeconds`."""
    keys = [*sorted(state.sets), ORPHANS] if dirty.everything else sorted(dirty.keys)
    out: dict[Key, list[Action | Requeue]] = {}
    for key in keys:
        if key == ORPHANS:
            live = {rs.metadata.uid for rs in state.sets.values()}
            stray = [p for uid, pods in state.owned.items() if uid not in live for p in pods.values()]
            out[key] = [*plan_orphans(stray, live)]
            continue
        rs = state.sets.get(key)
        if rs is not None:
            uid = rs.metadata.uid
            owned = state.owned.get(uid, {}).values()
            in_flight = state.in_flight.get(uid, NOTHING_IN_FLIGHT)
            acts: list[Action | Requeue] = [*plan_replicaset(rs, owned, in_flight, state.now, burst=burst)]
            wait = next_available_in((p for p in owned if is_active(p)), rs.spec.min_ready_seconds, state.now)
            if wait is not None:
                acts.append(Requeue(wait))
            out[key] = acts
    return out
