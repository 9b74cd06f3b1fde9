"""Hollow agents: thousands of fake nodes in one process (kubemark / KWOK style).

A `HollowFleet` stands in for the agents of many VMs. It speaks the real API
to the real controller, so the controller, etcd and the scheduler are
exercised exactly as with real agents, but no container ever runs:

    one gRPC channel ──► Register each node (capacity, Ready=True)
                     ──► heartbeats: one loop, a heap of due times with jitter,
                         a bounded number of renewals in flight, each over one of
                         as many HeartbeatStreams (agent/leasestream.py)
                     ──► ONE informer on bound pods (spec.nodeName!=), dispatched
                         by node name to the fleet's nodes (not one watch per node);
                         a pod bound to a node not yet recorded waits for that node
                     ──► status writer: bound Pending pods become Running, pods
                         being deleted are finalized (grace 0); a bounded pool of
                         UpdateStatus/Delete calls drains a de-duplicating queue

Cheap enough for 5,000 nodes: per node it holds a small record and a heap
entry; per pod a dictionary lookup on each watch event.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc

from agent.leasestream import LeaseRenewer
from agent.node import registration_labels
from cowpod.api.labels import (
    HOLLOW_LABEL,
    PARENT_TAINT_EFFECT,
    PARENT_TAINT_KEY,
    PARENT_TAINT_VALUE,
)
from cowpod.client import Client
from cowpod.clock import Clock, RealClock
from cowpod.errors import CowpodError, NotFound, rpc_code, rpc_details
from cowpod.informer import Informer
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2

log = logging.getLogger(__name__)

HOLLOW_VERSION = "hollow/0.1"


@dataclass(frozen=True)
class HollowNodeSpec:
    name: str
    cpu_millis: int = 4000
    memory_bytes: int = 8 << 30
    pods: int = 110
    # 0 = reports none (the scheduler then does not check ephemeral-storage requests).
    ephemeral_storage_bytes: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[tuple[str, str, str]] = ()
    provider_id: str = ""
    # A warm parent VM hosts no pods: its node registers with a NoSchedule taint.
    template: bool = False


@dataclass
class _Node:
    spec: HollowNodeSpec
    index: int
    paused: bool = False
    running: set[str] = field(default_factory=set)  # pod uids we marked Running


def node_message(spec: HollowNodeSpec, index: int, now: float) -> node_pb2.Node:
    res = meta_pb2.ResourceList(
        cpu_millis=spec.cpu_millis,
        memory_bytes=spec.memory_bytes,
        pods=spec.pods,
        ephemeral_storage_bytes=spec.ephemeral_storage_bytes,
    )
    ready = meta_pb2.Condition(
        type="Ready", status="True", reason="HollowAgentReady", message="hollow agent is posting ready status"
    )
    ready.last_heartbeat_time.FromNanoseconds(int(now * 1e9))
    ready.last_transition_time.FromNanoseconds(int(now * 1e9))
    # The real agent's labels for the same VM and the hollow marker (test_hollow_contract.py).
    labels = {HOLLOW_LABEL: "true", **registration_labels(spec.name, spec.labels)}
    taints = [node_pb2.Taint(key=k, value=v, effect=e) for k, v, e in spec.taints]
    if spec.template:
        # The taint production's warm parents carry (the autoscaler's), so hollow fleets take its path.
        parent = node_pb2.Taint(key=PARENT_TAINT_KEY, value=PARENT_TAINT_VALUE, effect=PARENT_TAINT_EFFECT)
        taints.append(parent)
    return node_pb2.Node(
        api_version="v1",
        kind="Node",
        metadata=meta_pb2.ObjectMeta(name=spec.name, labels=labels),
        spec=node_pb2.NodeSpec(provider_id=spec.provider_id or f"sim://{spec.name}", taints=taints),
        status=node_pb2.NodeStatus(
            capacity=res,
            allocatable=res,
            conditions=[ready],
            # Loopback addresses: nothing ever connects to a hollow node.
            addresses=[node_pb2.NodeAddress(type="InternalIP", address=hollow_ip(index))],
            node_info=node_pb2.NodeSystemInfo(
                agent_version=HOLLOW_VERSION,
                operating_system="linux",
                architecture="amd64",
                container_runtime_version="hollow://0",
            ),
            phase="Running",
        ),
    )


def hollow_ip(index: int) -> str:
    return f"127.{100 + (index >> 16) % 100}.{(index >> 8) & 255}.{index & 255 or 1}"


class HollowFleet:
    def __init__(
        self,
        client: Client,
        *,
        clock: Clock | None = None,
        heartbeat_s: float = 10.0,
        mark_running: bool = True,
        watch_pods: bool = True,
        concurrency: int = 32,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._clock = clock or RealClock()
        self.heartbeat_s = heartbeat_s
        self.mark_running = mark_running
        # Without a pod watch the fleet neither runs nor finalizes pods (benchmarks
        # that measure binding alone).
        self.watch_pods = watch_pods or mark_running
        self._sem = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        # Heartbeats go over `concurrency` HeartbeatStreams, each carrying one renewal at
        # a time for whichever node is due (not one stream per node): the fleet's
        # credential (admin, or the controller's certificate) may renew any node, and a
        # renewal then costs the controller what a real agent's does, one message each
        # way through the same per-message gate. A controller without the stream gets
        # unary calls (agent/leasestream.py).
        unary = functools.partial(self._client.nodes.Heartbeat, timeout=10.0)
        self._renewers: asyncio.Queue[LeaseRenewer] = asyncio.Queue()
        for _ in range(concurrency):
            self._renewers.put_nowait(LeaseRenewer(self._client.nodes, unary, self._clock))
        self._rng = rng or random.Random()
        self.nodes: dict[str, _Node] = {}
        self._due: list[tuple[float, str]] = []
        self._count = 0
        # uid -> (kind, pod): the latest work per pod; kind is "run" or "finalize".
        self._work: dict[str, tuple[str, pod_pb2.Pod]] = {}
        self._work_wake = asyncio.Event()
        # node name -> uid -> latest pod: pods bound to a node the fleet has not recorded.
        # The scheduler binds as soon as Register lands, so the bound pod's watch event can
        # overtake Register's reply to add(); dropped, nothing would ever mark it Running
        # (it changes no more). add() dispatches them once the node is recorded.
        self._early: dict[str, dict[str, pod_pb2.Pod]] = {}
        self.synced = asyncio.Event()
        self.heartbeats = 0
        self.marked_running = 0

    # ---- nodes -------------------------------------------------------------------

    async def add(self, spec: HollowNodeSpec) -> node_pb2.Node:
        """Register a node (or re-register after a restart) and start heartbeating it."""
        self._count += 1
        node = _Node(spec, self._count)
        msg = node_message(spec, node.index, self._clock.now())
        async with self._sem:
            registered: node_pb2.Node = await self._client.call(
                self._client.nodes.Register, msg, timeout=30.0
            )
        self.nodes[spec.name] = node
        due = self._clock.monotonic() + self.heartbeat_s * (0.5 + self._rng.random() / 2)
        heapq.heappush(self._due, (due, spec.name))
        for pod in self._early.pop(spec.name, {}).values():
            await self._on_pod(meta_pb2.MODIFIED, pod)
        return registered

    async def add_many(self, specs: Sequence[HollowNodeSpec]) -> None:
        async with asyncio.TaskGroup() as tg:
            for s in specs:
                tg.create_task(self.add(s), name=f"register-{s.name}")

    def remove(self, name: str) -> None:
        """The VM is gone: stop heartbeating (the node turns NotReady, as a dead VM's would)."""
        self.nodes.pop(name, None)

    def pause(self, name: str, paused: bool = True) -> None:
        n = self.nodes.get(name)
        if n is not None:
            n.paused = paused

    # ---- loops -------------------------------------------------------------------

    async def run(self) -> None:
        """Heartbeats, the bound-pod informer and the status writer, until cancelled."""

        async def on_synced() -> None:
            self.synced.set()

        informer: Informer[pod_pb2.Pod] = Informer(
            self._client.pods.Watch,
            list_options=meta_pb2.ListOptions(field_selector="spec.nodeName!="),
            handler=self._on_pod,
            clock=self._clock,
            name="hollow-pods",
            on_synced=on_synced,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._heartbeat_loop(tg), name="hollow-heartbeats")
                if not self.watch_pods:
                    self.synced.set()
                    return
                tg.create_task(informer.run(), name="hollow-pod-informer")
                for i in range(self._concurrency):
                    tg.create_task(self._status_worker(), name=f"hollow-status-{i}")
        finally:
            while not self._renewers.empty():  # all are back: the renewals' tasks ended with the group
                self._renewers.get_nowait().close()

    async def _heartbeat_loop(self, tg: asyncio.TaskGroup) -> None:
        tick = max(0.05, min(1.0, self.heartbeat_s / 10))
        while True:
            now = self._clock.monotonic()
            while self._due and self._due[0][0] <= now:
                _, name = heapq.heappop(self._due)
                node = self.nodes.get(name)
                if node is None:
                    continue
                jitter = self.heartbeat_s * (0.9 + self._rng.random() * 0.2)
                heapq.heappush(self._due, (now + jitter, name))
                if node.paused:
                    continue
                await self._sem.acquire()
                tg.create_task(self._heartbeat(name), name=f"heartbeat-{name}")
            await self._clock.sleep(tick)

    async def _heartbeat(self, name: str) -> None:
        renewer = self._renewers.get_nowait()  # as many as the semaphore lets run at once
        try:
            await renewer.renew(node_pb2.HeartbeatRequest(node_name=name))
            self.heartbeats += 1
        except (grpc.aio.AioRpcError, NotFound) as err:
            code = rpc_code(err) if isinstance(err, grpc.aio.AioRpcError) else grpc.StatusCode.NOT_FOUND
            if code == grpc.StatusCode.NOT_FOUND and name in self.nodes:
                # The node object was deleted behind our back: register again, as an agent would.
                node = self.nodes[name]
                try:
                    await self._client.nodes.Register(node_message(node.spec, node.index, self._clock.now()))
                except grpc.aio.AioRpcError as err2:
                    log.info("hollow %s: re-register: %s", name, err2.details())
            else:
                log.debug("hollow %s: heartbeat: %s", name, rpc_details(err))
        except CowpodError as err:  # refused over the stream, or the stream kept breaking
            log.debug("hollow %s: heartbeat: %s", name, err)
        except Exception as err:  # one node's failed renewal must not stop the fleet's loops
            log.warning("hollow %s: heartbeat failed: %r", name, err, exc_info=err)
        finally:
            self._renewers.put_nowait(renewer)
            self._sem.release()

    async def _on_pod(self, type_: int, pod: pod_pb2.Pod) -> None:
        uid = pod.metadata.uid
        node = self.nodes.get(pod.spec.node_name)
        if node is None:
            # Not (yet) one of ours: keep its latest state for add(), until it goes. Pods
            # on nodes the fleet never adds stay here, one entry each, as in the informer.
            early = self._early.setdefault(pod.spec.node_name, {})
            if type_ == meta_pb2.DELETED:
                early.pop(uid, None)
                if not early:
                    del self._early[pod.spec.node_name]
            else:
                early[uid] = pod
            return
        if type_ == meta_pb2.DELETED:
            node.running.discard(uid)
            self._work.pop(uid, None)
            return
        if pod.metadata.HasField("deletion_timestamp"):
            self._work[uid] = ("finalize", pod)
        elif self.mark_running and pod.status.phase == "Pending" and not node.paused:
            self._work[uid] = ("run", pod)
        else:
            return
        self._work_wake.set()

    async def _status_worker(self) -> None:
        while True:
            while not self._work:
                self._work_wake.clear()
                await self._work_wake.wait()
            uid, (kind, pod) = next(iter(self._work.items()))
            del self._work[uid]
            try:
                if kind == "finalize":
                    await self._client.pods.Delete(
                        meta_pb2.DeleteOptions(
                            key=meta_pb2.ObjectKey(namespace=pod.metadata.namespace, name=pod.metadata.name),
                            grace_period_seconds=0,
                        ),
                        timeout=10.0,
                    )
                else:
                    await self._client.pods.UpdateStatus(self.running_status(pod), timeout=10.0)
                    self.marked_running += 1
                    node = self.nodes.get(pod.spec.node_name)
                    if node is not None:
                        node.running.add(uid)
            except grpc.aio.AioRpcError as err:
                # ABORTED: the pod changed; its next watch event brings the work back.
                if err.code() not in (grpc.StatusCode.ABORTED, grpc.StatusCode.NOT_FOUND):
                    log.info(
                        "hollow: %s %s/%s: %s", kind, pod.metadata.namespace, pod.metadata.name, err.details()
                    )

    def running_status(self, pod: pod_pb2.Pod) -> pod_pb2.Pod:
        """The pod as a real agent would report it once its containers started."""
        now = self._clock.now()
        node = self.nodes.get(pod.spec.node_name)
        index = node.index if node else 0
        out = pod_pb2.Pod()
        out.metadata.CopyFrom(pod.metadata)
        st = out.status
        st.CopyFrom(pod.status)
        st.phase = "Running"
        st.host_ip = hollow_ip(index)
        st.pod_ip = st.host_ip
        st.start_time.FromNanoseconds(int(now * 1e9))
        conds = {c.type: c for c in st.conditions}
        for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
            c = conds.get(t)
            if c is None:
                c = st.conditions.add()
                c.type = t
            if c.status != "True":
                c.status = "True"
                c.last_transition_time.FromNanoseconds(int(now * 1e9))
        del st.container_statuses[:]
        for ctr in pod.spec.containers:
            cs = st.container_statuses.add(
                name=ctr.name,
                image=ctr.image,
                ready=True,
                started=True,
                container_id=f"hollow://{pod.metadata.uid}/{ctr.name}",
            )
            cs.state.running.started_at.FromNanoseconds(int(now * 1e9))
        return out


class FleetAgents:
    """`HollowFleet` seen as the sim provider's `NodeAgents`: one hollow agent per VM."""

    def __init__(self, fleet: HollowFleet) -> None:
        self.fleet = fleet

    async def start_node(
        self,
        name: str,
        *,
        cpu_millis: int,
        memory_bytes: int,
        labels: Mapping[str, str],
        template: bool,
        provider_id: str,
    ) -> None:
        await self.fleet.add(
            HollowNodeSpec(
                name=name,
                cpu_millis=cpu_millis,
                memory_bytes=memory_bytes,
                labels=dict(labels),
                template=template,
                provider_id=provider_id,
            )
        )

    def stop_node(self, name: str) -> None:
        self.fleet.remove(name)

    def pause_node(self, name: str, paused: bool) -> None:
        self.fleet.pause(name, paused)

    async def run(self) -> None:
        await self.fleet.run()
