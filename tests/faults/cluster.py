"""A cowpod cluster of real processes on loopback, for breaking things on purpose.

    cluster = ProcCluster(tmp_path, node_monitor_grace=3.0)
    cluster.start_etcd(); cluster.start_controller(); cluster.start_scheduler()
    cluster.start_agent("n1")
    async with cluster.client() as c: ...
    cluster.kill("controller"); cluster.start_controller()     # SIGKILL, then the same port
    cluster.teardown()                                          # every process and container

Every component is the console script from the venv (`cowpod-controller`, ...)
started as a child process in its own session, logging to `<root>/logs/<name>.log`.
The controller keeps its port across restarts so clients reconnect. Agents run on
the host's Docker (no VM container) and label everything they create with
`cowpod.test=1` and `cowpod.faults=<run id>`, which `teardown` removes.

Used by tests/faults (marker `faults`) and bench/soak.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc

from cowpod.client import Client
from cowpod.local.etcd import EtcdMember, free_port
from cowpod.local.process import stat_state
from cowpod.v1 import meta_pb2, pod_pb2
from tests import polling

BIN = pathlib.Path(sys.executable).parent
FAULTS_LABEL = "cowpod.faults"
BUSYBOX = "cowpod/busybox:latest"


@dataclass
class Member(EtcdMember):
    """An etcd member with extra flags (e.g. a small --max-request-bytes)."""

    extra_args: tuple[str, ...] = ()

    def command(self) -> list[str]:
        return [*super().command(), *self.extra_args]


@dataclass
class Proc:
    """One child process: started, killed and restarted with the same command line."""

    name: str
    cmd: list[str]
    log: pathlib.Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        if self.alive:
            raise RuntimeError(f"{self.name} is already running")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            out.write(f"\n=== start {self.starts + 1}: {' '.join(self.cmd)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.popen is not None
            self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL and reap: no chance to clean up, as in a crash."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()

    def stop(self, timeout: float = 5.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGCONT)
        self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


class ProcCluster:
    def __init__(
        self,
        root: pathlib.Path,
        *,
        etcd_members: int = 1,
        node_monitor_grace: float = 3.0,
        node_monitor_period: float = 0.5,
        pod_eviction_timeout: float = 2.0,
        etcd_timeout: float = 2.0,
        heartbeat_seconds: float = 1.0,
        etcd_quota_bytes: int = 0,
        controller_args: Sequence[str] = (),
        etcd_args: Sequence[str] = (),
        controller_env: dict[str, str] | None = None,
        run_id: str = "",
    ) -> None:
        self.root = root
        self.run_id = run_id or uuid.uuid4().hex[:8]
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.node_monitor_grace = node_monitor_grace
        self.node_monitor_period = node_monitor_period
        self.pod_eviction_timeout = pod_eviction_timeout
        self.etcd_timeout = etcd_timeout
        self.heartbeat_seconds = heartbeat_seconds
        self.controller_args = list(controller_args)
        self.controller_env = dict(controller_env or {})
        names = [f"etcd{i}" for i in range(etcd_members)]
        members = [
            Member(
                data_dir=root / name,
                name=name,
                log_path=self.logs / f"{name}.log",
                quota_bytes=etcd_quota_bytes,
                extra_args=tuple(etcd_args),
            )
            for name in names
        ]
        if etcd_members > 1:
            initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
            for m in members:
                m.initial_cluster = initial
        self.etcd: list[Member] = members
        self.controller_port = free_port()
        self.metrics_port = free_port()
        self.scheduler_metrics_port = free_port()
        self.procs: dict[str, Proc] = {}
        self.agent_names: list[str] = []

    # -- addresses

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.controller_port}"

    @property
    def etcd_endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.etcd)

    def client(self) -> Client:
        return Client(self.address)

    # -- etcd

    def start_etcd(self, index: int | None = None) -> None:
        members = self.etcd if index is None else [self.etcd[index]]
        for m in members:
            m.start()
        for m in members:
            m.wait_ready()

    def kill_etcd(self, index: int = 0, sig: int = signal.SIGKILL) -> None:
        """Signal member `index`; returns once it took effect (SIGSTOP: every thread stopped,
        SIGKILL/SIGTERM: the process reaped)."""
        m = self.etcd[index]
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                m.proc.wait()
            elif sig == signal.SIGSTOP:
                _wait_stopped(m.proc.pid)

    def etcd_alive(self, index: int = 0) -> bool:
        p = self.etcd[index].proc
        return p is not None and p.poll() is None

    # -- cowpod processes

    def _proc(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Proc:
        p = self.procs.get(name)
        if p is None:
            p = Proc(name, cmd, self.logs / f"{name}.log", env or {})
            self.procs[name] = p
        p.start()
        return p

    def start_controller(self, *extra: str) -> Proc:
        cmd = [
            str(BIN / "cowpod-controller"),
            "--listen",
            self.address,
            "--etcd",
            self.etcd_endpoints,
            "--etcd-prefix",
            "/cowpod",
            "--insecure",
            "--log-level",
            "info",
            "--etcd-timeout",
            str(self.etcd_timeout),
            "--metrics-listen",
            f"127.0.0.1:{self.metrics_port}",
            "--node-monitor-grace",
            str(self.node_monitor_grace),
            "--node-monitor-period",
            str(self.node_monitor_period),
            "--node-lease-seconds",
            str(max(1, int(self.node_monitor_grace))),
            "--pod-eviction-timeout",
            str(self.pod_eviction_timeout),
            *self.controller_args,
            *extra,
        ]
        return self._proc("controller", cmd, self.controller_env)

    def start_scheduler(self, name: str = "scheduler", *extra: str) -> Proc:
        port = self.scheduler_metrics_port if name == "scheduler" else free_port()
        cmd = [
            str(BIN / "cowpod-scheduler"),
            "--controller",
            self.address,
            "--insecure",
            "--metrics-listen",
            f"127.0.0.1:{port}",
            *extra,
        ]
        return self._proc(name, cmd)

    def start_agent(self, node: str, *extra: str) -> Proc:
        if node not in self.agent_names:
            self.agent_names.append(node)
        cmd = [
            str(BIN / "cowpod-agent"),
            "--controller",
            self.address,
            "--insecure",
            "--node-name",
            node,
            "--no-pull",
            "--heartbeat-seconds",
            str(self.heartbeat_seconds),
            "--resync-seconds",
            "2",
            "--backoff-initial",
            "1",
            "--backoff-max",
            "4",
            "--docker-label",
            f"cowpod.test=1,{FAULTS_LABEL}={self.run_id}",
            *extra,
        ]
        return self._proc(f"agent-{node}", cmd)

    def kill(self, name: str) -> None:
        self.procs[name].kill()

    async def wait_serving(self, timeout: float = 30.0) -> None:
        async with self.client() as c:
            await c.wait_ready(timeout)

    def metrics(self, port: int | None = None) -> str:
        url = f"http://127.0.0.1:{port or self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            body: bytes = resp.read()
        return body.decode()

    # -- teardown

    def teardown(self) -> None:
        """Every process we started, then every Docker object our agents made. Safe to call twice."""
        for p in self.procs.values():
            p.kill()
        for m in self.etcd:
            if m.proc is not None and m.proc.poll() is None:
                m.proc.send_signal(signal.SIGCONT)
                m.proc.kill()
                m.proc.wait()
        docker_cleanup(self.run_id)

    def describe(self) -> str:
        """Log tails of every process, for a failing assertion's message."""
        parts = [f"--- {p.name} ({'alive' if p.alive else 'dead'}):\n{p.tail()}" for p in self.procs.values()]
        return "\n".join(parts)


def docker_cleanup(run_id: str) -> None:
    flt = ["--filter", f"label={FAULTS_LABEL}={run_id}"]
    ids = subprocess.run(
        ["docker", "ps", "-aq", *flt], capture_output=True, text=True, check=False
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True, check=False)
    vols = subprocess.run(
        ["docker", "volume", "ls", "-q", *flt], capture_output=True, text=True, check=False
    ).stdout.split()
    if vols:
        subprocess.run(["docker", "volume", "rm", "-f", *vols], capture_output=True, check=False)


def containers(run_id: str, *labels: str) -> list[dict[str, str]]:
    """Running or not, our containers as {id, name, state, started}."""
    flt = ["--filter", f"label={FAULTS_LABEL}={run_id}"]
    for lab in labels:
        flt += ["--filter", f"label={lab}"]
    ids = subprocess.run(
        ["docker", "ps", "-aq", *flt], capture_output=True, text=True, check=False
    ).stdout.split()
    if not ids:
        return []
    fmt = "{{.Id}} {{.Name}} {{.State.Status}} {{.State.StartedAt}}"
    out = subprocess.run(
        ["docker", "inspect", "--format", fmt, *ids], capture_output=True, text=True, check=False
    ).stdout
    rows = []
    for line in out.splitlines():
        fields = line.split(" ", 3)
        if len(fields) != 4:
            continue  # removed between `ps` and `inspect`: docker printed nothing for it
        cid, name, state, started = fields
        rows.append({"id": cid, "name": name.lstrip("/"), "state": state, "started": started})
    return rows


# -- helpers for tests and the soak ------------------------------------------------------------


async def eventually(
    check: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 30.0,
    what: str = "",
    interval: float = 0.2,
    explain: Callable[[], str] | None = None,
) -> None:
    """tests.polling.eventually with RPC errors as "not yet": these tests restart the
    cluster's processes under the client."""
    await polling.eventually(
        check, timeout=timeout, what=what, interval=interval, retry_on=(grpc.RpcError,), explain=explain
    )


def sleeper_pod(
    name: str, *, node: str = "", labels: dict[str, str] | None = None, cpu_millis: int = 10, grace: int = 1
) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    p.metadata.namespace = "default"
    p.metadata.labels.update(labels or {})
    c = p.spec.containers.add(name="main", image=BUSYBOX, command=["sleep", "100000"])
    c.resources.requests.cpu_millis = cpu_millis
    c.resources.requests.memory_bytes = 8 << 20
    p.spec.termination_grace_period_seconds = grace
    if node:
        p.spec.node_name = node
    return p


async def get_pod(c: Client, name: str) -> pod_pb2.Pod | None:
    try:
        pod: pod_pb2.Pod = await c.pods.Get(meta_pb2.ObjectKey(namespace="default", name=name), timeout=5)
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
    return pod


async def list_pods(c: Client, selector: str = "") -> list[pod_pb2.Pod]:
    resp = await c.pods.List(meta_pb2.ListOptions(namespace="default", label_selector=selector), timeout=10)
    return list(resp.items)


async def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    """A command off the event loop (the CLI, docker), its output captured as text."""
    return await asyncio.to_thread(subprocess.run, list(cmd), capture_output=True, text=True, check=False)


async def cli(cluster: ProcCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return await run(str(BIN / "cowpod"), "--controller", cluster.address, *args)


def close_quietly(*closers: Callable[[], None]) -> None:
    for fn in closers:
        with contextlib.suppress(Exception):
            fn()


def _wait_stopped(pid: int, timeout: float = 10.0) -> None:
    """Until every thread of `pid` is stopped (state T). `kill` returns before that: an etcd
    sent SIGSTOP answered a request sent right after in 2 of 30 tries here, which made the
    outage test see an OK from a "frozen" etcd."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = pathlib.Path(f"/proc/{pid}/task")
        try:
            states = [stat_state(t / "stat") for t in tasks.iterdir()]
        except OSError:
            return  # gone meanwhile: it answers nothing either
        if all(st == "T" for st in states):
            return
        time.sleep(0.001)
    raise AssertionError(f"pid {pid} was sent SIGSTOP but did not stop within {timeout:g}s")
