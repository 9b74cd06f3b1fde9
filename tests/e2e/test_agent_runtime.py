"""The agent's kubelet-like runtime on the real Docker engine and a real
controller on etcd. Pods are bound by the test (no scheduler); the agent runs
in-process on the host's Docker (no VM container, except in the nesting test).
Short grace periods and a 1 s doubling back-off keep the module quick."""

from __future__ import annotations

import asyncio
import json
import pathlib
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from agent.hostpath import HostPathPrefix
from agent.testing import (
    BUSYBOX,
    AgentRunner,
    cleanup_docker,
    create_and_bind,
    ensure_images,
    gone,
    make_pod,
    phase_is,
    wait_pod,
)
from cowpod.client import Client
from cowpod.v1 import event_pb2, meta_pb2, pod_pb2
from tests.polling import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def images() -> None:
    ensure_images()


@pytest.fixture
async def node(controller: Any, images: None, tmp_path: pathlib.Path) -> AsyncIterator[AgentRunner]:
    name = f"agent-{uuid.uuid4().hex[:8]}"
    cleanup_docker(name)
    runner = AgentRunner(
        controller.address, name, listen=f"unix://{tmp_path}/agent.sock",
        host_path_prefixes=(HostPathPrefix(str(tmp_path), writable=True),),
    )
    try:
        await runner.start()
        yield runner
    finally:
        await runner.stop()
        cleanup_docker(name)


def key(name: str) -> meta_pb2.ObjectKey:
    return meta_pb2.ObjectKey(namespace="default", name=name)


def sh(name: str, script: str, **kw: Any) -> pod_pb2.Container:
    return pod_pb2.Container(
        name=name, image=BUSYBOX, command=["/bin/sh", "-c", script], image_pull_policy="IfNotPresent", **kw
    )


def docker(*args: str) -> str:
    """A docker CLI call (blocking; short)."""
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def inspect(cid: str) -> dict[str, Any]:
    out = subprocess.run(["docker", "inspect", cid], check=True, capture_output=True, text=True).stdout
    info: dict[str, Any] = json.loads(out)[0]
    return info


def cstatus(pod: pod_pb2.Pod, name: str) -> pod_pb2.ContainerStatus:
    return next(c for c in pod.status.container_statuses if c.name == name)


def condition(pod: pod_pb2.Pod, type_: str) -> str:
    return next((c.status for c in pod.status.conditions if c.type == type_), "")


async def logs(client: Client, name: str, **kw: Any) -> str:
    chunks = [c.data async for c in client.pods.Logs(pod_pb2.LogsRequest(pod=key(name), **kw))]
    return b"".join(chunks).decode()


async def exec_(client: Client, name: str, container: str, *cmd: str) -> pod_pb2.ExecResponse:
    return await client.pods.Exec(pod_pb2.ExecRequest(pod=key(name), container=container, command=list(cmd)))


async def events_of(client: Client, name: str) -> list[event_pb2.Event]:
    res = await client.events.List(
        event_pb2.ListEventsRequest(
            list=meta_pb2.ListOptions(namespace="default"),
            involved_object=event_pb2.ObjectReference(kind="Pod", namespace="default", name=name),
        )
    )
    return list(res.items)


async def test_containers_share_localhost_env_resources_and_exec(node: AgentRunner, client: Client) -> None:
    web = sh("web", "mkdir -p /www && echo hi from web > /www/index.html && exec httpd -f -p 8080 -h /www")
    web.resources.limits.cpu_millis = 250
    web.resources.limits.memory_bytes = 32 * 2**20
    web.ports.add(container_port=8080)
    tool = sh("tool", "sleep 1000")
    tool.env.add(name="GREETING", value="hello")
    tool.env.add(name="MSG", value="$(GREETING) world")
    tool.env.add(name="MY_NAME").value_from.field_ref.field_path = "metadata.name"
    tool.env.add(name="MY_IP").value_from.field_ref.field_path = "status.podIP"
    tool.working_dir = "/tmp"
    await create_and_bind(client, make_pod("duo", web, tool), node.config.node_name)
    pod = await wait_pod(client, "duo", phase_is("Running"))
    assert pod.status.pod_ip

    async def served() -> pod_pb2.ExecResponse | None:  # httpd may need a moment to listen
        got = await exec_(client, "duo", "tool", "wget", "-qO-", "http://127.0.0.1:8080/index.html")
        return got if got.exit_code == 0 else None

    got = await eventually(served, timeout=10, what="the web container serving on localhost")
    assert got.stdout == b"hi from web\n"

    env = await exec_(client, "duo", "tool", "sh", "-c", 'echo "$MSG|$MY_NAME|$MY_IP|$(pwd)"')
    assert env.stdout.decode().strip() == f"hello world|duo|{pod.status.pod_ip}|/tmp"
    failed = await exec_(client, "duo", "tool", "sh", "-c", "echo oops >&2; exit 3")
    assert (failed.exit_code, failed.stderr) == (3, b"oops\n")

    info = inspect(cstatus(pod, "web").container_id.removeprefix("docker://"))
    assert info["HostConfig"]["NanoCpus"] == 250_000_000
    assert info["HostConfig"]["Memory"] == 32 * 2**20
    labels = info["Config"]["Labels"]
    assert labels["cowpod.pod.name"] == "duo" and labels["cowpod.container.name"] == "web"
    assert labels["cowpod.managed"] == "1" and labels["cowpod.node"] == node.config.node_name
    assert info["HostConfig"]["NetworkMode"].startswith("container:")

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await logs(client, "duo")  # two containers: which one?
    assert "choose one of" in (err.value.details() or "")


async def test_empty_dir_is_shared_and_removed_with_pod(node: AgentRunner, client: Client) -> None:
    writer = sh("writer", "echo shared-bytes > /data/f && sleep 1000")
    reader = sh("reader", "sleep 1000")
    for c in (writer, reader):
        c.volume_mounts.add(name="scratch", mount_path="/data")
    vol = pod_pb2.Volume(name="scratch", empty_dir=pod_pb2.EmptyDirVolumeSource())
    created = await create_and_bind(
        client, make_pod("share", writer, reader, volumes=[vol]), node.config.node_name
    )
    await wait_pod(client, "share", phase_is("Running"))
    async def written() -> pod_pb2.ExecResponse | None:
        got = await exec_(client, "share", "reader", "cat", "/data/f")
        return got if got.exit_code == 0 else None

    got = await eventually(written, timeout=10, what="the writer's file seen by the reader")
    assert got.stdout == b"shared-bytes\n"
    flt = f"label=cowpod.pod.uid={created.metadata.uid}"
    assert len(docker("volume", "ls", "-q", "--filter", flt).split()) == 1

    await client.pods.Delete(meta_pb2.DeleteOptions(key=key("share")))
    await wait_pod(client, "share", gone, timeout=30)
    assert docker("volume", "ls", "-q", "--filter", flt).split() == []
    assert docker("ps", "-aq", "--filter", flt).split() == []


async def test_init_containers_run_in_order_first(node: AgentRunner, client: Client) -> None:
    inits = [sh("one", "echo one >> /w/log"), sh("two", "echo two >> /w/log")]
    app = sh("app", "cat /w/log; echo app; sleep 1000")
    for c in (*inits, app):
        c.volume_mounts.add(name="w", mount_path="/w")
    p = make_pod(
        "inits",
        app,
        init_containers=inits,
        volumes=[pod_pb2.Volume(name="w", empty_dir=pod_pb2.EmptyDirVolumeSource())],
    )
    await create_and_bind(client, p, node.config.node_name)
    pod = await wait_pod(client, "inits", phase_is("Running"))
    assert [s.state.terminated.reason for s in pod.status.init_container_statuses] == [
        "Completed",
        "Completed",
    ]
    one, two = (s.state.terminated for s in pod.status.init_container_statuses)
    assert one.finished_at.ToNanoseconds() <= two.started_at.ToNanoseconds()
    assert condition(pod, "Initialized") == "True"
    async def app_logged() -> str | None:
        out = await logs(client, "inits")
        return out if "app" in out else None

    out = await eventually(app_logged, timeout=10, what="the app container's line in the logs")
    assert out == "one\ntwo\napp\n"
    assert await logs(client, "inits", container="two") == ""


async def test_crash_loop_counts_restarts_with_growing_backoff(node: AgentRunner, client: Client) -> None:
    # Every status the agent writes is seen through a watch, so a short
    # CrashLoopBackOff window is never missed, however loaded the machine.
    seen: list[pod_pb2.Pod] = []
    opts = meta_pb2.WatchOptions(
        list=meta_pb2.ListOptions(namespace="default", field_selector="metadata.name=crash")
    )

    async def watch() -> None:
        async for ev in client.pods.Watch(opts):
            if ev.type in (meta_pb2.ADDED, meta_pb2.MODIFIED):
                seen.append(ev.object)

    watcher = asyncio.ensure_future(watch())
    try:
        await create_and_bind(client, make_pod("crash", ("app", "sleep 1; exit 2")), node.config.node_name)
        await wait_pod(
            client,
            "crash",
            lambda p: (
                p is not None
                and bool(p.status.container_statuses)
                and p.status.container_statuses[0].restart_count >= 3
                and p.status.container_statuses[0].state.HasField("running")
            ),
            timeout=120,
        )
        # The watch delivers what the agent wrote: wait until it has delivered that state too.
        await eventually(
            lambda: any(
                p.status.container_statuses
                and p.status.container_statuses[0].restart_count >= 3
                and p.status.container_statuses[0].state.HasField("running")
                for p in seen
            ),
            timeout=30,
            what="the watch to deliver the third restart",
        )
    finally:
        watcher.cancel()
    statuses = [p.status.container_statuses[0] for p in seen if p.status.container_statuses]
    assert any(cs.state.waiting.reason == "CrashLoopBackOff" for cs in statuses)
    gaps: dict[int, float] = {}
    for cs in statuses:
        if cs.state.HasField("running") and cs.restart_count >= 1:
            last = cs.last_state.terminated
            assert (last.exit_code, last.reason) == (2, "Error")
            gap = cs.state.running.started_at.ToNanoseconds() - last.finished_at.ToNanoseconds()
            gaps[cs.restart_count] = gap / 1e9
    # back-off 0, 1, 2, 4 s before restarts 1, 2, 3, 4... (initial 1 s, doubling, max 4 s)
    assert any(n >= 3 for n in gaps), gaps
    for n, gap in gaps.items():
        assert gap >= (0.0 if n == 1 else min(2.0 ** (n - 2), 4.0)) - 0.1, gaps
    reasons = [e.reason for e in await events_of(client, "crash")]
    assert "BackOff" in reasons and "Started" in reasons


async def test_memory_limit_exceeded_is_oomkilled(node: AgentRunner, client: Client) -> None:
    hog = sh("hog", "head -c 200m /dev/zero | tail")
    hog.resources.limits.memory_bytes = 16 * 2**20
    await create_and_bind(client, make_pod("oom", hog, restart_policy="Never"), node.config.node_name)
    pod = await wait_pod(client, "oom", phase_is("Failed"), timeout=60)
    term = cstatus(pod, "hog").state.terminated
    assert term.reason == "OOMKilled", term
    assert term.exit_code != 0


async def test_liveness_failure_restarts_container(node: AgentRunner, client: Client) -> None:
    c = sh("app", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 1000")
    c.liveness_probe.exec.command.extend(["cat", "/tmp/healthy"])
    c.liveness_probe.period_seconds = 1
    c.liveness_probe.failure_threshold = 1
    await create_and_bind(client, make_pod("live", c), node.config.node_name)
    pod = await wait_pod(
        client,
        "live",
        lambda p: p is not None and p.status.container_statuses and cstatus(p, "app").restart_count >= 1,
        timeout=60,
    )
    assert cstatus(pod, "app").last_state.terminated.container_id
    reasons = [e.reason for e in await events_of(client, "live")]
    assert "Unhealthy" in reasons and "Killing" in reasons


async def test_readiness_probe_flips_ready(node: AgentRunner, client: Client) -> None:
    c = sh("app", "sleep 1000")
    c.readiness_probe.exec.command.extend(["cat", "/tmp/ready"])
    c.readiness_probe.period_seconds = 1
    c.readiness_probe.failure_threshold = 1
    await create_and_bind(client, make_pod("ready", c), node.config.node_name)
    pod = await wait_pod(client, "ready", phase_is("Running"))
    assert condition(pod, "Ready") == "False"
    await exec_(client, "ready", "app", "touch", "/tmp/ready")
    pod = await wait_pod(client, "ready", lambda p: condition(p, "Ready") == "True")
    assert cstatus(pod, "app").ready and condition(pod, "ContainersReady") == "True"
    await exec_(client, "ready", "app", "rm", "/tmp/ready")
    await wait_pod(client, "ready", lambda p: condition(p, "Ready") == "False")


async def _watch_until_deleted(client: Client, name: str, sink: list[pod_pb2.Pod]) -> None:
    opts = meta_pb2.WatchOptions(
        list=meta_pb2.ListOptions(namespace="default", field_selector=f"metadata.name={name}")
    )
    async for ev in client.pods.Watch(opts):
        if ev.type == meta_pb2.DELETED:
            return
        if ev.type != meta_pb2.BOOKMARK:
            sink.append(ev.object)


async def test_sigterm_cleanup_inside_grace_and_sigkill_after_it(
    node: AgentRunner, client: Client, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    polite = sh(
        "polite",
        "trap 'echo cleaning > /out/polite; sleep 1; echo done >> /out/polite; exit 0' TERM; "
        "touch /out/polite-up; while true; do sleep 0.2; done",
    )
    rude = sh("rude", "trap '' TERM; touch /out/rude-up; while true; do sleep 0.2; done")
    for c in (polite, rude):
        c.volume_mounts.add(name="out", mount_path="/out")
    vol = pod_pb2.Volume(name="out", host_path=pod_pb2.HostPathVolumeSource(path=str(out)))
    p = make_pod("term", polite, rude, volumes=[vol], termination_grace_period_seconds=4)
    await create_and_bind(client, p, node.config.node_name)
    await wait_pod(client, "term", phase_is("Running"))
    await eventually(
        lambda: (out / "polite-up").exists() and (out / "rude-up").exists(),
        timeout=10,
        what="both containers up (their marker files)",
    )

    seen: list[pod_pb2.Pod] = []
    watcher = asyncio.ensure_future(_watch_until_deleted(client, "term", seen))
    loop = asyncio.get_running_loop()
    start = loop.time()
    await client.pods.Delete(meta_pb2.DeleteOptions(key=key("term")))
    await asyncio.wait_for(watcher, 30)
    took = loop.time() - start

    assert (out / "polite").read_text() == "cleaning\ndone\n"
    assert took >= 3.5  # the rude one held on until the 4 s grace ran out
    final = seen[-1]
    assert cstatus(final, "polite").state.terminated.exit_code == 0
    assert cstatus(final, "rude").state.terminated.exit_code == 137
    reasons = [e.reason for e in await events_of(client, "term")]
    assert "Killing" in reasons


async def test_pre_stop_hook_runs_before_sigterm(
    node: AgentRunner, client: Client, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "hook"
    out.mkdir()
    c = sh("app", "trap 'echo term >> /out/log; exit 0' TERM; while true; do sleep 0.2; done")
    c.lifecycle.pre_stop.exec.command.extend(["sh", "-c", "echo prestop >> /out/log"])
    c.volume_mounts.add(name="out", mount_path="/out")
    vol = pod_pb2.Volume(name="out", host_path=pod_pb2.HostPathVolumeSource(path=str(out)))
    await create_and_bind(client, make_pod("hook", c, volumes=[vol]), node.config.node_name)
    await wait_pod(client, "hook", phase_is("Running"))
    await client.pods.Delete(meta_pb2.DeleteOptions(key=key("hook")))
    await wait_pod(client, "hook", gone, timeout=30)
    assert (out / "log").read_text() == "prestop\nterm\n"


async def test_missing_image_is_err_image_not_found(node: AgentRunner, client: Client) -> None:
    c = pod_pb2.Container(name="app", image="cowpod/not-built-anywhere:1", image_pull_policy="Never")
    await create_and_bind(client, make_pod("noimg", c), node.config.node_name)
    pod = await wait_pod(
        client,
        "noimg",
        lambda p: (
            p is not None
            and p.status.container_statuses
            and cstatus(p, "app").state.waiting.reason == "ErrImageNotFound"
        ),
    )
    assert pod.status.phase == "Pending"
    assert "not present" in cstatus(pod, "app").state.waiting.message
    events = await events_of(client, "noimg")
    assert any(e.type == "Warning" and "ErrImageNotFound" in e.message for e in events)
    await client.pods.Delete(meta_pb2.DeleteOptions(key=key("noimg")))
    await wait_pod(client, "noimg", gone, timeout=30)


async def test_logs_previous_tail_and_timestamps_after_restart(node: AgentRunner, client: Client) -> None:
    c = sh(
        "app",
        "if [ -f /d/once ]; then echo second; echo a; echo b; sleep 1000; "
        "else touch /d/once; echo first; exit 1; fi",
    )
    c.volume_mounts.add(name="d", mount_path="/d")
    vol = pod_pb2.Volume(name="d", empty_dir=pod_pb2.EmptyDirVolumeSource())
    await create_and_bind(client, make_pod("prev", c, volumes=[vol]), node.config.node_name)
    await wait_pod(
        client,
        "prev",
        lambda p: (
            p is not None
            and p.status.container_statuses
            and cstatus(p, "app").restart_count == 1
            and cstatus(p, "app").state.HasField("running")
        ),
    )
    async def all_logged() -> str | None:
        now = await logs(client, "prev")
        return now if now.endswith("b\n") else None

    assert await eventually(all_logged, timeout=10, what="the second run's lines") == "second\na\nb\n"
    assert await logs(client, "prev", previous=True) == "first\n"
    assert await logs(client, "prev", tail_lines=1) == "b\n"
    stamped = await logs(client, "prev", tail_lines=1, timestamps=True)
    assert stamped.endswith(" b\n") and stamped[:4].isdigit()


async def test_logs_previous_of_a_crash_looping_container(node: AgentRunner, client: Client) -> None:
    """#16: while a crashed container waits out its back-off, `logs --previous` is its
    last run (the pod status's lastState), as kubectl shows it; it answered "not found"."""
    await create_and_bind(
        client, make_pod("loop", ("app", 'echo "run at $(date +%s%N)"; exit 1')), node.config.node_name
    )
    pod = await wait_pod(
        client,
        "loop",
        lambda p: (
            p is not None
            and bool(p.status.container_statuses)
            and cstatus(p, "app").restart_count >= 1
            and cstatus(p, "app").state.waiting.reason == "CrashLoopBackOff"
        ),
        timeout=120,
    )
    last = cstatus(pod, "app").last_state.terminated
    previous = await logs(client, "loop", previous=True)
    assert previous.startswith("run at ") and previous.count("\n") == 1
    assert last.exit_code == 1 and last.container_id


async def test_logs_follow_streams_new_lines(node: AgentRunner, client: Client) -> None:
    await create_and_bind(
        client,
        make_pod("tick", ("app", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done")),
        node.config.node_name,
    )
    await wait_pod(client, "tick", phase_is("Running"))
    call = client.pods.Logs(pod_pb2.LogsRequest(pod=key("tick"), follow=True))
    got = b""
    async for chunk in call:
        got += chunk.data
        if got.count(b"tick") >= 4:
            break
    call.cancel()
    assert b"tick 0\ntick 1\ntick 2\n" in got


async def test_pods_nest_in_vm_container_cgroup_and_network(
    controller: Any, images: None, client: Client
) -> None:
    name = f"agent-{uuid.uuid4().hex[:8]}"
    vm = f"cowpod-test-vm-{name}"
    docker(
        "run",
        "-d",
        "--name",
        vm,
        "--memory",
        "256m",
        "--label",
        "cowpod.test=1",
        "--label",
        f"cowpod.node={name}",
        BUSYBOX,
        "sleep",
        "1000",
    )
    try:
        vm_info = inspect(vm)
        vm_id, vm_ip = vm_info["Id"], vm_info["NetworkSettings"]["IPAddress"]
        async with AgentRunner(controller.address, name, vm_container=vm) as runner:
            node = await client.nodes.Get(meta_pb2.ObjectKey(name=name))
            assert node.spec.provider_id == f"docker://{vm_id}"
            assert any(a.address == vm_ip for a in node.status.addresses)
            # Two containers share a sandbox that joins the VM; one container joins the VM itself.
            pair = make_pod("nested", ("app", "sleep 1000"), ("side", "sleep 1000"))
            await create_and_bind(client, pair, runner.config.node_name)
            await create_and_bind(client, make_pod("solo", ("app", "sleep 1000")), runner.config.node_name)
            pod = await wait_pod(client, "nested", phase_is("Running"))
            solo = await wait_pod(client, "solo", phase_is("Running"))
            assert pod.status.pod_ip == vm_ip and solo.status.pod_ip == vm_ip

            def kinds(uid: str) -> dict[str, list[dict[str, Any]]]:
                ids = docker("ps", "-q", "--no-trunc", "--filter", f"label=cowpod.pod.uid={uid}").split()
                out: dict[str, list[dict[str, Any]]] = {}
                for i in ids:
                    info = inspect(i)
                    out.setdefault(info["Config"]["Labels"]["cowpod.container.kind"], []).append(info)
                return out

            infos = kinds(pod.metadata.uid)
            [sandbox], apps = infos["sandbox"], infos["app"]
            assert len(apps) == 2
            for info in (sandbox, *apps):
                assert info["HostConfig"]["CgroupParent"] == f"/docker/{vm_id}"
            assert sandbox["HostConfig"]["NetworkMode"] == f"container:{vm_id}"
            for app in apps:
                assert app["HostConfig"]["NetworkMode"] == f"container:{sandbox['Id']}"
                assert app["HostConfig"]["IpcMode"] == f"container:{sandbox['Id']}"
            solo_infos = kinds(solo.metadata.uid)
            assert set(solo_infos) == {"app"}
            [solo_app] = solo_infos["app"]
            assert solo_app["HostConfig"]["NetworkMode"] == f"container:{vm_id}"
            assert solo_app["HostConfig"]["CgroupParent"] == f"/docker/{vm_id}"
            await client.pods.Delete(meta_pb2.DeleteOptions(key=key("solo")))
            await client.pods.Delete(meta_pb2.DeleteOptions(key=key("nested")))
            await wait_pod(client, "solo", gone, timeout=30)
            await wait_pod(client, "nested", gone, timeout=30)
    finally:
        cleanup_docker(name)
