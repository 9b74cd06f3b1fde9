"""Carries out the ReplicaSet planner's actions through the API, and keeps the one piece
of mutable bookkeeping the planner depends on (expectations: what this process created
or deleted that the pod cache does not show yet)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import string
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge

from controller.replicaset_actions import (
    Action,
    CollectOrphan,
    CreatePods,
    DeletePod,
    InFlight,
    UpdateStatus,
)
from controller.replicaset_plan import KIND, is_terminating, owner_uid, pod_from_template
from cowpod.client import Client
from cowpod.clock import Clock
from cowpod.errors import rpc_code
from cowpod.v1 import event_pb2, meta_pb2, pod_pb2, workload_pb2

log = logging.getLogger(__name__)

COMPONENT = "replicaset-controller"
DEFAULT_EXPECTATION_TIMEOUT = 60.0
_SUFFIX = string.ascii_lowercase + string.digits


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

    def snapshot(self) -> dict[str, InFlight]:
        """Every set with creates/deletes in flight (expired entries dropped), for a pass."""
        return {uid: v for uid in {*self._creating, *self._deleting} if not (v := self.view(uid)).empty}

    def pending(self) -> int:
        return sum(len(v) for v in self._creating.values()) + sum(len(v) for v in self._deleting.values())


# ---- the API the executor needs ------------------------------------------------------------------


class WorkloadAPI(Protocol):
    """The calls the ReplicaSet executor makes (gRPC in production, a fake in tests); its
    watches come from a `cowpod.watches.Watches`. Errors are `grpc.RpcError`s with their
    codes, as a client sees them."""

    async def create_pod(self, pod: pod_pb2.Pod) -> None:
        """Create; ALREADY_EXISTS is raised as `AlreadyExists`-coded RpcError."""

    async def delete_pod(self, namespace: str, name: str) -> None: ...

    async def get_replicaset(self, namespace: str, name: str) -> workload_pb2.ReplicaSet | None: ...

    async def update_status(self, namespace: str, name: str,
                            status: workload_pb2.ReplicaSetStatus) -> None: ...

    async def event(self, namespace: str, name: str, uid: str, reason: str, message: str,
                    *, warning: bool = False) -> None: ...


class GrpcWorkloadAPI:
    """`WorkloadAPI` over a `Client`; unary calls retry UNAVAILABLE with back-off."""

    def __init__(self, client: Client) -> None:
        self.c = client

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
            if rpc_code(err) == grpc.StatusCode.NOT_FOUND:
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
        self.in_flight = Gauge("cowpod_replicaset_in_flight", "Creates/deletes not yet seen in the cache",
                               registry=reg)


# ---- executor -------------------------------------------------------------------------------------


class Executor:
    """Carries out actions. A failed one is logged and counted; the caller backs the set off
    and plans it again (the plan is idempotent, expectations of failed calls are dropped)."""

    def __init__(self, api: WorkloadAPI, expectations: Expectations, metrics: ReplicaSetMetrics,
                 *, concurrency: int = 16, name_fn: Callable[[str], str] = new_pod_name) -> None:
        self.api = api
        self.expect = expectations
        self.metrics = metrics
        self._sem = asyncio.Semaphore(concurrency)
        self._name = name_fn

    async def execute(self, actions: Sequence[Action]) -> int:
        """Run `actions` (at most `concurrency` calls at once); returns how many failed."""
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

        async def guarded(job: Coroutine[Any, Any, None]) -> bool:
            try:
                async with self._sem:
                    await job
            except grpc.RpcError as err:
                log.warning("replicaset action failed (%s: %s); the set is retried after a back-off",
                            rpc_code(err), err.details() if hasattr(err, "details") else err)
                return False
            finally:
                # Cancelled while waiting for a place (the controller stopping): the job
                # never ran; closing it says so instead of a "never awaited" warning.
                job.close()
            return True

        done = await asyncio.gather(*(guarded(j) for j in jobs))
        return done.count(False)

    async def _create(self, rs: workload_pb2.ReplicaSet, name: str) -> None:
        meta = rs.metadata
        try:
            await self.api.create_pod(pod_from_template(rs, name))
        except grpc.RpcError as err:
            if rpc_code(err) != grpc.StatusCode.ALREADY_EXISTS:
                self.expect.create_failed(meta.uid, name)
                if rpc_code(err) == grpc.StatusCode.INVALID_ARGUMENT:
                    await self._event(rs, "FailedCreate", f"Error creating: {err.details()}", warning=True)
                raise
            # Our own earlier attempt landed (the name is ours and random).
        self.metrics.pods.labels("create").inc()
        await self._event(rs, "SuccessfulCreate", f"Created pod: {name}")

    async def _delete(self, a: DeletePod) -> None:
        try:
            await self.api.delete_pod(a.namespace, a.name)
        except grpc.RpcError as err:
            if rpc_code(err) != grpc.StatusCode.NOT_FOUND:
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
            if rpc_code(err) != grpc.StatusCode.NOT_FOUND:
                raise

    async def _collect(self, a: CollectOrphan) -> None:
        owner = await self.api.get_replicaset(a.namespace, a.owner_name)
        if owner is not None and owner.metadata.uid == a.owner_uid:
            return  # the cache was behind: the owner exists
        try:
            await self.api.delete_pod(a.namespace, a.name)
        except grpc.RpcError as err:
            if rpc_code(err) != grpc.StatusCode.NOT_FOUND:
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
