"""Instant clone vs full clone, end to end, on the docker provider, in one run.

    .venv/bin/python bench/clone.py [--n 5] [--pods 20] [--pool-size 2] [--pod-initial-backoff 1.0]
                                    [--cold-agents] [--keep]

Everything is real and in this process (as `cowpod up` would run it, minus the
process boundaries): an etcd member, the controller (with the unix socket the
VMs' agents dial), the VM manager driving the docker provider (with the
zygote warm-start hook unless --cold-agents), the scheduler and the
autoscaler. One class, `small` (1 CPU, 512 MiB), with a warm parent.

1. Clone latency: N full clones (VMService.Create), N instant clones
   (VMService.Clone from the parent) each taking a warm shell from the
   parent's pool (the bench waits for the pool to be full before each), and N
   instant clones with the pool drained and off (the shell is created inline),
   one at a time, each timed from the request to its node's Ready condition
   (seen on a node watch). Stages: request -> VM phase Running (provider work)
   and Running -> node Ready (the agent starting and registering); for full
   clones the container step (`docker run` + the init taking signals) and the
   agent's cold boot (provider returned -> node Ready).
2. Memory: the agent process of an instant clone and of a full clone,
   `/proc/<pid>/smaps_rollup`: private (Private_*) vs shared (Shared_*).
   An instant clone's agent is forked from the parent's zygote, so what it
   shares it shares with the parent's; a full clone's agent starts cold.
3. Pending to Running: the cluster has no room (only the tainted parent), 20
   pods of 200m are applied at once; the autoscaler makes VMs for them. Time
   from each pod's Create to its phase Running; first, last and p50; once with
   instant clones, then (after the clones are gone) with instant clones off.
   Before that, the same for one pod alone, and the stages of each case:
   apply -> Unschedulable verdict, verdict -> first VM asked for, VM -> node
   Ready, bound -> Running.

The last line printed is one JSON object. Docker objects carry cowpod.test=1
and this run's cluster id, and are removed at the end even on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402

from bench._cleanup import BenchRun, own_docker, own_path  # noqa: E402
from controller.autoscaler.reconciler import Autoscaler, Options  # noqa: E402
from controller.limits import Limits  # noqa: E402
from controller.testing import ControllerRunner  # noqa: E402
from cowpod.api.labels import (  # noqa: E402
    CLASS_LABEL,
    PARENT_TAINT_EFFECT,
    PARENT_TAINT_KEY,
    PARENT_TAINT_VALUE,
)
from cowpod.client import Client  # noqa: E402
from cowpod.clock import RealClock  # noqa: E402
from cowpod.clusterconfig import ClusterConfig, VMClass  # noqa: E402
from cowpod.informer import Informer  # noqa: E402
from cowpod.local.docker_env import remove_cluster_containers  # noqa: E402
from cowpod.local.etcd import EtcdMember  # noqa: E402
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2, vm_pb2  # noqa: E402
from hypervisor.manager import VMManager  # noqa: E402
from hypervisor.providers.docker.provider import (  # noqa: E402
    L_CLUSTER,
    L_SHELL_OF,
    DockerProvider,
    DockerProviderConfig,
    container_name,
)
from hypervisor.testing import DockerTestEnv, build_images, machine, smaps_rollup_kb  # noqa: E402
from scheduler.app import SchedulerApp  # noqa: E402
from scheduler.config import SchedulerConfig  # noqa: E402

SMALL = VMClass("small", 1000, 512 << 20, labels={"tier": "small"}, max=20)
PARENT = "small-parent"
POD_CPU = 200
POD_MEMORY = 32 << 20


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    i = min(len(s) - 1, max(0, round(q * (len(s) - 1))))
    return round(s[i], 3)


def p50(xs: list[float]) -> float:
    return round(statistics.median(xs), 3) if xs else float("nan")


# ---------------------------------------------------------------- watching


@dataclass
class Seen:
    """First wall-clock time each thing was seen, from watches (one loop, same clock)."""

    node_ready: dict[str, float] = field(default_factory=dict)
    vm_running: dict[str, float] = field(default_factory=dict)
    pod_running: dict[str, float] = field(default_factory=dict)
    pod_unschedulable: dict[str, float] = field(default_factory=dict)
    pod_bound: dict[str, float] = field(default_factory=dict)
    pod_node: dict[str, str] = field(default_factory=dict)
    vm_added: dict[str, float] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_node(self, _t: int, n: node_pb2.Node) -> None:
        ready = any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)
        if ready and n.metadata.name not in self.node_ready:
            self.node_ready[n.metadata.name] = time.time()
            self.changed.set()

    async def on_vm(self, _t: int, v: vm_pb2.VM) -> None:
        self.vm_added.setdefault(v.metadata.name, time.time())
        if v.status.phase == "Running" and v.metadata.name not in self.vm_running:
            self.vm_running[v.metadata.name] = time.time()
            self.changed.set()

    async def on_pod(self, _t: int, p: pod_pb2.Pod) -> None:
        name = p.metadata.name
        if any(c.type == "PodScheduled" and c.status == "False" for c in p.status.conditions):
            self.pod_unschedulable.setdefault(name, time.time())
        if p.spec.node_name:
            self.pod_bound.setdefault(name, time.time())
            self.pod_node.setdefault(name, p.spec.node_name)
        if p.status.phase == "Running" and p.metadata.name not in self.pod_running:
            self.pod_running[p.metadata.name] = time.time()
            self.changed.set()

    async def until(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 1.0))


# ------------------------------------------------------------ stage timing


@dataclass
class Stages:
    """Durations of the docker provider's steps, by wrapping its methods (bench only)."""

    times: dict[str, list[float]] = field(default_factory=dict)

    def wrap_sync(self, obj: Any, attr: str, key: str) -> None:
        fn = getattr(obj, attr)

        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.times.setdefault(key, []).append(time.perf_counter() - t0)

        setattr(obj, attr, timed)

    def wrap_async(self, obj: Any, attr: str, key: str) -> None:
        fn = getattr(obj, attr)

        async def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*a, **kw)
            finally:
                self.times.setdefault(key, []).append(time.perf_counter() - t0)

        setattr(obj, attr, timed)

    def reset(self) -> None:
        self.times.clear()

    def p50s(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_{k}_p50_s": p50(v) for k, v in sorted(self.times.items())}


def instrument(provider: DockerProvider, stages: Stages) -> None:
    stages.wrap_async(provider, "full_clone", "provider_call")
    stages.wrap_async(provider, "instant_clone", "provider_call")
    stages.wrap_sync(provider, "_snapshot_sync", "snapshot_reuse_or_commit")
    stages.wrap_sync(provider, "_start_sync", "docker_create_start")
    stages.wrap_sync(provider, "_create_shell_sync", "shell_create")
    # With no shell in the pool the child's own container is made instead: the
    # same place in the clone, so the same key (create + start, off the network).
    stages.wrap_sync(provider, "_create_child_sync", "shell_create")
    # ... and its network attached while the agent is forked in (concurrently).
    stages.wrap_sync(provider, "_attach_network_sync", "network_attach")
    stages.wrap_sync(provider, "_adopt_sync", "shell_identity_rename")
    if provider.warm_start is not None:
        provider.warm_start = TimedWarmStart(provider.warm_start, stages)


class TimedWarmStart:
    """Times the warm-start hook's calls and passes everything else through: the
    provider looks for the hook's `prepare` to start the zygote ahead of the first
    clone, which a bare wrapper function would hide."""

    def __init__(self, inner: Any, stages: Stages) -> None:
        self._inner = inner
        self._stages = stages

    async def __call__(self, *a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await self._inner(*a, **kw)
        finally:
            self._stages.times.setdefault("zygote_fork_agent", []).append(time.perf_counter() - t0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def docker_run_baseline(image: str, n: int) -> list[float]:
    """Raw `docker run -d` of the VM image (create + start), removed after: the engine's own floor."""
    dock = docker.from_env()
    out = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            c = dock.containers.run(image, ["sleep", "60"], entrypoint=[], detach=True,
                                    labels={"cowpod.test": "1", "cowpod.bench": "clone"})
            out.append(time.perf_counter() - t0)
            c.remove(force=True)
    finally:
        dock.close()
    return out


# ------------------------------------------------------------------ memory



def agent_pid(container: str) -> int | None:
    """The agent process in a VM container: a forked agent names itself
    `cowpod-agent` (comm); a cold one runs the `cowpod-agent` console script.
    The biggest such process (by RSS) when several match (a wrapper shell)."""
    dock = docker.from_env()
    try:
        top = dock.containers.get(container).top(ps_args="-o pid,comm,args")
    finally:
        dock.close()
    best: tuple[int, int] | None = None
    for row in top.get("Processes") or []:
        if "cowpod-agent" not in " ".join(row):
            continue
        pid = int(row[0])
        try:
            rss = smaps_rollup_kb(pid).get("Rss", 0)
        except OSError:
            continue
        if best is None or rss > best[1]:
            best = (pid, rss)
    return best[0] if best else None


def memory_of(container: str) -> dict[str, float]:
    pid = agent_pid(container)
    if pid is None:
        return {}
    s = smaps_rollup_kb(pid)
    return {
        "private_mb": round((s["Private_Clean"] + s["Private_Dirty"]) / 1024, 1),
        "shared_mb": round((s["Shared_Clean"] + s["Shared_Dirty"]) / 1024, 1),
        "rss_mb": round(s["Rss"] / 1024, 1),
        "pss_mb": round(s["Pss"] / 1024, 1),
    }


def idle_shell_memory(provider: DockerProvider) -> dict[str, Any]:
    """What an idle warm shell holds: its cgroup's memory (cgroup v1: rss and usage,
    page cache included) and its CPU time so far, p50 over the parent's idle shells."""
    api = provider.docker.api
    labels = [f"{L_SHELL_OF}={PARENT}", f"{L_CLUSTER}={provider.cfg.cluster_id}"]
    shells = [c["Id"] for c in api.containers(filters={"label": labels})
              if c["Names"][0].lstrip("/").startswith(provider.cfg.shell_prefix)]
    rss, usage, cpu = [], [], []
    for cid in shells:
        mem = pathlib.Path("/sys/fs/cgroup/memory/docker") / cid
        try:
            stat = dict(line.split() for line in (mem / "memory.stat").read_text().splitlines())
            rss.append(int(stat["total_rss"]) / 2**20)
            usage.append(int((mem / "memory.usage_in_bytes").read_text()) / 2**20)
            acct = pathlib.Path("/sys/fs/cgroup/cpuacct/docker") / cid / "cpuacct.usage"
            cpu.append(int(acct.read_text()) / 1e9)
        except (OSError, KeyError, ValueError):
            continue  # another cgroup layout (v2, systemd driver): not measured
    return {"idle_shells": len(shells), "idle_shell_rss_mb_p50": p50(rss) if rss else None,
            "idle_shell_usage_mb_p50": p50(usage) if usage else None,
            "idle_shell_cpu_s_p50": p50(cpu) if cpu else None}


# ----------------------------------------------------------------- cluster


@dataclass
class Bench:
    client: Client
    seen: Seen
    env: DockerTestEnv
    runner: ControllerRunner
    tg: asyncio.TaskGroup
    autoscaler_task: asyncio.Task[None] | None = None

    def vm(self, name: str, *, template: bool = False) -> vm_pb2.VM:
        v = vm_pb2.VM(api_version="v1", kind="VM")
        v.metadata.name = name
        v.spec.class_name = SMALL.name
        v.spec.cpu_millis = SMALL.cpu_millis
        v.spec.memory_bytes = SMALL.memory_bytes
        v.spec.template = template
        v.spec.node_labels.update({**SMALL.labels, CLASS_LABEL: SMALL.name})
        return v

    async def ready(self, name: str, timeout: float = 180) -> None:
        await self.seen.until(lambda: name in self.seen.node_ready, timeout, f"node {name} Ready")

    async def destroy_all_clones(self) -> None:
        vms = (await self.client.vms.List(meta_pb2.ListOptions())).items
        names = [v.metadata.name for v in vms if not v.spec.template]
        for n in names:
            with contextlib.suppress(Exception):
                await self.client.vms.Destroy(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name=n)))

        async def gone() -> bool:
            left = (await self.client.vms.List(meta_pb2.ListOptions())).items
            return not any(v.metadata.name in names for v in left)

        await poll(gone, 180, "clones destroyed")

    async def start_autoscaler(self, cfg: ClusterConfig) -> None:
        a = Autoscaler(self.client, cfg, options=Options(leader_elect=False))
        self.autoscaler_task = self.tg.create_task(a.run(), name="bench-autoscaler")

    async def stop_autoscaler(self) -> None:
        task, self.autoscaler_task = self.autoscaler_task, None
        if task is not None:
            task.cancel()
            # gather, not suppress(CancelledError): a ^C arriving meanwhile must end the run.
            await asyncio.gather(task, return_exceptions=True)


async def poll(cond: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


# ------------------------------------------------------------------ phases


async def pool_full(provider: DockerProvider, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while provider.idle_shells(PARENT) < provider.pool_target(PARENT):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the pool of {PARENT} did not refill in {timeout:.0f}s")
        await asyncio.sleep(0.05)


async def instant_series(
    b: Bench, prefix: str, n: int, provider: DockerProvider
) -> tuple[list[float], list[float]]:
    ready: list[float] = []
    running: list[float] = []
    for i in range(n):
        name = f"{prefix}-{i}"
        await pool_full(provider)
        await asyncio.sleep(0.3)  # let the last shell's init settle: no overlap with the clone
        t0 = time.time()
        await b.client.vms.Clone(vm_pb2.CloneRequest(parent=PARENT, count=1, names=[name]))
        await b.ready(name)
        ready.append(b.seen.node_ready[name] - t0)
        running.append(b.seen.vm_running.get(name, b.seen.node_ready[name]) - t0)
    return ready, running


async def clone_latency(b: Bench, n: int, stages: Stages, provider: DockerProvider) -> dict[str, Any]:
    full: list[float] = []
    full_boot: list[float] = []
    agent_boot: list[float] = []
    returned: dict[str, float] = {}
    inner = provider.full_clone

    async def timed_full_clone(spec: Any, guest: Any) -> Any:
        info = await inner(spec, guest)
        returned[spec.name] = time.time()
        return info

    provider.full_clone = timed_full_clone  # type: ignore[method-assign]
    stages.reset()
    for i in range(n):
        name = f"full-{i}"
        t0 = time.time()
        await b.client.vms.Create(b.vm(name))
        await b.ready(name)
        full.append(b.seen.node_ready[name] - t0)
        full_boot.append(b.seen.vm_running.get(name, b.seen.node_ready[name]) - t0)
        agent_boot.append(b.seen.node_ready[name] - returned[name])
    provider.full_clone = inner  # type: ignore[method-assign]
    container_step = list(stages.times.get("docker_create_start", []))
    full_stages = stages.p50s("full")
    stages.reset()
    inst, inst_boot = await instant_series(b, "inst", n, provider)
    inst_stages = stages.p50s("instant")
    # The same with the pool empty and off: each clone creates its shell inline.
    stages.reset()
    size = provider.pool_size
    provider.pool_size = 0
    await provider.drain_pool(PARENT)
    nopool, nopool_boot = await instant_series(b, "nopool", n, provider)
    nopool_stages = stages.p50s("instant_nopool")
    # A clone's own container is named and given its identity when it is created:
    # there is no identity/rename step any more (the key stays, at its cost: none).
    nopool_stages.setdefault("instant_nopool_shell_identity_rename_p50_s", 0.0)
    provider.pool_size = size
    await provider.prepare_parent(PARENT)
    await asyncio.sleep(2.0)  # let the agents settle into their steady state
    child = memory_of(container_name(b.env.config(), "inst-0"))
    cold = memory_of(container_name(b.env.config(), "full-0"))
    parent = memory_of(container_name(b.env.config(), PARENT))
    return {
        "instant_ready_p50_s": p50(inst),
        "instant_ready_p95_s": pct(inst, 0.95),
        "instant_ready_nopool_p50_s": p50(nopool),
        "full_ready_p50_s": p50(full),
        "full_ready_p95_s": pct(full, 0.95),
        "speedup": round(p50(full) / p50(inst), 2) if inst and p50(inst) > 0 else None,
        "speedup_nopool": round(p50(full) / p50(nopool), 2) if nopool and p50(nopool) > 0 else None,
        "container_step_full_p50_s": p50(container_step),
        "agent_boot_full_p50_s": p50(agent_boot),
        "container_step_share_of_full": round(p50(container_step) / p50(full), 2) if full else None,
        "instant_nopool_vm_running_p50_s": p50(nopool_boot),
        "instant_ready_nopool_s": [round(x, 3) for x in nopool],
        "instant_vm_running_p50_s": p50(inst_boot),
        "instant_running_to_ready_p50_s": p50([r - v for r, v in zip(inst, inst_boot, strict=True)]),
        "full_vm_running_p50_s": p50(full_boot),
        "full_running_to_ready_p50_s": p50([r - v for r, v in zip(full, full_boot, strict=True)]),
        "instant_ready_s": [round(x, 3) for x in inst],
        "full_ready_s": [round(x, 3) for x in full],
        "child_private_mb": child.get("private_mb"),
        "child_shared_mb": child.get("shared_mb"),
        "child_rss_mb": child.get("rss_mb"),
        "full_child_private_mb": cold.get("private_mb"),
        "full_child_shared_mb": cold.get("shared_mb"),
        "parent_agent_rss_mb": parent.get("rss_mb"),
        **full_stages,
        **inst_stages,
        **nopool_stages,
    }


def bench_pod(name: str) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    p.metadata.namespace = "default"
    c = p.spec.containers.add(name="main", image="cowpod/busybox:latest", command=["sleep", "3600"])
    c.resources.requests.cpu_millis = POD_CPU
    c.resources.requests.memory_bytes = POD_MEMORY
    p.spec.termination_grace_period_seconds = 0
    return p


async def pending_to_running(
    b: Bench, pods: int, prefix: str, cfg: ClusterConfig, provider: DockerProvider
) -> dict[str, Any]:
    await pool_full(provider)
    await b.start_autoscaler(cfg)
    created: dict[str, float] = {}
    names = [f"{prefix}-{i}" for i in range(pods)]
    for n in names:
        created[n] = time.time()
        await b.client.pods.Create(bench_pod(n))
    await b.seen.until(lambda: all(n in b.seen.pod_running for n in names), 600, f"{pods} pods Running")
    seen = b.seen
    waits = [seen.pod_running[n] - created[n] for n in names]
    vms = (await b.client.vms.List(meta_pb2.ListOptions())).items
    clones = [v for v in vms if not v.spec.template]
    marked = [n for n in names if n in seen.pod_unschedulable]
    vm_ready = [seen.node_ready[v.metadata.name] - seen.vm_added[v.metadata.name]
                for v in clones if v.metadata.name in seen.node_ready and v.metadata.name in seen.vm_added]
    first_vm = min((seen.vm_added[v.metadata.name] for v in clones if v.metadata.name in seen.vm_added),
                   default=float("nan"))
    stages = {
        # apply -> the scheduler says Unschedulable
        "to_unschedulable_p50_s": p50([seen.pod_unschedulable[n] - created[n] for n in marked]),
        # first verdict -> first VM asked for (the autoscaler's reaction)
        "autoscaler_reaction_s": round(first_vm - min(seen.pod_unschedulable[n] for n in marked), 3)
        if marked else None,
        # VM asked for -> its node Ready
        "vm_to_node_ready_p50_s": p50(vm_ready),
        # its node Ready -> pod bound (the scheduler retrying the pod: its back-off)
        "node_ready_to_bound_p50_s": p50([seen.pod_bound[n] - seen.node_ready[seen.pod_node[n]]
                                          for n in names if seen.pod_node.get(n) in seen.node_ready]),
        # bound -> Running (the agent starting the pod's containers)
        "bound_to_running_p50_s": p50([seen.pod_running[n] - seen.pod_bound[n] for n in names]),
    }
    await b.stop_autoscaler()
    for n in names:
        with contextlib.suppress(Exception):
            key = meta_pb2.ObjectKey(namespace="default", name=n)
            await b.client.pods.Delete(meta_pb2.DeleteOptions(key=key, grace_period_seconds=0))
    await b.destroy_all_clones()
    return {
        "p50_s": p50(waits),
        "first_s": round(min(waits), 3),
        "last_s": round(max(waits), 3),
        "vms": len(clones),
        "clone_kinds": sorted({v.status.clone_kind for v in clones}),
        "stages": stages,
    }


# -------------------------------------------------------------------- run


async def run(args: argparse.Namespace) -> dict[str, Any]:
    build_images()
    load_at_start = os.getloadavg()
    env = DockerTestEnv.create()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="cowpod-bench-"))
    # Removed however the run ends (SIGTERM, SIGKILL: by the next run); --keep leaves them till then.
    own_docker(cluster=env.cluster_id, network=env.network)
    own_path(env.data_dir, tmp)
    etcd = EtcdMember(data_dir=tmp / "etcd", log_path=tmp / "etcd.log")
    etcd.start()
    result: dict[str, Any] = {}
    try:
        etcd.wait_ready()
        sock = env.data_dir / "run" / "controller.sock"
        sock.parent.mkdir(parents=True, exist_ok=True)
        warm = None
        if not args.cold_agents:
            from hypervisor.providers.docker.zygote_warm import ZygoteWarmStarter

            warm = ZygoteWarmStarter(ZygoteWarmStarter.default_socket_dir(env.data_dir))
        # The bench's controller is plaintext; the VMs' agents must be told so.
        provider = DockerProvider(env.config(
                                             pool_size=args.pool_size),
                                  warm_start=warm)
        stages = Stages()
        instrument(provider, stages)
        baseline = await asyncio.to_thread(docker_run_baseline, provider.cfg.image, args.n)
        result["docker_run_p50_s"] = p50(baseline)
        seen = Seen()
        async with (
            ControllerRunner(etcd.endpoint, "/bench", listen_unix=str(sock),
                             limits=Limits(user_rate=1e6, user_burst=1_000_000)) as runner,
            Client(runner.address) as client,
            asyncio.TaskGroup() as tg,
        ):
            manager = VMManager(client, "docker", env.data_dir, provider=provider,
                                cluster_id=env.cluster_id, resync_seconds=1.0)
            sched = SchedulerApp(client, SchedulerConfig(initial_backoff_s=args.pod_initial_backoff),
                                 clock=RealClock(), identity="bench-scheduler")
            informers: list[Informer[Any]] = [
                Informer(client.nodes.Watch, handler=seen.on_node, name="bench-nodes"),
                Informer(client.vms.Watch, handler=seen.on_vm, name="bench-vms"),
                Informer(client.pods.Watch, handler=seen.on_pod, name="bench-pods"),
            ]
            tasks = [tg.create_task(manager.run(), name="bench-vm-manager"),
                     tg.create_task(sched.run(), name="bench-scheduler")]
            tasks += [tg.create_task(i.run(), name=f"bench-informer-{k}") for k, i in enumerate(informers)]
            b = Bench(client, seen, env, runner, tg)
            try:
                await client.vms.Create(b.vm(PARENT, template=True))
                await b.ready(PARENT)
                # The parent hosts no pods (the autoscaler would do this too).
                node = await client.nodes.Get(meta_pb2.ObjectKey(name=PARENT))
                node.spec.taints.add(
                    key=PARENT_TAINT_KEY, value=PARENT_TAINT_VALUE, effect=PARENT_TAINT_EFFECT
                )
                await client.nodes.Update(node)

                result.update(await clone_latency(b, args.n, stages, provider))
                await b.destroy_all_clones()

                ccfg = ClusterConfig(vm_classes=(SMALL,), scan_interval_s=1.0, max_vms=args.pods + 2)
                cold = ccfg.replace(instant_clones=False)
                one_inst = await pending_to_running(b, 1, "one-ins", ccfg, provider)
                one_full = await pending_to_running(b, 1, "one-ful", cold, provider)
                inst = await pending_to_running(b, args.pods, "ins", ccfg, provider)
                full = await pending_to_running(b, args.pods, "ful", cold, provider)
                # The same burst again: the pool has been refilled to the first one's size
                # (poolsize.py), as it would be for a burst that recurs.
                target = provider.pool_target(PARENT)
                shell_mem = await asyncio.to_thread(idle_shell_memory, provider)
                again = await pending_to_running(b, args.pods, "ins2", ccfg, provider)
                result.update({
                    "pending_to_running_p50_s": inst["p50_s"],
                    "pending_to_running_first_s": inst["first_s"],
                    "pending_to_running_last_s": inst["last_s"],
                    "pending_to_running_vms": inst["vms"],
                    "pending_to_running_clone_kinds": inst["clone_kinds"],
                    "pending_to_running_full_clone_p50_s": full["p50_s"],
                    "pending_to_running_full_clone_first_s": full["first_s"],
                    "pending_to_running_full_clone_last_s": full["last_s"],
                    "pending_to_running_full_clone_vms": full["vms"],
                    "pending_to_running_full_clone_kinds": full["clone_kinds"],
                    "pending_to_running_speedup": round(full["p50_s"] / inst["p50_s"], 2)
                    if inst["p50_s"] > 0 else None,
                    "pending_to_running_stages": inst["stages"],
                    # One pod alone (no contention on the engine from 20 pods' containers).
                    "one_pod_pending_to_running_s": one_inst["p50_s"],
                    "one_pod_pending_to_running_full_clone_s": one_full["p50_s"],
                    "one_pod_stages": one_inst["stages"],
                    "pending_to_running_full_clone_stages": full["stages"],
                    "pending_to_running_repeat_p50_s": again["p50_s"],
                    "pending_to_running_repeat_first_s": again["first_s"],
                    "pending_to_running_repeat_last_s": again["last_s"],
                    "pending_to_running_repeat_speedup": round(full["p50_s"] / again["p50_s"], 2)
                    if again["p50_s"] > 0 else None,
                    "pending_to_running_repeat_stages": again["stages"],
                    "pool_target_after_burst": target,
                    **shell_mem,
                })
            finally:
                await b.stop_autoscaler()
                for t in tasks:
                    t.cancel()
    finally:
        if not args.keep:
            cleanup(env)
            etcd.stop()
    result.update({
        "n": args.n,
        "pods": args.pods,
        "pod_cpu_millis": POD_CPU,
        "vm_class": {"cpu_millis": SMALL.cpu_millis, "memory_mb": SMALL.memory_bytes >> 20},
        "warm_agents": not args.cold_agents,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        # 1, 5 and 15 minute load averages when the run started (2 cores: above ~1 the
        # bench competes with something else).
        "load_avg": [round(x, 2) for x in load_at_start],
        "pool_size": args.pool_size,
        "pod_initial_backoff_s": args.pod_initial_backoff,
        "machine": machine(),
    })
    return result


def cleanup(env: DockerTestEnv) -> None:
    """Every container of this run: its VMs (cluster label) and the pods nested in them.

    Pods are found by the VM they live in (network and cgroup parent), as `cowpod
    down` finds them: a VM made from a shell has a blank `cowpod.vm` label
    (labels cannot change after the shell was made), so looking pods up by their
    VMs' names missed every instant clone's pods."""
    remove_cluster_containers(env.cluster_id)
    env.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=5, help="full clones and instant clones to time, each")
    p.add_argument("--pods", type=int, default=20, help="pods applied at once in the end-to-end case")
    p.add_argument("--cold-agents", action="store_true",
                   help="instant clones start their agent cold (no zygote warm start)")
    p.add_argument("--pool-size", type=int, default=DockerProviderConfig.pool_size,
                   help=f"warm shells per parent, at least (the docker provider's default is "
                        f"{DockerProviderConfig.pool_size}; >= 1 here)")
    p.add_argument("--pod-initial-backoff", type=float, default=SchedulerConfig().initial_backoff_s,
                   help="the scheduler's podInitialBackoffSeconds (its default, like Kubernetes', is 1 s)")
    p.add_argument("--keep", action="store_true", help="leave the containers and etcd for inspection")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args()
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with BenchRun("clone", keep=args.keep):
        result = asyncio.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
