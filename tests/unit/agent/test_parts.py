"""Small pure parts of the agent: quantities, capacity, admission, container
specs (env, resources, nesting, volumes), status building, status coalescing
and probes against real loopback sockets on a fake clock."""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import re

import pytest

from agent import labels as L
from agent.admission import Admission
from agent.capacity import allocatable, detect_capacity, disk_bytes
from agent.config import AgentConfig, BackoffPolicy
from agent.desired import from_proto, grace_of, needs_sandbox
from agent.main import _cpu, _mem
from agent.plan import PendingError, PodMemory
from agent.podspec import ConfigError, PodContext, container_spec, expand, sandbox_spec
from agent.probes import ProbeKind, Prober, ProbeWorker, Target, settings
from agent.runtime import ContainerInfo, Kind, RunState
from agent.runtime_fake import FakeRuntime
from agent.status import build_status
from agent.statusmgr import StatusManager
from cowpod.api.resources import Resources, pod_requests
from cowpod.clock import FakeClock
from cowpod.v1 import pod_pb2
from tests.unit.agent.fakes import FakeControlPlane, container, ctr, exited, pod, sandbox

CFG = AgentConfig(controller="x", node_name="node-1", extra_docker_labels={"cowpod.test": "1"})


# The agent's flags take Kubernetes quantities through the one parser (cowpod.api.quantity),
# so they accept what a manifest accepts: "1e3" included (an agent-only parser once refused it).
@pytest.mark.parametrize(
    ("text", "millis"), [("100m", 100), ("2", 2000), ("0.5", 500), ("1.25", 1250), ("1e3", 10**6)]
)
def test_cpu_flag(text: str, millis: int) -> None:
    assert _cpu(text) == millis


@pytest.mark.parametrize(
    ("text", "size"), [("64Mi", 64 * 2**20), ("1G", 10**9), ("512", 512), ("1.5Gi", 3 * 2**29), ("1e3", 1000)]
)
def test_memory_flag(text: str, size: int) -> None:
    assert _mem(text) == size


@pytest.mark.parametrize("bad", ["", "abc", "10x", "-1", "1Q"])
def test_bad_quantities_are_refused_as_flag_errors(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(repr(bad)) if bad != "-1" else "negative"):
        _mem(bad)


def test_capacity_from_cgroup_v1(tmp_path: pathlib.Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("536870912\n")
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text("MemTotal:       16384000 kB\n")
    cap = detect_capacity(str(tmp_path), str(proc), 110)
    assert cap == Resources(
        cpu_millis=min(1500, 1000 * (__import__("os").cpu_count() or 1)), memory_bytes=536870912, pods=110
    )
    assert allocatable(cap, 100, 64 * 2**20).memory_bytes == 536870912 - 64 * 2**20


def test_capacity_unlimited_cgroup_falls_back_to_host(tmp_path: pathlib.Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text("MemTotal:       1000 kB\n")
    cap = detect_capacity(str(tmp_path), str(proc), 7)
    assert cap.memory_bytes == 1000 * 1024 and cap.pods == 7 and cap.cpu_millis >= 1000


def _with_requests(name: str, cpu: int = 0, mem: int = 0, limit_mem: int = 0) -> pod_pb2.Pod:
    c = container("app")
    c.resources.requests.cpu_millis = cpu
    c.resources.requests.memory_bytes = mem
    c.resources.limits.memory_bytes = limit_mem
    p = pod(name, c)
    p.metadata.uid = f"uid-{name}"
    return p


def test_pod_requests_max_of_apps_sum_and_largest_init() -> None:
    p = _with_requests("a", cpu=100, mem=10)
    p.spec.containers.append(container("b"))
    p.spec.containers[1].resources.limits.cpu_millis = 200  # limit counts as request
    init = container("init")
    init.resources.requests.memory_bytes = 50
    p.spec.init_containers.append(init)
    assert pod_requests(p.spec) == Resources(cpu_millis=300, memory_bytes=50, pods=1)


def test_admission_counts_what_is_admitted() -> None:
    adm = Admission(Resources(1000, 100, 2))
    assert adm.admit(_with_requests("a", cpu=600, mem=50)) is None
    assert adm.admit(_with_requests("b", cpu=600))[0] == "OutOfcpu"  # type: ignore[index]
    assert adm.admit(_with_requests("c", mem=60))[0] == "OutOfmemory"  # type: ignore[index]
    assert adm.admit(_with_requests("d", cpu=100, mem=10)) is None
    assert adm.admit(_with_requests("e"))[0] == "OutOfpods"  # type: ignore[index]
    adm.release("uid-a")
    assert adm.admit(_with_requests("b", cpu=600)) is None
    assert adm.admit(_with_requests("f", cpu=10_000), force=True) is None  # adopted, not judged


def test_admission_refuses_ephemeral_storage_the_node_does_not_have() -> None:
    """As for memory: the disk requests of admitted pods and the new one must fit allocatable."""
    def disk_pod(name: str, req: int = 0, limit: int = 0) -> pod_pb2.Pod:
        p = _with_requests(name)
        p.spec.containers[0].resources.requests.ephemeral_storage_bytes = req
        p.spec.containers[0].resources.limits.ephemeral_storage_bytes = limit
        return p

    adm = Admission(Resources(1000, 100, 10, ephemeral_storage_bytes=1000))
    assert adm.admit(disk_pod("a", req=600)) is None
    verdict = adm.admit(disk_pod("b", limit=600))  # a limit alone reserves as much
    assert verdict is not None and verdict[0] == "OutOfephemeral-storage"
    assert "requested: 600, used: 600, capacity: 1000" in verdict[1]
    assert adm.admit(disk_pod("c", req=400)) is None  # exactly full fits
    assert adm.admit(disk_pod("d")) is None  # no request: never refused
    # A node that measured no disk does not check it.
    assert Admission(Resources(1000, 100, 10)).admit(disk_pod("e", req=1 << 40)) is None


def test_capacity_measures_the_first_disk_that_exists(tmp_path: pathlib.Path) -> None:
    """The engine's data root when visible, else "/", less the reserve; 0 = not reported."""
    st = os.statvfs(tmp_path)
    assert disk_bytes(("", str(tmp_path / "missing"), str(tmp_path))) == st.f_blocks * st.f_frsize
    assert disk_bytes(("", str(tmp_path / "missing"))) == 0
    cap = Resources(1000, 100, 10, ephemeral_storage_bytes=10 << 30)
    assert allocatable(cap, 0, 0, 1 << 30).ephemeral_storage_bytes == 9 << 30
    assert allocatable(Resources(1000, 100, 10), 0, 0, 1 << 30).ephemeral_storage_bytes == 0


def test_grace_prefers_deletion_then_spec_then_default() -> None:
    p = pod("g", container("app"))
    assert grace_of(p) == 30
    p.spec.termination_grace_period_seconds = 5
    assert grace_of(p) == 5
    p.metadata.deletion_timestamp.GetCurrentTime()
    p.metadata.deletion_grace_period_seconds = 1
    assert grace_of(p) == 1 and from_proto(p).deleting


def test_expand_like_kubernetes() -> None:
    env = {"A": "x"}
    assert expand("$(A)-$(B)-$$(A)", env) == "x-$(B)-$(A)"


def test_container_spec_maps_the_pod() -> None:
    c = container("app", "img:1", args=["--port", "$(PORT)"], working_dir="/srv")
    c.command.extend(["/bin/server"])
    c.env.add(name="PORT", value="80")
    c.env.add(name="POD").value_from.field_ref.field_path = "metadata.name"
    c.env.add(name="IP").value_from.field_ref.field_path = "status.podIP"
    c.resources.limits.cpu_millis = 500
    c.resources.requests.cpu_millis = 250
    c.resources.limits.memory_bytes = 64 * 2**20
    c.volume_mounts.add(name="data", mount_path="/data", read_only=True)
    p = pod("web", c, volumes=[pod_pb2.Volume(name="data", empty_dir=pod_pb2.EmptyDirVolumeSource())])
    p.metadata.uid = "u-1"
    ctx = PodContext(
        "node-1", "10.1.2.3", "192.168.0.1", "sandbox-id", vm_id="vm-id", cgroup_parent="/docker/vm-id"
    )
    spec = container_spec(p, c, Kind.APP, 3, 2, CFG, ctx)
    assert spec.entrypoint == ["/bin/server"] and spec.cmd == ["--port", "80"]
    assert spec.env == {"PORT": "80", "POD": "web", "IP": "10.1.2.3"}
    assert spec.working_dir == "/srv"
    assert (spec.nano_cpus, spec.cpu_shares, spec.memory_limit) == (500_000_000, 256, 64 * 2**20)
    assert spec.network_mode == "container:sandbox-id" and spec.ipc_mode == "container:sandbox-id"
    assert spec.cgroup_parent == "/docker/vm-id"
    assert [(m.kind, m.source, m.target, m.read_only) for m in spec.mounts] == [
        ("volume", "cowpod-u-1-data", "/data", True)
    ]
    lab = spec.labels
    assert lab[L.ATTEMPT] == "3" and lab[L.BACKOFF_STREAK] == "2" and lab[L.POD_UID] == "u-1"
    assert lab[L.MANAGED] == "1" and lab[L.NODE] == "node-1" and lab["cowpod.test"] == "1"
    assert lab[L.CONTAINER_NAME] == "app" and lab[L.POD_NAME] == "web" and lab[L.POD_NAMESPACE] == "default"


def test_sandbox_joins_vm_network_or_publishes_ports() -> None:
    c = container("app")
    c.ports.add(container_port=80, host_port=8080)
    p = pod("web", c)
    p.metadata.uid = "u"
    nested = sandbox_spec(p, CFG, 0, "vm-id", "/docker/vm-id")
    assert nested.network_mode == "container:vm-id" and nested.cgroup_parent == "/docker/vm-id"
    assert nested.published_ports == {} and nested.hostname == ""
    plain = sandbox_spec(p, CFG, 1, "", "")
    assert plain.network_mode == "" and plain.published_ports == {"80/tcp": 8080}
    assert plain.hostname == "web" and plain.labels[L.CONTAINER_KIND] == "sandbox"


def test_only_single_container_pods_on_a_vm_go_without_a_sandbox() -> None:
    one = pod("one", container("app"))
    two = pod("two", container("a"), container("b"))
    init = pod("init", container("app"))
    init.spec.init_containers.add(name="setup", image="cowpod/busybox:latest")
    assert not needs_sandbox(one, vm_network=True)
    assert needs_sandbox(one, vm_network=False)  # its own network namespace to hold
    assert needs_sandbox(two, vm_network=True) and needs_sandbox(init, vm_network=True)
    assert from_proto(one, vm_network=True).sandbox is False


def test_a_container_without_a_sandbox_joins_the_vm() -> None:
    c = container("app")
    p = pod("solo", c)
    ctx = PodContext("node-1", "10.1.2.3", "192.168.0.1", "", vm_id="vm-id", cgroup_parent="/docker/vm-id")
    spec = container_spec(p, c, Kind.APP, 0, 0, CFG, ctx)
    assert spec.network_mode == "container:vm-id" and spec.ipc_mode == ""
    assert spec.cgroup_parent == "/docker/vm-id"
    with pytest.raises(ConfigError, match="no sandbox"):
        container_spec(p, c, Kind.APP, 0, 0, CFG, PodContext("n", "", "", ""))


def test_bad_specs_are_config_errors() -> None:
    c = container("app")
    c.volume_mounts.add(name="missing", mount_path="/x")
    p = pod("bad", c)
    with pytest.raises(ConfigError, match="missing"):
        container_spec(p, c, Kind.APP, 0, 0, CFG, PodContext("n", "", "", "s"))
    c2 = container("app")
    c2.env.add(name="X").value_from.field_ref.field_path = "spec.nope"
    with pytest.raises(ConfigError, match=r"spec\.nope"):
        container_spec(pod("bad2", c2), c2, Kind.APP, 0, 0, CFG, PodContext("n", "", "", "s"))


def _status(
    p: pod_pb2.Pod, have: list[ContainerInfo], memory: PodMemory | None = None, now: float = 200.0
) -> pod_pb2.PodStatus:
    p.metadata.uid = "u1"
    return build_status(
        p,
        from_proto(p),
        have,
        memory or PodMemory(),
        now,
        BackoffPolicy(10, 300),
        pod_ip="10.0.0.2",
        host_ip="192.168.1.1",
        previous=None,
    )


def test_status_running_ready_and_conditions() -> None:
    st = _status(pod("p", container("app")), [sandbox(), ctr()])
    assert st.phase == "Running" and st.pod_ip == "10.0.0.2" and st.host_ip == "192.168.1.1"
    (cs,) = st.container_statuses
    assert cs.ready and cs.started and cs.state.running.started_at.seconds == 100
    assert cs.container_id == "docker://app-0-app"
    assert {c.type: c.status for c in st.conditions} == {
        "PodScheduled": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }


def test_status_readiness_probe_starts_not_ready() -> None:
    c = container("app")
    c.readiness_probe.exec.command.append("x")
    st = _status(pod("p", c), [sandbox(), ctr()])
    assert not st.container_statuses[0].ready
    assert next(x for x in st.conditions if x.type == "Ready").reason == "ContainersNotReady"


def test_status_crash_loop_and_last_state() -> None:
    st = _status(
        pod("p", container("app")),
        [sandbox(), exited("app", 1, attempt=2, streak=2, started=190, finished=195)],
    )
    (cs,) = st.container_statuses
    assert cs.state.waiting.reason == "CrashLoopBackOff" and "back-off 20s" in cs.state.waiting.message
    assert cs.restart_count == 2
    assert (cs.last_state.terminated.exit_code, cs.last_state.terminated.reason) == (1, "Error")


def test_status_oom_and_never_terminal() -> None:
    st = _status(
        pod("p", container("app"), restart_policy="Never"),
        [sandbox(state=RunState.EXITED), exited("app", 137, oom=True)],
    )
    assert st.phase == "Failed"
    assert st.container_statuses[0].state.terminated.reason == "OOMKilled"
    assert st.container_statuses[0].state.terminated.signal == 9


def test_status_waiting_reasons() -> None:
    p = pod("p", container("app"), init_containers=[container("init")])
    st = _status(p, [sandbox()])
    assert st.phase == "Pending"
    assert st.init_container_statuses[0].state.waiting.reason == "PodInitializing"
    assert st.container_statuses[0].state.waiting.reason == "PodInitializing"
    mem = PodMemory(errors={"app": PendingError("ErrImageNotFound", "image x is missing", 999.0)})
    st = _status(pod("q", container("app")), [sandbox()], mem)
    assert st.container_statuses[0].state.waiting.reason == "ErrImageNotFound"


async def test_status_manager_coalesces_and_skips_unchanged() -> None:
    cp = FakeControlPlane()
    p = cp.put(pod("p", container("app")))
    clock = FakeClock()
    mgr = StatusManager(cp, clock, concurrency=2, qps=0)
    task = asyncio.create_task(mgr.run())
    try:
        for phase in ("Pending", "Pending", "Running", "Running"):
            mgr.set("default", "p", p.metadata.uid, pod_pb2.PodStatus(phase=phase))
        for _ in range(20):
            await asyncio.sleep(0)
        assert [w.status.phase for w in cp.status_writes] == ["Running"]
        mgr.set("default", "p", p.metadata.uid, pod_pb2.PodStatus(phase="Running"))
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(cp.status_writes) == 1  # same as sent: not written again
        cp.fail_status = True
        mgr.set("default", "p", p.metadata.uid, pod_pb2.PodStatus(phase="Succeeded"))
        for _ in range(20):
            await asyncio.sleep(0)
        assert mgr.pending() == 1  # kept for a retry
        cp.fail_status = False
        await clock.advance(2)
        for _ in range(20):
            await asyncio.sleep(0)
        assert [w.status.phase for w in cp.status_writes] == ["Running", "Succeeded"]
    finally:
        task.cancel()


async def test_status_manager_paces_writes() -> None:
    cp = FakeControlPlane()
    pods = [cp.put(pod(f"p{i}", container("app"))) for i in range(30)]
    clock = FakeClock()
    mgr = StatusManager(cp, clock, concurrency=4, qps=10)
    task = asyncio.create_task(mgr.run())
    try:
        for p in pods:
            mgr.set("default", p.metadata.name, p.metadata.uid, pod_pb2.PodStatus(phase="Running"))
        for _ in range(10):
            await asyncio.sleep(0)
        await clock.advance(1.0)
        assert 9 <= len(cp.status_writes) <= 12  # about 10 per second
        for _ in range(30):
            await clock.advance(0.1)
        assert len(cp.status_writes) == 30 and mgr.pending() == 0
    finally:
        task.cancel()


def test_probe_defaults() -> None:
    s = settings(pod_pb2.Probe(), ProbeKind.LIVENESS)
    assert (s.period, s.timeout, s.success_threshold, s.failure_threshold) == (10.0, 1.0, 1, 3)


async def test_tcp_and_http_probes_on_loopback() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        code = b"200 OK" if b"/healthz" in line else b"500 Oops"
        writer.write(b"HTTP/1.1 " + code + b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    prober = Prober(FakeRuntime(FakeClock()))
    target = Target("cid", "127.0.0.1")
    try:
        ok = pod_pb2.Probe(http_get=pod_pb2.HTTPGetAction(path="/healthz", port=port))
        bad = pod_pb2.Probe(http_get=pod_pb2.HTTPGetAction(path="/fail", port=port))
        tcp = pod_pb2.Probe(tcp_socket=pod_pb2.TCPSocketAction(port=port))
        assert (await prober.check(ok, target, 2.0))[0]
        res = await prober.check(bad, target, 2.0)
        assert not res[0] and "500" in res[1]
        assert (await prober.check(tcp, target, 2.0))[0]
    finally:
        server.close()
        await server.wait_closed()
    closed = pod_pb2.Probe(tcp_socket=pod_pb2.TCPSocketAction(port=port))
    assert not (await prober.check(closed, target, 2.0))[0]


async def test_probe_worker_thresholds_on_fake_clock() -> None:
    clock = FakeClock()
    rt = FakeRuntime(clock)
    rt.images.add("img")
    cid = await rt.create_container(
        sandbox_spec(pod("p", container("app")), CFG, 0, "", "").__class__(name="x", image="img", labels={})
    )
    await rt.start_container(cid)
    verdicts: list[bool] = []
    failures: list[str] = []

    async def on_verdict(kind: ProbeKind, c: str, ok: bool, msg: str) -> None:
        verdicts.append(ok)

    probe = pod_pb2.Probe(
        exec=pod_pb2.ExecAction(command=["check"]),
        period_seconds=2,
        failure_threshold=2,
        success_threshold=2,
        initial_delay_seconds=5,
    )
    rt.exec_results[("", ("check",))] = 1
    w = ProbeWorker(
        ProbeKind.READINESS,
        probe,
        Target(cid, ""),
        Prober(rt),
        clock,
        on_verdict,
        lambda k, c, m: failures.append(m),
    )
    task = asyncio.create_task(w.run())
    await asyncio.sleep(0)
    try:
        await clock.advance(4)
        assert rt.exec_log == []  # initial delay
        await clock.advance(1)
        await clock.advance(2)
        assert verdicts == [False] and len(failures) == 2
        rt.exec_results[("", ("check",))] = 0
        await clock.advance(2)
        assert verdicts == [False]  # one success is not enough
        await clock.advance(2)
        assert verdicts == [False, True]
    finally:
        task.cancel()
