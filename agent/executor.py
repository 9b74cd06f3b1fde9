"""Carries out the planner's actions on the runtime and says what happened
(events, errors remembered in the pod's memory for the next plan).

Kills of one plan run concurrently (a pod's containers share one grace
period); everything else runs in plan order. A failure of one action is
remembered and reported, never raised into the worker's loop, except for
engine errors the worker retries on its next sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
import shutil
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from agent import labels as L
from agent.config import AgentConfig
from agent.configvolumes import BUSYBOX, ConfigVolumes, Snapshot, has_config_volumes
from agent.configvolumes import ConfigError as ConfigRefError
from agent.controlplane import ControlPlane
from agent.dns import resolv_conf
from agent.events import EventRecorder, PodRef
from agent.metrics import AgentMetrics
from agent.plan import (
    Action,
    Finalize,
    KillContainer,
    PendingError,
    PodMemory,
    RemoveContainer,
    RemoveVolumes,
    Requeue,
    StartContainer,
    StartSandbox,
)
from agent.podspec import (
    OPEN_DIR,
    ConfigError,
    PodContext,
    container_spec,
    engine_path,
    pod_files,
    sandbox_spec,
    uses_cluster_dns,
    volume_name,
)
from agent.probes import Prober, Target
from agent.runtime import ContainerInfo, EngineError, ImageError, Kind, Runtime, VMInfo
from agent.startgate import StartGate
from agent.statusmgr import StatusManager
from cowpod.api import podfields
from cowpod.backoff import Backoff, Retry
from cowpod.clock import Clock
from cowpod.configrefs import refs_of
from cowpod.safefile import write_atomic
from cowpod.v1 import pod_pb2

POST_START_TIMEOUT = 30.0
"""How long a postStart handler may take before it counts as failed (the container is
then restarted, as Kubernetes does)."""


def _write_if_changed(path: pathlib.Path, data: bytes) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.read_bytes() == data:
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, 0o644)


def has_handler(h: pod_pb2.LifecycleHandler) -> bool:
    """Whether a postStart/preStop handler is set (exec, httpGet, tcpSocket or sleep)."""
    return any(h.HasField(f) for f in ("exec", "http_get", "tcp_socket", "sleep"))


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeContext:
    node_name: str
    host_ip: str
    vm: VMInfo | None


def find_spec(pod: pod_pb2.Pod, name: str, kind: Kind) -> pod_pb2.Container | None:
    pool = pod.spec.init_containers if kind == Kind.INIT else pod.spec.containers
    return next((c for c in pool if c.name == name), None)


class Executor:
    def __init__(
        self,
        cfg: AgentConfig,
        runtime: Runtime,
        cp: ControlPlane,
        recorder: EventRecorder,
        statuses: StatusManager,
        clock: Clock,
        node: NodeContext,
        metrics: AgentMetrics | None = None,
        config_volumes: ConfigVolumes | None = None,
    ) -> None:
        self.metrics = metrics
        # ConfigMaps/Secrets for env and volumes (agent/configvolumes.py); None: no controller
        # to read them from, and a pod referencing one waits in CreateContainerConfigError.
        self.config_volumes = config_volumes
        self.cfg = cfg
        self.runtime = runtime
        self.cp = cp
        self.recorder = recorder
        self.statuses = statuses
        self.clock = clock
        self.node = node
        self.gate = StartGate(cfg.parallel_starts)
        self.prober = Prober(runtime)  # runs lifecycle handlers (httpGet/tcpSocket as probes do)

    def _slot(self, pod: pod_pb2.Pod) -> AbstractAsyncContextManager[None]:
        """A gate slot for one container's create and start, oldest pod first."""
        ts = pod.metadata.creation_timestamp
        return self.gate.slot(ts.seconds + ts.nanos / 1e9)

    def pod_ip(self, containers: Sequence[ContainerInfo]) -> str:
        if self.node.vm is not None:
            return self.node.vm.ip
        sb = [c for c in containers if c.kind == Kind.SANDBOX and c.running]
        return sb[-1].ip if sb else ""

    async def execute(
        self,
        pod: pod_pb2.Pod | None,
        ref: PodRef,
        actions: Sequence[Action],
        memory: PodMemory,
        containers: Sequence[ContainerInfo],
    ) -> bool:
        """Run the actions; True when the pod was finalized."""
        kills = [a for a in actions if isinstance(a, KillContainer)]
        if kills:
            by_id = {c.id: c for c in containers}
            ip = self.pod_ip(containers)
            await asyncio.gather(*(self.kill(pod, ref, a, memory, by_id.get(a.id), pod_ip=ip) for a in kills))
        for a in actions:
            if isinstance(a, StartSandbox) and pod is not None:
                await self.start_sandbox(pod, ref, a, memory)
            elif isinstance(a, StartContainer) and pod is not None:
                await self.start_container(pod, ref, a, memory, containers)
            elif isinstance(a, RemoveContainer):
                await self.runtime.remove_container(a.id)
            elif isinstance(a, RemoveVolumes):
                await self.remove_volumes(a.pod_uid)
            elif isinstance(a, Finalize) and pod is not None:
                await self.statuses.flush(ref.uid)
                await self.cp.finalize_pod(ref.namespace, ref.name, ref.uid, pod.metadata.resource_version)
                self.statuses.forget(ref.uid)
                if self.config_volumes is not None:
                    self.config_volumes.forget_pod(ref.uid)
                return True
            elif isinstance(a, (KillContainer, Requeue)):
                continue
        return False

    # ------------------------------------------------------------ stopping

    async def kill(
        self,
        pod: pod_pb2.Pod | None,
        ref: PodRef,
        a: KillContainer,
        memory: PodMemory,
        info: ContainerInfo | None,
        *,
        pod_ip: str = "",
    ) -> None:
        """preStop hook, SIGTERM, wait up to the grace period, SIGKILL."""
        deadline = self.clock.monotonic() + a.grace
        spec = find_spec(pod, a.name, info.kind) if (pod is not None and info is not None) else None
        if a.reason != "PodTerminated" or (info is not None and info.kind != Kind.SANDBOX):
            msg = {
                "Unhealthy": memory.unhealthy.get(
                    a.id, f"Container {a.name} failed a probe, will be restarted"
                ),
                "SpecChanged": f"Container {a.name} definition changed, will be restarted",
                "SandboxChanged": f"Pod sandbox changed, stopping container {a.name}",
            }.get(a.reason, f"Stopping container {a.name}")
            self.recorder.record(ref, "Killing", msg)
        if a.pre_stop and a.grace > 0 and spec is not None and has_handler(spec.lifecycle.pre_stop):
            ok, why = await self.prober.run_handler(
                spec.lifecycle.pre_stop, Target(a.id, pod_ip), float(max(a.grace, 1)), self.clock)
            if not ok:
                self.recorder.record(
                    ref, "FailedPreStopHook", f"PreStop hook of {a.name}: {why}", warning=True
                )
        if a.grace > 0:
            await self.runtime.signal_container(a.id, "SIGTERM")
            # Poll for the exit: every 0.05 s at first, then less often, up to every 0.5 s.
            poll = Retry(Backoff(initial=0.05, cap=0.5), self.clock)
            while self.clock.monotonic() < deadline:
                if not await self.runtime.is_running(a.id):
                    break
                await self.clock.sleep(min(poll.next_delay(), max(deadline - self.clock.monotonic(), 0.01)))
        if await self.runtime.is_running(a.id):
            await self.runtime.signal_container(a.id, "SIGKILL")
            for _ in range(100):
                if not await self.runtime.is_running(a.id):
                    break
                await self.clock.sleep(0.05)
        memory.unhealthy.pop(a.id, None)
        memory.ready.pop(a.id, None)
        memory.started.pop(a.id, None)

    async def remove_volumes(self, pod_uid: str) -> None:
        if self.cfg.cluster_dns:
            await asyncio.to_thread(shutil.rmtree, pod_files(self.cfg, pod_uid), True)
        for name, lab in await self.runtime.list_volumes():
            if lab.get(L.POD_UID) == pod_uid:
                try:
                    await self.runtime.remove_volume(name)
                except EngineError as err:
                    log.warning("volume %s not removed yet: %s", name, err)

    # ------------------------------------------------------------ starting

    def _backoff_error(self, memory: PodMemory, name: str, reason: str, message: str,
                       cap: float | None = None) -> None:
        old = memory.errors.get(name)
        streak = (old.streak + 1) if old is not None else 1
        delay = max(self.cfg.image_backoff.delay(streak + 1), 1.0)
        if cap is not None:
            delay = min(delay, max(cap, 1.0))
        memory.errors[name] = PendingError(reason, message, self.clock.now() + delay, streak)

    async def _ensure_image(self, ref: PodRef, image: str, policy: str, memory: PodMemory, name: str) -> bool:
        present = await self.runtime.image_present(image)
        policy = policy or "IfNotPresent"
        if policy == "Never" or (self.cfg.no_pull and policy != "Always"):
            if present:
                self.recorder.record(ref, "Pulled", f'Container image "{image}" already present on machine')
                return True
            msg = (
                f'image "{image}" is not present on the node and cannot be pulled (imagePullPolicy {policy})'
            )
            self._image_failed(ref, memory, name, "ErrImageNotFound", msg)
            return False
        if present and policy == "IfNotPresent":
            self.recorder.record(ref, "Pulled", f'Container image "{image}" already present on machine')
            return True
        if self.cfg.no_pull:
            if present:
                return True
            self._image_failed(
                ref, memory, name, "ErrImageNotFound", f'image "{image}" is not present on the node'
            )
            return False
        self.recorder.record(ref, "Pulling", f'Pulling image "{image}"')
        try:
            await self.runtime.pull_image(image)
        except ImageError as err:
            if present:
                self.recorder.record(ref, "Failed", f"{err.message}; using the local copy", warning=True)
                return True
            reason = "ErrImageNotFound" if err.reason == "ErrImageNotFound" else "ImagePullBackOff"
            self._image_failed(ref, memory, name, reason, err.message)
            return False
        self.recorder.record(ref, "Pulled", f'Successfully pulled image "{image}"')
        return True

    def _image_failed(self, ref: PodRef, memory: PodMemory, name: str, reason: str, msg: str) -> None:
        first = name not in memory.errors
        self._backoff_error(memory, name, reason, msg)
        if first:
            self.recorder.record(ref, "Failed", f"Error: {reason}: {msg}", warning=True)
        else:
            self.recorder.record(ref, "BackOff", f"Back-off pulling image: {reason}: {msg}", warning=True)

    async def ensure_volumes(self, pod: pod_pb2.Pod) -> None:
        lab = {
            **self.cfg.extra_docker_labels,
            L.MANAGED: "1",
            L.NODE: self.cfg.node_name,
            L.POD_UID: pod.metadata.uid,
            L.POD_NAME: pod.metadata.name,
            L.POD_NAMESPACE: pod.metadata.namespace or "default",
        }
        for v in pod.spec.volumes:
            if v.HasField("host_path"):
                continue
            # Secret volumes live in memory, as Kubernetes keeps them: never on the node's disk.
            tmpfs = v.empty_dir.medium == "Memory" or v.HasField("secret")
            await self.runtime.ensure_volume(
                volume_name(pod.metadata.uid, v.name),
                lab | {L.VOLUME_NAME: v.name},
                tmpfs=tmpfs,
                size=v.empty_dir.size_limit_bytes,
            )

    async def _resolv_conf(self, pod: pod_pb2.Pod) -> str:
        """Write the pod's resolv.conf (if it uses the cluster's DNS) under `pod_files_dir` and
        return the engine's path of it, which the containers bind over the VM's."""
        if not uses_cluster_dns(pod, self.cfg):
            return ""
        path = pod_files(self.cfg, pod.metadata.uid) / "resolv.conf"
        text = resolv_conf(pod.metadata.namespace, self.cfg.cluster_dns.rpartition(":")[0])
        await asyncio.to_thread(_write_if_changed, path, text.encode())
        return engine_path(self.node.vm, str(path))

    async def _hosts_file(self, pod: pod_pb2.Pod, pod_ip: str) -> str:
        """Write the pod's /etc/hosts (if it has hostAliases) under `pod_files_dir` and return
        the engine's path of it: on a VM, the VM's entries (this agent's own /etc/hosts) and
        the aliases; off a VM, kubelet's header, the pod's address and the aliases."""
        if not pod.spec.host_aliases:
            return ""
        if self.node.vm is not None:
            base = await asyncio.to_thread(pathlib.Path("/etc/hosts").read_text)
        else:
            name = (pod.spec.hostname or pod.metadata.name)[:63]
            base = podfields.KUBELET_HOSTS + (f"{pod_ip}\t{name}\n" if pod_ip else "")
        path = pod_files(self.cfg, pod.metadata.uid) / "hosts"
        text = podfields.hosts_file(base, list(pod.spec.host_aliases))
        await asyncio.to_thread(_write_if_changed, path, text.encode())
        return engine_path(self.node.vm, str(path))

    async def sync_configs(self, pod: pod_pb2.Pod, sandbox_id: str) -> Snapshot:
        """The ConfigMaps/Secrets the pod references, fetched; its configMap/secret volumes
        written up to date through its sandbox. Raises configvolumes.ConfigError for a
        missing one that is not optional, EngineError when the files cannot be written."""
        if not any(True for _ in refs_of(pod.spec)):
            if sandbox_id and self.config_volumes is not None and has_config_volumes(pod.spec):
                await self.config_volumes.sync(pod, sandbox_id, {})  # downwardAPI volumes only
            return {}
        if self.config_volumes is None:
            raise ConfigRefError("this agent reads no ConfigMaps or Secrets (no controller connection)")
        snap = await self.config_volumes.cache.snapshot(pod)
        if sandbox_id and has_config_volumes(pod.spec):
            await self.config_volumes.sync(pod, sandbox_id, snap)
        return snap

    async def refresh_configs(self, pod: pod_pb2.Pod) -> None:
        """Bring a running pod's configMap/secret volume files up to date (every worker sync);
        env is left as it was at container start, as on Kubernetes."""
        if self.config_volumes is None or not has_config_volumes(pod.spec):
            return
        if pod.metadata.HasField("deletion_timestamp"):
            return
        containers = await self.runtime.list_containers(pod_uid=pod.metadata.uid)
        sandboxes = [c for c in containers if c.kind == Kind.SANDBOX and c.running]
        apps = [c for c in containers if c.kind != Kind.SANDBOX]
        if not sandboxes or not apps:
            return  # nothing started yet: start_container writes them first
        try:
            snap = await self.config_volumes.cache.snapshot(pod)
            written = await self.config_volumes.sync(pod, sandboxes[-1].id, snap)
        except (ConfigRefError, EngineError) as err:
            # Kept as written last: Kubernetes too keeps a volume's files when its object goes.
            log.info("pod %s/%s: config volumes not updated: %s", pod.metadata.namespace,
                     pod.metadata.name, err)
            return
        for name in written:
            log.info("pod %s/%s: volume %s updated", pod.metadata.namespace, pod.metadata.name, name)

    async def start_sandbox(self, pod: pod_pb2.Pod, ref: PodRef, a: StartSandbox, memory: PodMemory) -> None:
        vm = self.node.vm
        spec = sandbox_spec(pod, self.cfg, a.attempt, vm.id if vm else "", vm.cgroup_parent if vm else "")
        try:
            if not await self.runtime.image_present(spec.image) and not self.cfg.no_pull:
                await self.runtime.pull_image(spec.image)
            await self.ensure_volumes(pod)
            async with self._slot(pod):
                cid = await self.runtime.create_container(spec)
                await self.runtime.start_container(cid)
            await self._open_volumes(pod, cid)
            if self.metrics is not None:
                self.metrics.started("sandbox", a.attempt)
        except (ImageError, EngineError) as err:
            self._backoff_error(memory, "", "SandboxCreateError", str(err))
            self.recorder.record(
                ref, "FailedCreatePodSandBox", f"Failed to create pod sandbox: {err}", warning=True
            )
            return
        memory.errors.pop("", None)
        if a.attempt > 0:
            self.recorder.record(
                ref, "SandboxChanged", "Pod sandbox changed, it will be killed and re-created."
            )

    async def _open_volumes(self, pod: pod_pb2.Pod, sandbox_id: str) -> None:
        """chmod 0777 the disk emptyDirs of a non-root pod through its sandbox's busybox, as
        Kubernetes creates every emptyDir (the engine makes them root-owned 0755)."""
        names = podfields.open_volumes(pod.spec)
        if not names:
            return
        paths = [f"{OPEN_DIR}/{n}" for n in names]
        res = await self.runtime.exec(sandbox_id, [BUSYBOX, "chmod", "0777", *paths], timeout=30)
        if res.exit_code != 0:
            why = (res.stdout + res.stderr).decode(errors="replace")[:200]
            raise EngineError(f"making emptyDir volumes writable: {why}")

    async def start_container(
        self,
        pod: pod_pb2.Pod,
        ref: PodRef,
        a: StartContainer,
        memory: PodMemory,
        containers: Sequence[ContainerInfo],
    ) -> None:
        c = find_spec(pod, a.name, a.kind)
        if c is None:
            return
        if not await self._ensure_image(ref, c.image, c.image_pull_policy, memory, c.name):
            return
        vm = self.node.vm
        try:
            configs = await self.sync_configs(pod, a.sandbox_id)
        except (ConfigError, ConfigRefError) as err:
            # Waiting for a ConfigMap/Secret to appear: tried again at least every resync, so the
            # pod starts soon after it does (not after an image-pull back-off of minutes).
            self._backoff_error(memory, c.name, "CreateContainerConfigError", str(err),
                                cap=self.cfg.resync_seconds)
            self.recorder.record(ref, "Failed", f"Error: {err}", warning=True)
            return
        except EngineError as err:
            why = f"writing the pod's config files: {err}"
            self._backoff_error(memory, c.name, "CreateContainerConfigError", why)
            self.recorder.record(ref, "Failed", f"Error: {why}", warning=True)
            return
        try:
            ctx = PodContext(
                node_name=self.cfg.node_name,
                pod_ip=self.pod_ip(containers),
                host_ip=self.node.host_ip,
                sandbox_id=a.sandbox_id,
                vm_id=vm.id if vm else "",
                cgroup_parent=vm.cgroup_parent if vm else "",
                vm_host_files=vm.host_files if vm else (),
                resolv_conf=await self._resolv_conf(pod),
                hosts_file=await self._hosts_file(pod, self.pod_ip(containers)),
                configs=configs,
            )
            spec = container_spec(pod, c, a.kind, a.attempt, a.streak, self.cfg, ctx)
        except ConfigRefError as err:  # a missing ConfigMap/Secret key: retried every resync
            self._backoff_error(memory, c.name, "CreateContainerConfigError", str(err),
                                cap=self.cfg.resync_seconds)
            self.recorder.record(ref, "Failed", f"Error: {err}", warning=True)
            return
        except ConfigError as err:
            self._backoff_error(memory, c.name, "CreateContainerConfigError", str(err))
            self.recorder.record(ref, "Failed", f"Error: {err}", warning=True)
            return
        async with self._slot(pod):
            try:
                cid = await self.runtime.create_container(spec)
            except ImageError as err:
                self._image_failed(ref, memory, c.name, err.reason, err.message)
                return
            except EngineError as err:
                self._backoff_error(memory, c.name, "CreateContainerError", str(err))
                self.recorder.record(ref, "Failed", f"Error: {err}", warning=True)
                return
            memory.errors.pop(c.name, None)
            self.recorder.record(ref, "Created", f"Created container {c.name}")
            try:
                await self.runtime.start_container(cid)
            except EngineError as err:
                self.recorder.record(
                    ref, "Failed", f"Error: failed to start container {c.name}: {err}", warning=True
                )
                return
        self.recorder.record(ref, "Started", f"Started container {c.name}")
        if self.metrics is not None:
            self.metrics.started(a.kind.value, a.attempt)
        if has_handler(c.lifecycle.post_start):
            ok, why = await self.prober.run_handler(
                c.lifecycle.post_start, Target(cid, ctx.pod_ip), POST_START_TIMEOUT, self.clock)
            if not ok:
                self.recorder.record(
                    ref, "FailedPostStartHook", f"PostStart hook of {c.name}: {why}", warning=True
                )
                memory.unhealthy[cid] = f"Container {c.name} failed its postStart hook, will be restarted"
