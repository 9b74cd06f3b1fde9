"""The ReplicaSet controller: keep `spec.replicas` live pods for every ReplicaSet.

    ReplicaSet informer ──┐                          ┌─► PodService.Create (owner reference set)
                          ├─► dirty sets ─► plan() ──┼─► PodService.Delete (surplus, terminal, orphans)
    Pod informer ─────────┘   ▲                      └─► ReplicaSetService.UpdateStatus, events
                              └── resync tick

It runs inside the controller process but, like the VM manager, talks to the
API only through gRPC (a `Client`), so it sees exactly what any client sees and
needs no access to etcd.

Words:
- owned: a pod whose controller owner reference names the ReplicaSet's uid.
- active: owned, not terminating (no deletion_timestamp) and not terminal
  (Succeeded/Failed). Only active pods count towards `replicas`; a pod whose
  node was lost is Failed (reason NodeLost) and terminating, so it is replaced.
- in flight: pods this process created or deleted whose effect the pod informer
  has not shown yet (Kubernetes' "expectations"). While a set has any, it is
  not scaled again: without this, a lagging cache would make every pass create
  (or delete) the same pods again.
- orphan: a pod whose controller ReplicaSet no longer exists. It is deleted
  (Kubernetes' background cascade) after the executor confirms, by a direct
  read, that the owner really is gone.

Crash safety: pod names are chosen here (`<set>-<random>`) before the create, so
a create retried after UNAVAILABLE is idempotent by name (ALREADY_EXISTS means
our first attempt landed). After a restart the informers relist and the plan
starts from what is stored: at most the in-flight creates of the crashed
process exist already and are simply counted.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import string
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge

from cowpod.api.phases import is_terminal
from cowpod.client import Client
from cowpod.clock import Clock, RealClock
from cowpod.informer import Informer
from cowpod.v1 import event_pb2, meta_pb2, pod_pb2, workload_pb2

log = logging.getLogger(__name__)

KIND = "ReplicaSet"
COMPONENT = "replicaset-controller"
DEFAULT_BURST = 100
DEFAULT_RESYNC_SECONDS = 30.0
DEFAULT_EXPECTATION_TIMEOUT = 60.0
_SUFFIX = string.ascii_lowercase + string.digits

Key = tuple[str, str]


# ---- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatePods:
    """Create `count` pods from the set's template."""

    rs: workload_pb2.ReplicaSet = field(hash=False, compare=False)
    namespace: str
    name: str
    count: int


@dataclass(frozen=True)
class DeletePod:
    namespace: str
    name: str
    uid: str
    rs_name: str
    rs_uid: str
    reason: str  # "surplus" | "terminal"


@dataclass(frozen=True)
class UpdateStatus:
    namespace: str
    name: str
    status: workload_pb2.ReplicaSetStatus = field(hash=False)


@dataclass(frozen=True)
class CollectOrphan:
    """Delete a pod whose controller ReplicaSet is gone (confirmed by a read first)."""

    namespace: str
    name: str
    uid: str
    owner_name: str
    owner_uid: str


Action = CreatePods | DeletePod | UpdateStatus | CollectOrphan


@dataclass(frozen=True)
class InFlight:
    """Creates and deletes of one set that the pod cache does not show yet."""

    creating: frozenset[str] = frozenset()  # pod names
    deleting: frozenset[str] = frozenset()  # pod uids

    @property
    def empty(self) -> bool:
        return not self.creating and not self.deleting


NOTHING_IN_FLIGHT = InFlight()


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


def is_available(pod: pod_pb2.Pod, min_ready_seconds: int, now: float) -> bool:
    c = condition(pod, "Ready")
    if c is None or c.status != "True":
        return False
    if min_ready_seconds <= 0:
        return True
    since = c.last_transition_time.seconds + c.last_transition_time.nanos / 1e9
    return bool(now - since >= min_ready_seconds)


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


def new_pod_name(rs_name: str) -> str:
    return f"{rs_name[:240]}-" + "".join(secrets.choice(_SUFFIX) for _ in range(5))


# ---- expectations (the only mutable bookkeeping; owned by one controller) -----------------------


class Expectations:
    """Per set: names created and uids deleted that the pod cache has not reflected yet.
    Entries expire after `timeout` so a lost watch event cannot wedge a set forever."""

    def __init__(self, clock: Clock, timeout: float = DEFAULT_EXPECTATION_TIMEOUT) -> None:
        self.clock = clock
        self.timeout = timeout
        self._creating: dict[str, dict[str, float]] = {}
        self._deleting: dict[str, dict[str, float]] = {}

    def expect_create(self, rs_uid: str, name: str) -> None:
        self._creating.setdefault(rs_uid, {})[name] = self.clock.monotonic() + self.timeout

    def expect_delete(self, rs_uid: str, pod_uid: str) -> None:
        self._deleting.setdefault(rs_uid, {})[pod_uid] = self.clock.monotonic() + self.timeout

    def create_failed(self, rs_uid: str, name: str) -> None:
        self._creating.get(rs_uid, {}).pop(name, None)

    def delete_failed(self, rs_uid: str, pod_uid: str) -> None:
        self._deleting.get(rs_uid, {}).pop(pod_uid, None)

    def observe(self, pod: pod_pb2.Pod, gone: bool = False) -> None:
        """The cache now shows `pod` (or its deletion)."""
        uid = owner_uid(pod)
        if not uid:
            return
        self._creating.get(uid, {}).pop(pod.metadata.name, None)
        if gone or is_terminating(pod):
            self._deleting.get(uid, {}).pop(pod.metadata.uid, None)

    def forget(self, rs_uid: str) -> None:
        self._creating.pop(rs_uid, None)
        self._deleting.pop(rs_uid, None)

    def view(self, rs_uid: str) -> InFlight:
        now = self.clock.monotonic()
        out = []
        for table in (self._creating, self._deleting):
            entries = table.get(rs_uid)
            if entries:
                for k in [k for k, t in entries.items() if t < now]:
                    del entries[k]
            out.append(frozenset(entries) if entries else frozenset())
        return InFlight(out[0], out[1])

    def pending(self) -> int:
        return sum(len(v) for v in self._creating.values()) + sum(len(v) for v in self._deleting.values())


# ---- the API the executor needs ------------------------------------------------------------------


class WorkloadAPI(Protocol):
    """What the ReplicaSet controller needs from the cluster (gRPC in production, a fake in tests).
    Errors are `grpc.RpcError`s with their codes, as a client sees them."""

    def watch_replicasets(self, opts: meta_pb2.WatchOptions) -> Any: ...

    def watch_pods(self, opts: meta_pb2.WatchOptions) -> Any: ...

    async def create_pod(self, pod: pod_pb2.Pod) -> None:
        """Create; ALREADY_EXISTS is raised as `AlreadyExists`-coded RpcError."""

    async def delete_pod(self, namespace: str, name: str) -> None: ...

    async def get_replicaset(self, namespace: str, name: str) -> workload_pb2.ReplicaSet | None: ...

    async def update_status(self, namespace: str, name: str,
                            status: workload_pb2.ReplicaSetStatus) -> None: ...

    async def event(self, namespace: str, name: str, uid: str, reason: str, message: str,
                    *, warning: bool = False) -> None: ...


def _code(err: BaseException) -> grpc.StatusCode | None:
    return err.code() if isinstance(err, grpc.RpcError) and hasattr(err, "code") else None


class GrpcWorkloadAPI:
    """`WorkloadAPI` over a `Client`; unary calls retry UNAVAILABLE with back-off."""

    def __init__(self, client: Client) -> None:
        self.c = client

    def watch_replicasets(self, opts: meta_pb2.WatchOptions) -> Any:
        return self.c.replicasets.Watch(opts)

    def watch_pods(self, opts: meta_pb2.WatchOptions) -> Any:
        return self.c.pods.Watch(opts)

    async def create_pod(self, pod: pod_pb2.Pod) -> None:
        await self.c.call(self.c.pods.Create, pod)

    async def delete_pod(self, namespace: str, name: str) -> None:
        opts = meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(namespace=namespace, name=name))
        await self.c.call(self.c.pods.Delete, opts)

    async def get_replicaset(self, namespace: str, name: str) -> workload_pb2.ReplicaSet | None:
        try:
            rs: workload_pb2.ReplicaSet = await self.c.call(
                self.c.replicasets.Get, meta_pb2.ObjectKey(namespace=namespace, name=name))
        except grpc.RpcError as err:
            if _code(err) == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return rs

    async def update_status(self, namespace: str, name: str, status: workload_pb2.ReplicaSetStatus) -> None:
        rs = workload_pb2.ReplicaSet(status=status)
        rs.metadata.namespace, rs.metadata.name = namespace, name
        await self.c.call(self.c.replicasets.UpdateStatus, rs)

    async def event(self, namespace: str, name: str, uid: str, reason: str, message: str,
                    *, warning: bool = False) -> None:
        ev = event_pb2.Event(
            involved_object=event_pb2.ObjectReference(kind=KIND, namespace=namespace, name=name, uid=uid),
            reason=reason, message=message, type="Warning" if warning else "Normal",
            source=event_pb2.EventSource(component=COMPONENT),
        )
        ev.metadata.namespace = namespace
        await self.c.call(self.c.events.Create, ev)


# ---- metrics -------------------------------------------------------------------------------------


class ReplicaSetMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry or CollectorRegistry()
        self.pods = Counter("cowpod_replicaset_pods", "Pods created/deleted by the ReplicaSet controller",
                            ["action"], registry=reg)
        self.queue_depth = Gauge("cowpod_replicaset_queue_depth", "ReplicaSets waiting to be synced",
                                 registry=reg)
        self.in_flight = Gauge("cowpod_replicaset_in_flight", "Creates/deletes not yet seen in the cache",
                               registry=reg)


# ---- executor -------------------------------------------------------------------------------------


class Executor:
    """Carries out actions; failures are logged and left to the next pass (the plan is idempotent)."""

    def __init__(self, api: WorkloadAPI, expectations: Expectations, metrics: ReplicaSetMetrics,
                 *, concurrency: int = 16, name_fn: Callable[[str], str] = new_pod_name) -> None:
        self.api = api
        self.expect = expectations
        self.metrics = metrics
        self._sem = asyncio.Semaphore(concurrency)
        self._name = name_fn

    async def execute(self, actions: Sequence[Action]) -> None:
        jobs: list[Coroutine[Any, Any, None]] = []
        for a in actions:
            if isinstance(a, CreatePods):
                for _ in range(a.count):
                    name = self._name(a.name)
                    self.expect.expect_create(a.rs.metadata.uid, name)
                    jobs.append(self._create(a.rs, name))
            elif isinstance(a, DeletePod):
                self.expect.expect_delete(a.rs_uid, a.uid)
                jobs.append(self._delete(a))
            elif isinstance(a, UpdateStatus):
                jobs.append(self._status(a))
            else:
                jobs.append(self._collect(a))

        async def guarded(job: Coroutine[Any, Any, None]) -> None:
            async with self._sem:
                try:
                    await job
                except grpc.RpcError as err:
                    log.warning("replicaset action failed (%s: %s); retried on the next pass",
                                _code(err), err.details() if hasattr(err, "details") else err)

        await asyncio.gather(*(guarded(j) for j in jobs))

    async def _create(self, rs: workload_pb2.ReplicaSet, name: str) -> None:
        meta = rs.metadata
        try:
            await self.api.create_pod(pod_from_template(rs, name))
        except grpc.RpcError as err:
            if _code(err) != grpc.StatusCode.ALREADY_EXISTS:
                self.expect.create_failed(meta.uid, name)
                if _code(err) == grpc.StatusCode.INVALID_ARGUMENT:
                    await self._event(rs, "FailedCreate", f"Error creating: {err.details()}", warning=True)
                raise
            # Our own earlier attempt landed (the name is ours and random).
        self.metrics.pods.labels("create").inc()
        await self._event(rs, "SuccessfulCreate", f"Created pod: {name}")

    async def _delete(self, a: DeletePod) -> None:
        try:
            await self.api.delete_pod(a.namespace, a.name)
        except grpc.RpcError as err:
            if _code(err) != grpc.StatusCode.NOT_FOUND:
                self.expect.delete_failed(a.rs_uid, a.uid)
                raise
        self.metrics.pods.labels("delete").inc()
        why = " (it had terminated)" if a.reason == "terminal" else ""
        await self._event_ref(a.namespace, a.rs_name, a.rs_uid, "SuccessfulDelete",
                              f"Deleted pod: {a.name}{why}")

    async def _status(self, a: UpdateStatus) -> None:
        try:
            await self.api.update_status(a.namespace, a.name, a.status)
        except grpc.RpcError as err:
            if _code(err) != grpc.StatusCode.NOT_FOUND:
                raise

    async def _collect(self, a: CollectOrphan) -> None:
        owner = await self.api.get_replicaset(a.namespace, a.owner_name)
        if owner is not None and owner.metadata.uid == a.owner_uid:
            return  # the cache was behind: the owner exists
        try:
            await self.api.delete_pod(a.namespace, a.name)
        except grpc.RpcError as err:
            if _code(err) != grpc.StatusCode.NOT_FOUND:
                raise
        self.metrics.pods.labels("collect").inc()
        log.info("deleted pod %s/%s: its ReplicaSet %s is gone", a.namespace, a.name, a.owner_name)

    async def _event(self, rs: workload_pb2.ReplicaSet, reason: str, message: str,
                     *, warning: bool = False) -> None:
        await self._event_ref(rs.metadata.namespace, rs.metadata.name, rs.metadata.uid, reason, message,
                              warning=warning)

    async def _event_ref(self, ns: str, name: str, uid: str, reason: str, message: str,
                         *, warning: bool = False) -> None:
        try:
            await self.api.event(ns, name, uid, reason, message, warning=warning)
        except grpc.RpcError as err:
            log.debug("event %s for replicaset %s/%s not recorded: %s", reason, ns, name, err)


# ---- the controller --------------------------------------------------------------------------------


class ReplicaSetController:
    """Informers feed dirty sets; one loop plans and executes. `run()` until cancelled."""

    def __init__(self, api: WorkloadAPI, clock: Clock | None = None, *,
                 resync_seconds: float = DEFAULT_RESYNC_SECONDS,
                 expectation_timeout: float = DEFAULT_EXPECTATION_TIMEOUT,
                 burst: int = DEFAULT_BURST, registry: CollectorRegistry | None = None) -> None:
        self.api = api
        self.clock: Clock = clock or RealClock()
        self.resync_seconds = resync_seconds
        self.burst = burst
        self.metrics = ReplicaSetMetrics(registry)
        self.expect = Expectations(self.clock, expectation_timeout)
        self.executor = Executor(api, self.expect, self.metrics)
        self.replicasets: Informer[workload_pb2.ReplicaSet] = Informer(
            api.watch_replicasets, handler=self._on_rs, clock=self.clock, name="replicaset-informer",
            on_synced=self._on_synced)
        self.pods: Informer[pod_pb2.Pod] = Informer(
            api.watch_pods, handler=self._on_pod, clock=self.clock, name="replicaset-pod-informer",
            on_synced=self._on_synced)
        self._by_uid: dict[str, Key] = {}
        self._owned: dict[str, dict[Key, pod_pb2.Pod]] = {}
        self._dirty: set[Key] = set()
        self._orphans_dirty = True
        self._wake = asyncio.Event()

    # -- informer handlers (cheap: bookkeeping and marking dirty only)

    async def _on_synced(self) -> None:
        self._wake.set()

    async def _on_rs(self, type_: int, rs: workload_pb2.ReplicaSet) -> None:
        key = (rs.metadata.namespace, rs.metadata.name)
        if type_ == meta_pb2.DELETED:
            self._by_uid.pop(rs.metadata.uid, None)
            self.expect.forget(rs.metadata.uid)
            self._dirty.discard(key)
            self._orphans_dirty = True
        else:
            self._by_uid[rs.metadata.uid] = key
            self._dirty.add(key)
        self._wake.set()

    async def _on_pod(self, type_: int, pod: pod_pb2.Pod) -> None:
        uid = owner_uid(pod)
        if not uid:
            return
        key = (pod.metadata.namespace, pod.metadata.name)
        gone = type_ == meta_pb2.DELETED
        if gone:
            owned = self._owned.get(uid)
            if owned is not None:
                owned.pop(key, None)
                if not owned:
                    del self._owned[uid]
        else:
            self._owned.setdefault(uid, {})[key] = pod
        self.expect.observe(pod, gone=gone)
        rs_key = self._by_uid.get(uid)
        if rs_key is not None:
            self._dirty.add(rs_key)
        elif not gone:
            self._orphans_dirty = True
        self._wake.set()

    # -- loops

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.replicasets.run(), name="replicaset-informer")
            tg.create_task(self.pods.run(), name="replicaset-pod-informer")
            tg.create_task(self._resync(), name="replicaset-resync")
            tg.create_task(self._work(), name="replicaset-worker")

    async def _resync(self) -> None:
        while True:
            await self.clock.sleep(self.resync_seconds)
            self._dirty.update(self._by_uid.values())
            self._orphans_dirty = True
            self._wake.set()

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not (self.replicasets.synced and self.pods.synced):
                continue
            await self.sync_once()

    async def sync_once(self) -> list[Action]:
        """Plan the dirty sets (and orphans) from the caches and execute. Returns the actions."""
        keys, self._dirty = self._dirty, set()
        orphans, self._orphans_dirty = self._orphans_dirty, False
        self.metrics.queue_depth.set(len(keys))
        now = self.clock.now()
        actions: list[Action] = []
        for key in sorted(keys):
            rs = self.replicasets.cache.get(key)
            if rs is None:
                continue
            uid = rs.metadata.uid
            actions.extend(plan_replicaset(rs, self._owned.get(uid, {}).values(), self.expect.view(uid), now,
                                           burst=self.burst))
        if orphans:
            live = set(self._by_uid)
            stray = [p for uid, pods in self._owned.items() if uid not in live for p in pods.values()]
            actions.extend(plan_orphans(stray, live))
        if actions:
            await self.executor.execute(actions)
        self.metrics.queue_depth.set(len(self._dirty))
        self.metrics.in_flight.set(self.expect.pending())
        return actions
