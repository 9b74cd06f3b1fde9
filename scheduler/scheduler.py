"""The scheduler process's core: informer events in, bindings out.

    pod informer ──pending──► SchedulingQueue ──pop_many──► Framework.schedule ──► assume in Cache
    (unbound)                      ▲  ▲                          │ no node                │
                                   │  └── cluster events ──┐     ▼                         ▼
    pod informer ──bound──► Cache ─┘                       │  unschedulable set +   bind queue ──► binder
    node informer ────────► Cache ─────────────────────────┘  condition + event       (BindBatch, N in flight)
                                                                                       │ failed: forget,
                                                                                       ▼ back-off
One cycle decides a batch of pods synchronously (each assumed before the
next is decided, so they never share capacity), hands the batch to a bind
worker and goes on deciding while bindings are in flight. A failed binding
is forgotten in the cache and its pod retried after back-off; a stale one
(pod changed or already bound) is dropped if the watch says so.

Status writes for pods that fit nowhere (condition PodScheduled=False and a
FailedScheduling event) go through a small coalescing writer: only the
latest message per pod, only when it changed, never on the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc

from cowpod.api.phases import is_terminal
from cowpod.api.priority import may_preempt
from cowpod.api.times import to_timestamp
from cowpod.client import Client
from cowpod.clock import Clock
from cowpod.v1 import event_pb2, meta_pb2, node_pb2, pod_pb2
from scheduler.config import Profile, SchedulerConfig
from scheduler.convert import node_info, pod_info
from scheduler.framework.cache import Cache
from scheduler.framework.events import Action, ClusterEvent, Resource
from scheduler.framework.interfaces import BindOutcome, Nomination, Plan
from scheduler.framework.queue import QueuedPod, SchedulingQueue
from scheduler.framework.runtime import Framework
from scheduler.framework.types import NodeName, PodInfo, PodUID
from scheduler.metrics import Metrics

log = logging.getLogger(__name__)

DEFAULT_SCHEDULER_NAMES = frozenset({"", "default-scheduler"})
COMPONENT = "default-scheduler"


@dataclass
class _Pending:
    qp: QueuedPod
    node: str


@dataclass(frozen=True)
class _Preemption:
    pod: PodInfo
    nomination: Nomination


class Scheduler:
    def __init__(
        self,
        cfg: SchedulerConfig,
        profile: Profile,
        *,
        client: Client | None,
        clock: Clock,
        metrics: Metrics | None = None,
        framework: Framework | None = None,
        is_leader: Callable[[], bool] = lambda: True,
    ) -> None:
        self.cfg = cfg
        self.profile = profile
        self._client = client
        self._clock = clock
        self.metrics = metrics or Metrics()
        self._is_leader = is_leader
        self.cache = Cache()
        self.framework = framework or Framework(
            profile.filters,
            profile.scores,
            post_filters=profile.post_filters,
            percentage_of_nodes_to_score=cfg.percentage_of_nodes_to_score,
        )
        events = {f.name: f.events() for f in profile.filters}
        self.queue = SchedulingQueue(
            profile.queue_sort,
            clock,
            events_by_plugin=events,
            initial_backoff=cfg.initial_backoff_s,
            max_backoff=cfg.max_backoff_s,
            max_unschedulable_s=cfg.max_unschedulable_s,
            pop_from_backoff=cfg.pop_from_backoff,
        )
        self._names = (
            DEFAULT_SCHEDULER_NAMES if cfg.scheduler_name == COMPONENT else frozenset({cfg.scheduler_name})
        )
        # Latest proto of every pending pod, for status writes and bind retries.
        self._pending_protos: dict[PodUID, pod_pb2.Pod] = {}
        self._binding: dict[PodUID, _Pending] = {}
        self._bind_q: asyncio.Queue[list[Plan]] = asyncio.Queue(maxsize=max(1, cfg.max_binds_in_flight))
        # Pods whose Unschedulable verdict is to be written: message and when it was reached.
        self._status_dirty: dict[PodUID, tuple[str, float]] = {}
        self._status_written: dict[PodUID, str] = {}
        self._status_wake = asyncio.Event()
        # Pending pods that preempted: the node they wait for (see `_with_nominated`).
        self._nominated: dict[PodUID, tuple[NodeName, PodInfo]] = {}
        self._preempt_q: asyncio.Queue[_Preemption] = asyncio.Queue()
        self.scheduled = 0

    # ---- informer handlers -------------------------------------------------------

    async def on_node(self, type_: int, node: node_pb2.Node) -> None:
        self.handle_node(type_, node)

    def handle_node(self, type_: int, node: node_pb2.Node) -> None:
        if type_ == meta_pb2.DELETED:
            if self.cache.remove_node(node.metadata.name):
                self.queue.on_event(ClusterEvent(Resource.NODE, Action.DELETE))
        else:
            change = self.cache.set_node(node_info(node))
            if change:
                self.queue.on_event(ClusterEvent(Resource.NODE, change))
        self.metrics.nodes.set(self.cache.n)

    async def on_pending_pod(self, type_: int, pod: pod_pb2.Pod) -> None:
        """From the `spec.nodeName=` stream. DELETED here may only mean the pod
        left the selector (it got bound): the cache is not touched."""
        if type_ == meta_pb2.DELETED:
            self._drop_pending(PodUID(pod.metadata.uid))
        else:
            self.handle_pod(type_, pod)

    async def on_assigned_pod(self, type_: int, pod: pod_pb2.Pod) -> None:
        """From the `spec.nodeName!=` stream: DELETED is a real deletion (or the
        pod vanished during a relist)."""
        self.handle_pod(type_, pod)

    async def on_pod(self, type_: int, pod: pod_pb2.Pod) -> None:
        """From one stream of every pod."""
        self.handle_pod(type_, pod)

    def _drop_pending(self, uid: PodUID) -> None:
        self._pending_protos.pop(uid, None)
        self._nominated.pop(uid, None)
        self._status_dirty.pop(uid, None)
        self._status_written.pop(uid, None)
        self.queue.delete(uid)

    def handle_pod(self, type_: int, pod: pod_pb2.Pod) -> None:
        uid = PodUID(pod.metadata.uid)
        if type_ == meta_pb2.DELETED:
            self._drop_pending(uid)
            if self.cache.remove_pod(uid):
                self.queue.on_event(ClusterEvent(Resource.POD, Action.DELETE))
            return
        if pod.spec.node_name:
            self._drop_pending(uid)
            if not is_terminal(pod.status.phase) and self.cache.confirm(
                uid, pod.spec.node_name
            ):
                return  # our own placement, as assumed: nothing to decode
            info = pod_info(pod)
            known = self.cache.pod(uid) is not None and not self.cache.is_assumed(uid)
            self.cache.set_pod(info)
            if info.terminal:
                self.queue.on_event(ClusterEvent(Resource.POD, Action.DELETE))
            elif not known:
                self.queue.on_event(ClusterEvent(Resource.POD, Action.ADD))
            return
        if pod.spec.scheduler_name not in self._names or pod.metadata.HasField("deletion_timestamp"):
            self._drop_pending(uid)
            return
        if is_terminal(pod.status.phase):
            self._drop_pending(uid)
            return
        self._pending_protos[uid] = pod
        if self.cache.is_assumed(uid):
            return  # we placed it; the bound version is on its way
        info = pod_info(pod)
        held = self._nominated.get(uid)
        if held is not None:  # our own nomination is newer than anything the watch shows
            self._nominated[uid] = (held[0], info)
        elif info.nominated_node and uid not in self.queue:
            # First sight (e.g. nominated before this scheduler started); later, an echo
            # of a nomination since cleared must not bring it back.
            self._nominated[uid] = (NodeName(info.nominated_node), info)
        self.queue.add(info)

    # ---- scheduling --------------------------------------------------------------

    def schedule_batch(self, batch: list[QueuedPod]) -> list[Plan]:
        """Decide every pod of `batch` (synchronously) and return the placements."""
        plans: list[Plan] = []
        m = self.metrics
        for qp in batch:
            pod = qp.pod
            if self.cache.pod(pod.uid) is not None:
                self.queue.done(pod.uid)
                continue
            t0 = time.perf_counter()
            with self._with_nominated(pod):
                res = self.framework.schedule(pod, self.cache)
                m.algorithm.observe(time.perf_counter() - t0)
                nomination = self._try_preempt(pod) if res.node is None else None
            if res.node is not None:
                self.cache.assume(pod, res.node)
                self.queue.done(pod.uid)
                self._binding[pod.uid] = _Pending(qp, res.node)
                plans.append(Plan(pod, res.node))
                m.attempts.labels("scheduled").inc()
            else:
                assert res.diagnosis is not None
                self.queue.unschedulable(qp, res.diagnosis.rejectors)
                m.attempts.labels("unschedulable").inc()
                if nomination is not None and nomination.node:
                    self._nominate(pod, nomination)
                elif nomination is not None and (
                    self._nominated.pop(pod.uid, None) is not None or pod.nominated_node
                ):
                    self._status_written.pop(pod.uid, None)  # rewrite: nominatedNodeName goes
                self._report_unschedulable(pod, res.diagnosis.message())
        self._update_depth()
        return plans

    # ---- preemption --------------------------------------------------------------

    @contextlib.contextmanager
    def _with_nominated(self, pod: PodInfo) -> Iterator[None]:
        """Count the pods nominated to a node, of at least `pod`'s priority, as if they ran
        there while `pod` is decided (Kubernetes' nominated pods in Filter): the room their
        victims free is theirs, not a lower-priority newcomer's. Synchronous, so no other
        cycle ever sees these stand-ins; they are forgotten before anything awaits."""
        held = [
            (node, other)
            for uid, (node, other) in self._nominated.items()
            if uid != pod.uid
            and other.priority >= pod.priority
            and self.cache.pod(uid) is None
            and self.cache.node(node) is not None
        ]
        for node, other in held:
            self.cache.assume(other, node)
        try:
            yield
        finally:
            for _, other in held:
                self.cache.forget(other.uid)

    def _try_preempt(self, pod: PodInfo) -> Nomination | None:
        if not self.framework.post_filters or not may_preempt(pod.preemption_policy):
            return None
        self.metrics.preemption_attempts.inc()
        held = self._nominated.get(pod.uid)
        if held is not None and held[0] != pod.nominated_node:
            pod = dataclasses.replace(pod, nominated_node=held[0])
        return self.framework.post_filter(pod, self.cache)

    def _nominate(self, pod: PodInfo, nomination: Nomination) -> None:
        """Record the decision at once (later pods of this batch see it), then hand the
        writes to `run_preemption`."""
        self._nominated[pod.uid] = (nomination.node, pod)
        for v in nomination.victims:
            self.cache.set_terminating(v.uid, True)
        if nomination.victims:
            self.metrics.preemption_victims.observe(len(nomination.victims))
        log.info(
            "preempting %s/%s on %s: victims %s",
            pod.namespace,
            pod.name,
            nomination.node,
            ", ".join(f"{v.namespace}/{v.name}" for v in nomination.victims) or "none (waiting)",
        )
        self._preempt_q.put_nowait(_Preemption(pod, nomination))

    async def run_preemption(self) -> None:
        """Commit nominations one at a time: preemption is rare, and ordering keeps a
        pod's nomination write before its victims' deletes."""
        while True:
            job = await self._preempt_q.get()
            try:
                await self.commit_preemption(job.pod, job.nomination)
            except grpc.aio.AioRpcError as err:
                log.warning("preemption by %s/%s: %s", job.pod.namespace, job.pod.name, err.details())

    async def commit_preemption(self, pod: PodInfo, nomination: Nomination) -> None:
        """status.nominatedNodeName on the preemptor, then a graceful delete (the pod's own
        grace period, guarded by the version read) and a Preempted event per victim.
        Victims it does not get to (the preemptor went, an RPC failed) are unmarked."""
        todo = list(nomination.victims)
        try:
            if self._client is None or not self._is_leader() or pod.uid not in self._pending_protos:
                return  # not ours to do, or the preemptor was bound or deleted meanwhile
            if not await self._write_nomination(pod, nomination.node):
                return
            while todo:
                v = todo[0]
                deleted = await self._delete_victim(v, nomination.node)
                todo.pop(0)
                if deleted:
                    message = f"Preempted by {pod.namespace}/{pod.name} on node {nomination.node}"
                    await self._event(v.namespace, v.name, v.uid, "Preempted", message, "Normal")
        finally:
            for v in todo:
                self.cache.set_terminating(v.uid, False)

    async def _write_nomination(self, pod: PodInfo, node: str) -> bool:
        """False if the preemptor is gone, replaced or bound (then nothing is evicted)."""
        assert self._client is not None
        c = self._client
        for _ in range(3):
            cur = await self._get_pod(pod.namespace, pod.name)
            if cur is None or cur.metadata.uid != pod.uid or cur.spec.node_name:
                return False
            cur.status.nominated_node_name = node
            try:
                await c.call(c.pods.UpdateStatus, cur, timeout=10.0)
                return True
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.ABORTED:
                    raise
        return True  # written over by others three times: still pending, evict anyway

    async def _get_pod(self, namespace: str, name: str) -> pod_pb2.Pod | None:
        assert self._client is not None
        c = self._client
        try:
            got: pod_pb2.Pod = await c.call(
                c.pods.Get, meta_pb2.ObjectKey(namespace=namespace, name=name), timeout=10.0
            )
            return got
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    async def _delete_victim(self, v: PodInfo, node: str) -> bool:
        """True once the victim is terminating because of us; False if it was gone, replaced
        (another uid), moved, or already terminating (it must not count twice). A victim
        whose delete lost three races stays and is no longer marked as leaving in the cache
        (one an RPC error leaves is unmarked by `commit_preemption`, its caller)."""
        assert self._client is not None
        c = self._client
        for _ in range(3):
            cur = await self._get_pod(v.namespace, v.name)
            if cur is None or cur.metadata.uid != v.uid or cur.spec.node_name != node:
                return False  # gone or not ours to judge: the watch says what is there
            if cur.metadata.HasField("deletion_timestamp"):
                return False  # leaving already, through someone else
            opts = meta_pb2.DeleteOptions(
                key=meta_pb2.ObjectKey(namespace=v.namespace, name=v.name),
                resource_version=cur.metadata.resource_version,
            )
            try:
                await c.call(c.pods.Delete, opts, timeout=10.0)
                return True
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.NOT_FOUND:
                    return False
                if err.code() != grpc.StatusCode.ABORTED:
                    raise
        self.cache.set_terminating(v.uid, False)
        return False

    def _update_depth(self) -> None:
        for k, v in self.queue.depth().items():
            self.metrics.pending.labels(k).set(v)

    async def run_scheduling(self) -> None:
        while True:
            batch = await self.queue.pop_many(self.cfg.batch_size)
            plans = self.schedule_batch(batch)
            if plans:
                await self._bind_q.put(plans)
            # Let informer events and bind results in between batches.
            await asyncio.sleep(0)

    async def run_binder(self) -> None:
        binder = self.profile.binder
        if binder is None:
            raise RuntimeError("no bind plugin configured")
        while True:
            plans = await self._bind_q.get()
            if not self._is_leader():
                outcomes = [BindOutcome(p, False, "NOT_LEADER", "lost leadership") for p in plans]
            else:
                outcomes = await binder.bind(plans)
            self.finish_binds(outcomes)

    def finish_binds(self, outcomes: list[BindOutcome]) -> None:
        now = self._clock.monotonic()
        freed = False
        for o in outcomes:
            uid = o.plan.pod.uid
            pending = self._binding.pop(uid, None)
            if o.ok:
                self.scheduled += 1
                self.metrics.binds.labels("ok").inc()
                if pending is not None:
                    self.metrics.e2e.observe(max(0.0, now - pending.qp.enqueued))
                continue
            self.metrics.binds.labels("failed").inc()
            self.cache.forget(uid)
            freed = True
            proto = self._pending_protos.get(uid)
            log.info(
                "bind %s/%s -> %s failed: %s %s",
                o.plan.pod.namespace,
                o.plan.pod.name,
                o.plan.node,
                o.code,
                o.message,
            )
            if proto is None or pending is None:
                continue  # deleted or bound by someone else meanwhile: nothing to retry
            qp = pending.qp
            qp.pod = pod_info(proto)
            self.queue.error(qp)
        if freed:
            self.queue.on_event(ClusterEvent(Resource.POD, Action.DELETE))

    # ---- unschedulable reporting -------------------------------------------------

    def _report_unschedulable(self, pod: PodInfo, message: str) -> None:
        if self._status_written.get(pod.uid) == message:
            return
        # Stamped with the decision's time, not the write's: the autoscaler trusts a
        # verdict only against nodes that were Ready before it was reached.
        self._status_dirty[pod.uid] = (message, self._clock.now())
        self._status_wake.set()

    async def run_status_writer(self, concurrency: int = 8) -> None:
        sem = asyncio.Semaphore(concurrency)
        async with asyncio.TaskGroup() as tg:
            while True:
                await self._status_wake.wait()
                self._status_wake.clear()
                while self._status_dirty:
                    uid, (message, at) = next(iter(self._status_dirty.items()))
                    del self._status_dirty[uid]
                    proto = self._pending_protos.get(uid)
                    if proto is None:
                        continue
                    await sem.acquire()
                    tg.create_task(self._write_status(proto, message, at, sem), name=f"status-{uid}")

    async def _write_status(
        self, proto: pod_pb2.Pod, message: str, at: float, sem: asyncio.Semaphore
    ) -> None:
        try:
            await self.write_unschedulable(proto, message, at)
            self._status_written[PodUID(proto.metadata.uid)] = message
        except grpc.aio.AioRpcError as err:
            log.info("status for %s/%s: %s", proto.metadata.namespace, proto.metadata.name, err.details())
        finally:
            sem.release()

    async def write_unschedulable(self, proto: pod_pb2.Pod, message: str, at: float | None = None) -> None:
        """PodScheduled=False/Unschedulable on the pod (as of `at`, the decision), and a
        FailedScheduling event."""
        if self._client is None:
            return
        now = to_timestamp(self._clock.now() if at is None else at)
        update = pod_pb2.Pod()
        update.metadata.CopyFrom(proto.metadata)
        update.status.CopyFrom(proto.status)
        if not update.status.phase:
            update.status.phase = "Pending"
        conds = [c for c in update.status.conditions if c.type != "PodScheduled"]
        old = next((c for c in proto.status.conditions if c.type == "PodScheduled"), None)
        cond = meta_pb2.Condition(
            type="PodScheduled", status="False", reason="Unschedulable", message=message, last_probe_time=now
        )
        if old is not None and old.status == "False":
            cond.last_transition_time.CopyFrom(old.last_transition_time)
        else:
            cond.last_transition_time.CopyFrom(now)
        del update.status.conditions[:]
        update.status.conditions.extend([*conds, cond])
        held = self._nominated.get(PodUID(proto.metadata.uid))
        # Never undo the nomination `commit_preemption` writes; clear one that was dropped.
        update.status.nominated_node_name = held[0] if held is not None else ""
        await self._client.call(self._client.pods.UpdateStatus, update, timeout=10.0)
        m = proto.metadata
        await self._event(m.namespace, m.name, m.uid, "FailedScheduling", message, "Warning", at)

    async def _event(
        self,
        namespace: str,
        name: str,
        uid: str,
        reason: str,
        message: str,
        type_: str,
        at: float | None = None,
    ) -> None:
        """An Event about a pod, from the scheduler (Kubernetes' reasons and types)."""
        if self._client is None:
            return
        now = to_timestamp(self._clock.now() if at is None else at)
        event = event_pb2.Event(
            api_version="v1",
            kind="Event",
            metadata=meta_pb2.ObjectMeta(namespace=namespace or "default", generate_name=f"{name}."),
            involved_object=event_pb2.ObjectReference(kind="Pod", namespace=namespace, name=name, uid=uid),
            reason=reason,
            message=message,
            type=type_,
            source=event_pb2.EventSource(component=COMPONENT),
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        await self._client.call(self._client.events.Create, event, timeout=10.0)
