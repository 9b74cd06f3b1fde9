"""The agent process: wires the parts and owns every task.

    Agent.run
      ├─ register node (capacity from cgroup), then in one TaskGroup:
      ├─ heartbeat loop
      ├─ pod informer (spec.nodeName=<node>)  ──► on_pod ──► PodWorker per UID
      ├─ docker events ──► poke the pod's worker
      ├─ garbage collector (orphan containers/volumes, every few resyncs)
      ├─ status manager (coalesced UpdateStatus) and event recorder
      └─ AgentService (Logs, Exec) when --listen is given

Nothing is garbage-collected before the informer has delivered its first
full list: after a restart the agent must know every pod before it decides a
container is an orphan.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from agent import labels as L
from agent.admission import Admission
from agent.capacity import allocatable, detect_capacity, disk_bytes, with_disk
from agent.config import AgentConfig
from agent.configvolumes import ConfigCache, ConfigVolumes
from agent.controlplane import ControlPlane
from agent.dns import ClusterDNS
from agent.events import EventRecorder
from agent.executor import Executor, NodeContext
from agent.metrics import AgentMetrics
from agent.node import NodeRegistrar, host_ip
from agent.podspec import volume_name
from agent.probes import Prober
from agent.runtime import Runtime, VMInfo
from agent.statusmgr import StatusManager
from agent.worker import PodWorker, WorkerDeps
from cowpod.api.phases import is_terminal
from cowpod.backoff import Backoff, Retry
from cowpod.clock import Clock, RealClock
from cowpod.informer import Informer
from cowpod.metrics_http import serve_metrics
from cowpod.tasks import TaskSupervisor
from cowpod.v1 import meta_pb2, pod_pb2

log = logging.getLogger(__name__)


class Agent:
    def __init__(
        self,
        cfg: AgentConfig,
        cp: ControlPlane,
        runtime: Runtime,
        *,
        clock: Clock | None = None,
        serve: Callable[[Agent], object] | None = None,
        metrics: AgentMetrics | None = None,
        dns: ClusterDNS | None = None,
    ) -> None:
        self.cfg = cfg
        self.dns = dns
        # Always counted (cheap); served only with cfg.metrics_listen.
        self.metrics = metrics or AgentMetrics()
        self.metrics.track_pods(self._phases)
        self.metrics_port = 0
        self.cp = cp
        self.runtime = runtime
        self.clock: Clock = clock or RealClock()
        self._serve = serve
        self.workers: dict[str, PodWorker] = {}
        self.pods: dict[str, pod_pb2.Pod] = {}  # by UID
        self.synced = asyncio.Event()
        self.ready = asyncio.Event()  # registered, synced and first pass done
        self.supervisor: TaskSupervisor | None = None
        self.vm: VMInfo | None = None
        self.deps: WorkerDeps | None = None
        self.registrar: NodeRegistrar | None = None
        self.bound_port = 0  # set by the AgentService server once listening
        self.serving = asyncio.Event()
        self.recorder = EventRecorder(cp, self.clock, cfg.node_name)
        self.statuses = StatusManager(
            cp, self.clock, concurrency=cfg.status_concurrency, qps=cfg.status_qps, metrics=self.metrics
        )
        self.informer: Informer[pod_pb2.Pod] = Informer(
            cp.pod_watch(),
            list_options=meta_pb2.ListOptions(field_selector=f"spec.nodeName={cfg.node_name}"),
            handler=self.on_pod,
            clock=self.clock,
            name=f"agent {cfg.node_name} pods",
            on_synced=self.on_synced,
        )

    # ------------------------------------------------------------ setup

    async def setup(self) -> None:
        # Three independent questions to the engine, asked at once: an agent just
        # forked into a new VM registers that much sooner (`docker info` is slow).
        async def nothing() -> None:
            return None

        vm, root, runtime_version = await asyncio.gather(
            self.runtime.vm_info(self.cfg.vm_container) if self.cfg.vm_container else nothing(),
            self.runtime.data_root() if self.cfg.storage_path is not None else nothing(),
            self.runtime.version(),
        )
        if vm is not None:
            self.vm = vm
            log.info(
                "pods nest in VM container %s (cgroup %s, ip %s)",
                self.vm.id[:12],
                self.vm.cgroup_parent,
                self.vm.ip,
            )
        capacity = detect_capacity(self.cfg.cgroup_root, self.cfg.proc_root, self.cfg.max_pods)
        if self.cfg.storage_path is not None:
            disk = disk_bytes((self.cfg.storage_path, root or "", "/"))
            capacity = with_disk(capacity, disk)
        cfg = self.cfg
        alloc = allocatable(
            capacity, cfg.reserve_cpu_millis, cfg.reserve_memory_bytes, cfg.reserve_ephemeral_storage_bytes
        )
        ip = self.vm.ip if self.vm is not None and self.vm.ip else host_ip()
        self.registrar = NodeRegistrar(
            self.cfg,
            self.cp,
            self.clock,
            capacity=capacity,
            allocatable=alloc,
            internal_ip=ip,
            runtime_version=runtime_version,
            endpoint=self.advertised_endpoint(),
            provider_id=f"docker://{self.vm.id}" if self.vm is not None else "",
            metrics=self.metrics,
            runtime_check=self.runtime.version,
        )
        await self.registrar.register()
        self._admission = Admission(alloc, host_path_prefixes=self.cfg.host_path_prefixes)
        self._node_ctx = NodeContext(self.cfg.node_name, ip, self.vm)

    def advertised_endpoint(self) -> str:
        """--advertise, else --listen; a TCP port 0 becomes the port bound."""
        addr = self.cfg.advertise or self.cfg.listen
        if addr.endswith(":0") and self.bound_port:
            addr = f"{addr[:-2]}:{self.bound_port}"
        return addr

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            sup = self.supervisor = TaskSupervisor("agent", group=tg)
            if self.cfg.metrics_listen:
                host, _, port = self.cfg.metrics_listen.rpartition(":")
                bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                metrics = serve_metrics(self.metrics.render, host or "127.0.0.1", int(port),
                                        healthy=lambda: True, started=bound, name="agent metrics")
                sup.spawn(metrics, "metrics", critical=True)
                self.metrics_port = await bound
            if self._serve is not None:
                served = self._serve(self)
                if asyncio.iscoroutine(served):
                    sup.spawn(served, "server", critical=True)
                    await self.serving.wait()
            await self.setup()
            assert self.registrar is not None
            executor = Executor(
                self.cfg, self.runtime, self.cp, self.recorder, self.statuses, self.clock, self._node_ctx,
                metrics=self.metrics,
                config_volumes=ConfigVolumes(self.runtime, ConfigCache(self.cp.get_config, self.clock)),
            )
            self.deps = WorkerDeps(
                cfg=self.cfg,
                executor=executor,
                recorder=self.recorder,
                statuses=self.statuses,
                clock=self.clock,
                supervisor=sup,
                admission=self._admission,
                prober=Prober(self.runtime, self.metrics),
            )
            sup.spawn(self.registrar.heartbeat_loop(), "heartbeat")
            sup.spawn(self.statuses.run(), "status", critical=True)
            sup.spawn(self.recorder.run(), "events", critical=True)
            sup.spawn(self._docker_events(), "docker-events")
            sup.spawn(self.informer.run(), "informer", critical=True)
            if self.dns is not None:
                sup.spawn(self.dns.run(), "dns", critical=True)
            sup.spawn(self._gc_loop(), "gc")
            sup.spawn(self._volume_limit_loop(), "volume-limits")

    def _phases(self) -> list[str]:
        """Each bound pod's phase as last reported (else as the API has it), for /metrics."""
        out = []
        for uid, pod in list(self.pods.items()):
            st = self.statuses.get(uid)
            out.append((st.phase if st is not None else "") or pod.status.phase)
        return out

    # ------------------------------------------------------------ pods

    def _worker(self, uid: str, pod: pod_pb2.Pod | None) -> PodWorker:
        w = self.workers.get(uid)
        if w is not None and not w.done:
            return w
        assert self.deps is not None and self.supervisor is not None
        w = PodWorker(uid, pod, self.deps)
        self.workers[uid] = w
        self.supervisor.spawn(self._run_worker(w), w.task_name)
        return w

    async def _run_worker(self, w: PodWorker) -> None:
        try:
            await w.run()
        finally:
            if self.workers.get(w.uid) is w:
                del self.workers[w.uid]

    async def on_pod(self, type_: int, pod: pod_pb2.Pod) -> None:
        uid = pod.metadata.uid
        if type_ == meta_pb2.DELETED:
            self.pods.pop(uid, None)
            w = self.workers.get(uid)
            if w is not None:
                w.update(None)
            elif self.synced.is_set():
                self._worker(uid, None)
            return
        if pod.spec.node_name != self.cfg.node_name:
            return
        self.pods[uid] = pod
        w = self.workers.get(uid)
        if w is not None and not w.done:
            w.update(pod)
        else:
            self._worker(uid, pod)

    async def on_synced(self) -> None:
        """The first full list is in: now containers of unknown pods are orphans."""
        await self.collect_garbage()
        self.synced.set()
        if self.supervisor is not None:
            self.supervisor.spawn(self._first_pass(), "first-pass")

    async def _first_pass(self) -> None:
        # Ready once every known pod has been reconciled at least once.
        while any(w.syncs == 0 for w in list(self.workers.values()) if not w.done):
            await self.clock.sleep(0.05)
        self.ready.set()
        log.info("agent %s ready: initial reconcile done for %d pods", self.cfg.node_name, len(self.workers))

    async def collect_garbage(self) -> None:
        """Start workers for pods Docker knows but the API does not (they tear
        down), and remove volumes of pods that have neither."""
        containers = await self.runtime.list_containers()
        for uid in sorted({c.pod_uid for c in containers}):
            if uid not in self.pods and uid not in self.workers:
                log.info("containers of pod %s have no pod object: removing them", uid)
                self._worker(uid, None)
        alive = {c.pod_uid for c in containers} | set(self.pods)
        for name, lab in await self.runtime.list_volumes():
            if lab.get(L.POD_UID) not in alive:
                try:
                    await self.runtime.remove_volume(name)
                except Exception as err:
                    log.debug("volume %s not removed: %s", name, err)

    async def _gc_loop(self) -> None:
        while True:
            await self.clock.sleep(max(self.cfg.resync_seconds * 3, 5.0))
            if not self.synced.is_set():
                continue
            try:
                await self.collect_garbage()
            except Exception as err:
                log.warning("garbage collection failed: %s", err)

    async def enforce_volume_limits(self) -> None:
        """Evict pods over their disk limits, as kubelet does: a disk-backed emptyDir
        over its `sizeLimit`, or a container whose writable layer outgrew its
        `limits.ephemeral-storage`. Docker's local volumes and overlay2 layers have
        no quota, so usage is measured (by the engine, on the host) and a pod over a
        limit becomes Failed/Evicted, its containers stopped and its volumes removed
        with it. Memory-backed emptyDirs are tmpfs mounts of that size already."""
        volumes: dict[str, tuple[PodWorker, str, int]] = {}
        layers: dict[tuple[str, str], tuple[PodWorker, int]] = {}  # (pod uid, container) -> limit
        for uid, w in self.workers.items():
            pod = w.pod
            if pod is None or w.memory.rejected is not None or is_terminal(pod.status.phase):
                continue
            for v in pod.spec.volumes:
                ed = v.empty_dir
                if v.HasField("empty_dir") and ed.medium != "Memory" and ed.size_limit_bytes > 0:
                    volumes[volume_name(uid, v.name)] = (w, v.name, ed.size_limit_bytes)
            for c in (*pod.spec.init_containers, *pod.spec.containers):
                if c.resources.limits.ephemeral_storage_bytes > 0:
                    layers[uid, c.name] = (w, c.resources.limits.ephemeral_storage_bytes)
        over: list[tuple[PodWorker, str]] = []
        if volumes:
            usage = await self.runtime.volume_usage()
            for name, (w, vol, limit) in volumes.items():
                if (used := usage.get(name, 0)) > limit:
                    over.append((w, f'Usage of EmptyDir volume "{vol}" exceeds the limit "{limit}" bytes '
                                    f"(used {used})."))
        if layers:
            sizes = await self.runtime.writable_layer_usage()
            for ci in await self.runtime.list_containers():
                hit = layers.get((ci.pod_uid, ci.name))
                if hit is not None and (used := sizes.get(ci.id, 0)) > hit[1]:
                    over.append((hit[0], f'Container {ci.name} exceeded its local ephemeral storage limit '
                                         f'"{hit[1]}" bytes (used {used}).'))
        for w, msg in over:
            if w.memory.rejected is not None:
                continue
            log.warning("evicting pod %s/%s: %s", w.last_ref.namespace, w.last_ref.name, msg)
            w.memory.rejected = ("Evicted", msg)
            self.recorder.record(w.last_ref, "Evicted", msg, warning=True)
            w.poke()

    async def _volume_limit_loop(self) -> None:
        while True:
            await self.clock.sleep(max(self.cfg.resync_seconds, 1.0))
            if not self.synced.is_set():
                continue
            try:
                await self.enforce_volume_limits()
            except Exception as err:
                log.warning("emptyDir size check failed: %s", err)

    async def _docker_events(self) -> None:
        # Re-subscribing to the engine's events: 0.5 s, doubling up to 10 s.
        retry = Retry(Backoff(initial=0.5, cap=10.0), self.clock)
        while True:
            try:
                async for uid in self.runtime.events():
                    w = self.workers.get(uid)
                    if w is not None:
                        w.poke()
                    retry.reset()
            except Exception as err:
                log.warning("docker events failed: %s", err)
            await retry.sleep()
            # Missed events: make every worker look again.
            for w in list(self.workers.values()):
                w.poke()

    # ------------------------------------------------------------ lookups (logs, exec)

    def find_pod(self, namespace: str, name: str) -> pod_pb2.Pod | None:
        ns = namespace or "default"
        for pod in self.pods.values():
            if pod.metadata.name == name and (pod.metadata.namespace or "default") == ns:
                return pod
        return None
