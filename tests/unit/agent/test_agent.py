"""The whole agent on fakes: FakeControlPlane (pods, watch, status), FakeRuntime
(containers as scripted records) and FakeClock. Time only moves when the test
advances it, so back-off, grace periods and probes are checked exactly."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pathlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from agent.config import AgentConfig, BackoffPolicy
from agent.daemon import Agent
from agent.runtime import Kind, RunState
from agent.runtime_fake import Behaviour, FakeRuntime
from agent.server import find_container
from cowpod.clock import FakeClock
from cowpod.errors import NotFound
from cowpod.v1 import node_pb2, pod_pb2
from tests.unit.agent.fakes import FakeControlPlane, container, pod

PAUSE = "pause"


@dataclass
class Env:
    clock: FakeClock
    rt: FakeRuntime
    cp: FakeControlPlane
    cfg: AgentConfig
    agent: Agent
    task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.agent.run())
        await self.until(self.agent.ready.is_set)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def until(self, cond: Callable[[], bool], *, step: float = 0.05, limit: float = 600.0) -> None:
        """Advance the fake clock in small steps until cond() holds."""
        waited = 0.0
        for _ in range(20):
            await asyncio.sleep(0)
        while not cond():
            if waited > limit:
                raise AssertionError(f"condition not met after {limit}s of fake time")
            await self.clock.advance(step)
            for _ in range(5):
                await asyncio.sleep(0)
            waited += step

    def status(self, name: str) -> pod_pb2.PodStatus:
        p = self.cp.get(name)
        assert p is not None
        return p.status

    def app(self, name: str, cname: str = "app") -> pod_pb2.ContainerStatus:
        return next(c for c in self.status(name).container_statuses if c.name == cname)

    def restart_agent(self) -> Agent:
        self.agent = Agent(self.cfg, self.cp, self.rt, clock=self.clock)
        return self.agent


def make_env(tmp_path: pathlib.Path, **overrides: object) -> Env:
    (tmp_path / "memory").mkdir(exist_ok=True)
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(str(4 * 2**30))
    (tmp_path / "cpu").mkdir(exist_ok=True)
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    clock = FakeClock()
    rt = FakeRuntime(clock, "node-1")
    rt.images |= {"img", PAUSE, "crash", "stubborn", "quick"}
    rt.behaviour["crash"] = Behaviour(exit_code=1, runs_for=1.0, logs=b"boom\n")
    rt.behaviour["stubborn"] = Behaviour(ignores_sigterm=True)
    rt.behaviour["quick"] = Behaviour(exit_code=0, runs_for=1.0, logs=b"done\n")
    cp = FakeControlPlane()
    kw: dict[str, object] = {
        "controller": "fake",
        "node_name": "node-1",
        "pause_image": PAUSE,
        "heartbeat_seconds": 10.0,
        "resync_seconds": 10.0,
        "backoff": BackoffPolicy(initial=10, maximum=40, reset_after=600),
        "image_backoff": BackoffPolicy(initial=10, maximum=40),
        "status_qps": 0.0,
        "cgroup_root": str(tmp_path),
        **overrides,
    }
    cfg = AgentConfig(**kw)  # type: ignore[arg-type]
    return Env(clock, rt, cp, cfg, Agent(cfg, cp, rt, clock=clock))


@pytest.fixture
async def env(tmp_path: pathlib.Path) -> AsyncIterator[Env]:
    e = make_env(tmp_path)
    await e.start()
    try:
        yield e
    finally:
        await e.stop()


async def test_registers_capacity_from_cgroup_minus_reserve(env: Env) -> None:
    node = env.cp.nodes["node-1"]
    assert node.status.capacity.cpu_millis == 2000
    assert node.status.capacity.memory_bytes == 4 * 2**30
    assert node.status.allocatable.cpu_millis == 1900
    assert node.status.allocatable.memory_bytes == 4 * 2**30 - 64 * 2**20
    assert node.status.capacity.pods == 110
    # The engine names no data root here, so the disk of "/" is measured; 1Gi is kept back.
    st = os.statvfs("/")
    assert node.status.capacity.ephemeral_storage_bytes == st.f_blocks * st.f_frsize
    assert node.status.allocatable.ephemeral_storage_bytes == max(1, st.f_blocks * st.f_frsize - 2**30)
    assert {a.type for a in node.status.addresses} == {"InternalIP", "Hostname"}
    assert node.status.node_info.container_runtime_version == "docker://fake-1.0"
    await env.until(lambda: env.cp.heartbeats >= 2)


async def test_node_is_not_ready_while_the_engine_does_not_answer(env: Env) -> None:
    def ready() -> tuple[str, str, str]:
        c = env.cp.node_statuses[-1].conditions[0]
        return c.status, c.reason, c.message

    await env.until(lambda: env.cp.heartbeats >= 1)
    assert ready()[:2] == ("True", "AgentReady")
    env.rt.engine_down = "Cannot connect to the Docker daemon"
    beats = env.cp.heartbeats
    await env.until(lambda: env.cp.heartbeats > beats)
    down = "container runtime is down: Cannot connect to the Docker daemon"
    assert ready() == ("False", "AgentNotReady", down)
    env.rt.engine_down = ""
    beats = env.cp.heartbeats
    await env.until(lambda: env.cp.heartbeats > beats)
    assert ready()[:2] == ("True", "AgentReady")


async def test_heartbeats_carry_the_status_on_change_or_every_report_period(tmp_path: pathlib.Path) -> None:
    """As kubelet: the lease is renewed every beat, the status posted when it changed
    (lastHeartbeatTime aside), every beat while the node is not ready, or
    status_report_seconds after the last report."""
    e = make_env(tmp_path, status_report_seconds=60.0)
    await e.start()
    try:
        statuses = e.cp.node_statuses
        await e.until(lambda: e.cp.heartbeats >= 1)
        assert len(statuses) == 1  # the first beat reports
        await e.until(lambda: e.cp.heartbeats >= 4)  # ~30 s: nothing changed
        assert len(statuses) == 1
        e.rt.engine_down = "Cannot connect to the Docker daemon"
        beats = e.cp.heartbeats
        await e.until(lambda: e.cp.heartbeats >= beats + 3)
        assert len(statuses) == 4  # a change goes at once, and a not-ready node reports every beat
        assert [s.conditions[0].status for s in statuses[1:]] == ["False"] * 3
        e.rt.engine_down = ""
        beats = e.cp.heartbeats
        await e.until(lambda: e.cp.heartbeats > beats)
        assert len(statuses) == 5 and statuses[-1].conditions[0].status == "True"
        reported = len(statuses)
        beats = e.cp.heartbeats
        await e.until(lambda: len(statuses) > reported)  # unchanged, but due again
        assert 5 <= e.cp.heartbeats - beats <= 8  # 60 s of ~10 s beats, none of them reporting
        first, again = statuses[-2], statuses[-1]
        assert again.conditions[0].last_heartbeat_time.ToNanoseconds() > \
            first.conditions[0].last_heartbeat_time.ToNanoseconds()
        reported = len(statuses)
        del e.cp.nodes["node-1"]  # the node object was deleted: register, then report again
        beats = e.cp.heartbeats
        await e.until(lambda: "node-1" in e.cp.nodes and e.cp.heartbeats > beats + 1)
        assert len(statuses) == reported + 1
    finally:
        await e.stop()


async def test_after_failed_heartbeats_the_next_one_carries_the_status(tmp_path: pathlib.Path) -> None:
    """Heartbeats that fail (the controller unreachable) let the node's lease lapse, and node
    lifecycle then rewrites its Ready condition (Unknown, then True once the lease is renewed):
    what the agent last reported may no longer be in the store, so the first beat that gets
    through carries the status again, and later unchanged beats do not."""
    e = make_env(tmp_path)  # status_report_seconds: the default 300
    await e.start()
    try:
        await e.until(lambda: e.cp.heartbeats >= 3)
        reported = len(e.cp.node_statuses)
        assert reported == 1  # ready and unchanged: reported once
        renew = e.cp.heartbeat
        failed = 0

        async def unreachable(node_name: str, status: node_pb2.NodeStatus | None) -> bool:
            nonlocal failed
            failed += 1
            raise ConnectionError("controller unreachable")

        e.cp.heartbeat = unreachable  # type: ignore[method-assign]
        await e.until(lambda: failed >= 5)  # ~50 s: longer than node lifecycle's grace
        e.cp.heartbeat = renew  # type: ignore[method-assign]
        beats = e.cp.heartbeats
        await e.until(lambda: e.cp.heartbeats > beats)
        assert len(e.cp.node_statuses) == reported + 1
        beats = e.cp.heartbeats
        await e.until(lambda: e.cp.heartbeats > beats + 1)
        assert len(e.cp.node_statuses) == reported + 1  # and then unchanged again
    finally:
        await e.stop()


async def test_pod_runs_then_is_deleted_with_grace(env: Env) -> None:
    env.cp.put(pod("web", container("app", "img")))
    await env.until(lambda: env.status("web").phase == "Running")
    st = env.status("web")
    assert st.pod_ip.startswith("10.0.0.")
    assert [c.type for c in st.conditions] == ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
    assert all(c.status == "True" for c in st.conditions)
    assert env.app("web").state.HasField("running")
    assert [c.info.kind for c in env.rt.containers.values()] == [Kind.SANDBOX, Kind.APP]

    env.cp.delete("web", grace=5)
    await env.until(lambda: env.cp.get("web") is None)
    assert env.rt.containers == {}
    assert env.cp.finalized == ["web"]
    assert "signal SIGTERM app" in env.rt.calls and "signal SIGKILL app" not in env.rt.calls
    for reason in ("Pulled", "Created", "Started", "Killing"):
        assert reason in env.cp.reasons()


async def test_sigterm_ignored_means_sigkill_after_grace(env: Env) -> None:
    env.cp.put(pod("s", container("app", "stubborn")))
    await env.until(lambda: env.status("s").phase == "Running")
    env.cp.delete("s", grace=3)
    start = env.clock.monotonic()
    await env.until(lambda: env.cp.get("s") is None)
    assert env.clock.monotonic() - start >= 3.0
    assert "signal SIGKILL app" in env.rt.calls


async def test_crash_loop_backs_off_and_counts_restarts(env: Env) -> None:
    env.cp.put(pod("c", container("app", "crash")))
    starts: list[float] = []

    def started() -> int:
        for c in env.rt.containers.values():
            if c.info.name == "app" and c.info.started_at is not None and c.info.started_at not in starts:
                starts.append(c.info.started_at)
        return len(starts)

    await env.until(lambda: started() >= 5, step=0.25)
    # exits after 1s each; restarts after 0, 10, 20, 40 s of back-off
    gaps = [round(b - a - 1.0) for a, b in itertools.pairwise(starts)]
    assert gaps == [0, 10, 20, 40]
    await env.until(lambda: env.app("c").restart_count == 4)
    await env.until(lambda: env.app("c").state.waiting.reason == "CrashLoopBackOff")
    last = env.app("c").last_state.terminated
    assert (last.exit_code, last.reason) == (1, "Error")
    assert env.status("c").phase == "Running"
    assert "BackOff" in env.cp.reasons()
    # only the newest dead instance is kept besides the current one
    assert len([c for c in env.rt.containers.values() if c.info.name == "app"]) <= 2


async def test_logs_previous_of_a_crash_looping_container_is_its_last_run(env: Env) -> None:
    """#16: `cowpod logs --previous` answered "not found" for a container waiting out
    its back-off: it took the second newest instance, which garbage collection had
    removed. Like kubelet, it is the instance `lastState.terminated` names."""
    env.cp.put(pod("c", container("app", "crash")))
    await env.until(
        lambda: env.app("c").restart_count >= 2 and env.app("c").state.waiting.reason == "CrashLoopBackOff",
        step=0.25,
    )
    got = await find_container(env.agent, "default", "c", "app", previous=True)
    assert f"docker://{got.id}" == env.app("c").last_state.terminated.container_id
    assert got.dead and got.attempt == env.app("c").restart_count
    assert b"".join([b async for b in env.rt.logs(got.id)]) == b"boom\n"


async def test_logs_previous_of_a_restarted_running_container_is_the_one_before(env: Env) -> None:
    env.rt.images.add("once")
    env.rt.behaviour["once"] = Behaviour(exit_code=1, runs_for=1.0, logs=b"first\n")
    env.cp.put(pod("r", container("app", "once")))
    await env.until(lambda: env.app("r").restart_count == 1, step=0.25)
    env.rt.behaviour["once"] = Behaviour(logs=b"second\n")  # the next instance keeps running
    await env.until(lambda: env.app("r").restart_count == 2 and env.app("r").state.HasField("running"))
    got = await find_container(env.agent, "default", "r", "app", previous=True)
    assert f"docker://{got.id}" == env.app("r").last_state.terminated.container_id
    assert got.attempt == 1


async def test_logs_previous_without_a_restart_is_not_found(env: Env) -> None:
    env.cp.put(pod("n", container("app", "crash"), restart_policy="Never"))
    await env.until(lambda: env.status("n").phase == "Failed")
    with pytest.raises(NotFound, match='previous terminated container "app" in pod "n" not found'):
        await find_container(env.agent, "default", "n", "app", previous=True)


async def test_never_restart_pod_fails_and_stops_sandbox(env: Env) -> None:
    env.cp.put(pod("n", container("app", "crash"), restart_policy="Never"))
    await env.until(lambda: env.status("n").phase == "Failed")
    term = env.app("n").state.terminated
    assert (term.exit_code, term.reason) == (1, "Error")
    await env.until(lambda: not env.rt.running())
    assert env.app("n").restart_count == 0


async def test_on_failure_success_completes(env: Env) -> None:
    env.cp.put(pod("q", container("app", "quick"), restart_policy="OnFailure"))
    await env.until(lambda: env.status("q").phase == "Succeeded")
    assert env.app("q").state.terminated.reason == "Completed"
    ready = next(c for c in env.status("q").conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "PodCompleted")


async def test_init_containers_run_in_order_before_apps(env: Env) -> None:
    p = pod(
        "i", container("app", "img"), init_containers=[container("one", "quick"), container("two", "quick")]
    )
    env.cp.put(p)
    await env.until(lambda: env.status("i").phase == "Running")
    order = [c for c in env.rt.calls if c.startswith("start ") and "POD" not in c]
    assert order == ["start one#0", "start two#0", "start app#0"]
    inits = env.status("i").init_container_statuses
    assert [s.state.terminated.reason for s in inits] == ["Completed", "Completed"]


async def test_missing_image_waits_with_reason_and_event(env: Env) -> None:
    env.cp.put(pod("m", container("app", "nope:1", image_pull_policy="Never")))
    await env.until(lambda: env.app("m").state.waiting.reason == "ErrImageNotFound")
    assert env.status("m").phase == "Pending"
    assert any(e.reason == "Failed" and "ErrImageNotFound" in e.message for e in env.cp.events)
    env.rt.images.add("nope:1")  # the image appears: the next retry starts it
    await env.until(lambda: env.status("m").phase == "Running")


async def test_pull_failure_is_image_pull_backoff(env: Env) -> None:
    env.cp.put(pod("pf", container("app", "remote:1")))
    await env.until(lambda: env.app("pf").state.waiting.reason == "ImagePullBackOff")
    env.rt.pullable.add("remote:1")
    await env.until(lambda: env.status("pf").phase == "Running")
    assert "Pulled" in env.cp.reasons()


async def test_admission_rejects_what_does_not_fit(env: Env) -> None:
    big = container("app", "img")
    big.resources.requests.memory_bytes = 8 * 2**30
    env.cp.put(pod("big", big))
    await env.until(lambda: env.status("big").phase == "Failed")
    assert env.status("big").reason == "OutOfmemory"
    assert "enough resource: memory" in env.status("big").message
    assert not [c for c in env.rt.containers.values() if c.info.pod_name == "big"]
    cpu = container("app", "img")
    cpu.resources.requests.cpu_millis = 1901
    env.cp.put(pod("cpu", cpu))
    await env.until(lambda: env.status("cpu").reason == "OutOfcpu")


async def test_host_path_refused_unless_allowed(env: Env) -> None:
    p = pod(
        "hp",
        container("app", "img"),
        volumes=[pod_pb2.Volume(name="h", host_path=pod_pb2.HostPathVolumeSource(path="/tmp"))],
    )
    env.cp.put(p)
    await env.until(lambda: env.status("hp").reason == "HostPathNotAllowed")


async def test_liveness_failure_restarts_container(env: Env) -> None:
    c = container("app", "img")
    c.liveness_probe.exec.command.extend(["check"])
    c.liveness_probe.period_seconds = 1
    c.liveness_probe.failure_threshold = 2
    env.cp.put(pod("l", c))
    await env.until(lambda: env.status("l").phase == "Running")
    first = env.rt.running("app")[0].id
    env.rt.exec_results[("app", ("check",))] = 1
    await env.until(lambda: env.app("l").restart_count == 1)
    assert env.rt.containers[first].info.state == RunState.EXITED
    assert "Unhealthy" in env.cp.reasons()
    assert any("failed liveness probe" in e.message for e in env.cp.events if e.reason == "Killing")


async def test_readiness_flips_ready(env: Env) -> None:
    c = container("app", "img")
    c.readiness_probe.exec.command.extend(["ready?"])
    c.readiness_probe.period_seconds = 1
    c.readiness_probe.failure_threshold = 1
    env.rt.exec_results[("app", ("ready?",))] = 1
    env.cp.put(pod("r", c))

    def ready() -> str:
        return (
            next(x.status for x in env.status("r").conditions if x.type == "Ready")
            if env.status("r").conditions
            else ""
        )

    await env.until(lambda: env.status("r").phase == "Running")
    await env.until(lambda: ready() == "False")
    env.rt.exec_results[("app", ("ready?",))] = 0
    await env.until(lambda: ready() == "True")
    assert env.app("r").ready
    env.rt.exec_results[("app", ("ready?",))] = 1
    await env.until(lambda: ready() == "False")


async def test_startup_probe_gates_liveness(env: Env) -> None:
    c = container("app", "img")
    c.startup_probe.exec.command.extend(["started?"])
    c.startup_probe.period_seconds = 1
    c.startup_probe.failure_threshold = 30
    c.liveness_probe.exec.command.extend(["alive?"])
    c.liveness_probe.period_seconds = 1
    env.rt.exec_results[("app", ("started?",))] = 1
    env.cp.put(pod("st", c))
    await env.until(lambda: env.status("st").phase == "Running")
    await env.clock.advance(5)
    assert not any(cmd == ("alive?",) for _, cmd in env.rt.exec_log)
    assert not env.app("st").started
    env.rt.exec_results[("app", ("started?",))] = 0
    await env.until(lambda: env.app("st").started)
    await env.until(lambda: any(cmd == ("alive?",) for _, cmd in env.rt.exec_log))


async def test_agent_restart_adopts_containers(tmp_path: pathlib.Path) -> None:
    env = make_env(tmp_path)
    await env.start()
    c = container("app", "img")
    c.readiness_probe.exec.command.extend(["ok"])
    c.readiness_probe.period_seconds = 1
    env.cp.put(pod("keep", c))
    await env.until(lambda: env.status("keep").phase == "Running" and env.app("keep").ready)
    ids = sorted(env.rt.containers)
    await env.stop()  # like kill -9: nothing is stopped

    env.restart_agent()
    writes = len(env.cp.status_writes)
    await env.start()
    await env.clock.advance(15)
    try:
        assert sorted(env.rt.containers) == ids
        assert env.app("keep").restart_count == 0
        assert env.app("keep").ready  # carried over, no flap to not-ready
        assert not [c for c in env.rt.calls if c.startswith("signal")]
        assert len(env.cp.status_writes) == writes  # nothing changed: nothing written
    finally:
        await env.stop()


async def test_orphans_are_collected_after_sync(env: Env) -> None:
    env.cp.put(pod("o", container("app", "img")))
    await env.until(lambda: env.status("o").phase == "Running")
    env.cp.remove("o")  # gone from the API without a graceful delete
    await env.until(lambda: not env.rt.containers)
    assert not env.rt.volumes


async def test_emptydir_volume_made_and_removed(env: Env) -> None:
    c = container("app", "img")
    c.volume_mounts.add(name="scratch", mount_path="/data")
    p = pod("v", c, volumes=[pod_pb2.Volume(name="scratch", empty_dir=pod_pb2.EmptyDirVolumeSource())])
    env.cp.put(p)
    await env.until(lambda: env.status("v").phase == "Running")
    assert len(env.rt.volumes) == 1
    (spec,) = [x.spec for x in env.rt.containers.values() if x.info.name == "app"]
    assert [(m.kind, m.target) for m in spec.mounts] == [("volume", "/data")]
    env.cp.delete("v", grace=1)
    await env.until(lambda: env.cp.get("v") is None)
    assert env.rt.volumes == {}


async def test_hundred_pods_status_writes_are_coalesced(env: Env) -> None:
    for i in range(100):
        env.cp.put(pod(f"p{i}", container("app", "img")))
    await env.until(lambda: all(env.status(f"p{i}").phase == "Running" for i in range(100)))
    # each pod: at most Pending then Running (often just Running), never a write per step
    assert len(env.cp.status_writes) <= 200
    writes = len(env.cp.status_writes)
    await env.clock.advance(60)  # resyncs find nothing new: nothing is written
    assert len(env.cp.status_writes) == writes


async def test_deleted_node_object_is_registered_again(env: Env) -> None:
    del env.cp.nodes["node-1"]
    await env.until(lambda: "node-1" in env.cp.nodes, step=1.0)


async def test_pods_over_their_disk_limits_are_evicted(env: Env) -> None:
    """#15 hole 5: emptyDir sizeLimit and limits.ephemeral-storage, measured each resync."""
    c = container("app", "img")
    c.volume_mounts.add(name="scratch", mount_path="/data")
    vol = pod_pb2.Volume(name="scratch", empty_dir=pod_pb2.EmptyDirVolumeSource(size_limit_bytes=1000))
    env.cp.put(pod("fill", c, volumes=[vol]))
    layered = container("app", "img")
    layered.resources.limits.ephemeral_storage_bytes = 1000
    env.cp.put(pod("layer", layered))
    env.cp.put(pod("free", container("app", "img")))
    await env.until(lambda: all(env.status(n).phase == "Running" for n in ("fill", "layer", "free")))
    (vname,) = env.rt.volumes
    env.rt.volume_bytes[vname] = 999
    (cid,) = [x.info.id for x in env.rt.containers.values()
              if x.info.pod_name == "layer" and x.info.name == "app"]
    env.rt.layer_bytes[cid] = 1000
    await env.clock.advance(30)
    for _ in range(20):
        await asyncio.sleep(0)
    names = ("fill", "layer", "free")
    assert {n: env.status(n).phase for n in names} == dict.fromkeys(names, "Running")  # at the limit: kept
    env.rt.volume_bytes[vname] = 1001
    env.rt.layer_bytes[cid] = 5000
    await env.until(lambda: env.status("fill").phase == "Failed" and env.status("layer").phase == "Failed")
    assert env.status("fill").reason == env.status("layer").reason == "Evicted"
    assert 'EmptyDir volume "scratch" exceeds' in env.status("fill").message
    assert "ephemeral storage limit" in env.status("layer").message
    assert env.status("free").phase == "Running"
    # ... and its containers stopped (after their grace period).
    await env.until(lambda: not [x for x in env.rt.containers.values()
                                 if x.info.pod_name == "fill" and x.info.state == RunState.RUNNING])
