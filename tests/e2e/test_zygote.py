"""The zygote against the real Docker engine: a warm process forked into running containers.

Each clone runs `hypervisor.providers.docker.zygote_probe:run`, which writes what it sees into
its container; the tests read that back through the container's root from the
host and check the kernel's own view (/proc/<pid>/cgroup, smaps_rollup,
`docker top`, the memory cgroup's OOM counter).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import pathlib
import re
import shutil
import tarfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import docker
import docker.errors
import pytest
from docker.models.containers import Container

from cowpod.errors import FailedPrecondition, NotFound
from hypervisor.providers.docker import nsenter
from hypervisor.providers.docker.zygote import ZygoteConfig
from hypervisor.providers.docker.zygote_client import ZygoteClient, ZygoteProcess
from hypervisor.providers.docker.zygote_protocol import ChildStatus
from hypervisor.providers.docker.zygote_warm import ZygoteWarmStarter
from hypervisor.testing import smaps_rollup_kb
from tests.polling import eventually

pytestmark = pytest.mark.e2e

BUSYBOX = "cowpod/busybox:latest"
TEST_LABELS = {"cowpod.test": "1", "cowpod.zygote-test": "1"}
# Enough to make the share visible (grpc and yaml are most of what the agent loads)
# while keeping the zygote's start fast.
PRELOAD = ("argparse", "json", "socket", "grpc", "grpc.aio", "yaml", "google.protobuf.json_format")
PROBE = "hypervisor.providers.docker.zygote_probe:run"


@pytest.fixture(scope="module")
def dock() -> Iterator[docker.DockerClient]:
    if shutil.which("docker") is None and not os.path.exists("/var/run/docker.sock"):
        pytest.fail("no Docker engine: run scripts/bootstrap.sh")
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture(scope="module")
def busybox(dock: docker.DockerClient) -> str:
    """cowpod/busybox:latest, built like deploy/build-images.sh does when it is missing.

    It is the project's shared base image (not a test object), so it is kept.
    """
    try:
        dock.images.get(BUSYBOX)
        return BUSYBOX
    except docker.errors.ImageNotFound:
        pass
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add("/bin/busybox", arcname="busybox")
        dockerfile = (
            b"FROM scratch\nCOPY busybox /bin/busybox\n"
            b'RUN ["/bin/busybox", "--install", "-s", "/bin"]\nLABEL cowpod.managed=1\n'
        )
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    buf.seek(0)
    dock.images.build(fileobj=buf, custom_context=True, tag=BUSYBOX, rm=True)
    return BUSYBOX


@pytest.fixture
def containers(dock: docker.DockerClient, busybox: str) -> Iterator[Callable[..., Container]]:
    """Start labelled busybox containers (`sleep`); all are removed at teardown, clones with them."""
    made: list[Container] = []

    def start(memory: str = "64m", labels: dict[str, str] | None = None) -> Container:
        name = f"cowpod-zyg-{uuid.uuid4().hex[:8]}"
        c: Container = dock.containers.run(
            busybox, ["sleep", "3600"], detach=True, name=name, hostname=name,
            labels={**TEST_LABELS, **(labels or {})}, mem_limit=memory, memswap_limit=memory,
        )
        made.append(c)
        c.reload()
        return c

    yield start
    for c in made:
        try:
            c.remove(force=True)
        except docker.errors.NotFound:
            pass


def init_pid(c: Container) -> int:
    c.reload()
    return int(c.attrs["State"]["Pid"])


@pytest.fixture
async def zygote(tmp_path: pathlib.Path) -> AsyncIterator[ZygoteProcess]:
    zp = ZygoteProcess(
        ZygoteConfig(socket_path=str(tmp_path / "zygote.sock"), preload=PRELOAD, entrypoint=PROBE),
        stderr_path=str(tmp_path / "zygote.log"),
    )
    await zp.start()
    try:
        yield zp
    finally:
        await zp.stop()


def probe_report(c: Container, path: str = "/zygote-probe.json") -> dict[str, Any] | None:
    host_path = f"/proc/{init_pid(c)}/root{path}"
    try:
        with open(host_path) as f:
            report: dict[str, Any] = json.load(f)
            return report
    except FileNotFoundError:
        return None


def memory_cgroup(pid: int) -> str:
    return next(m.path for m in nsenter.cgroup_paths_of(pid) if "memory" in m.controllers)


def cgroup_of(pid: int, controller: str) -> str:
    return next(m.path for m in nsenter.cgroup_paths_of(pid) if controller in m.controllers)


def memcg_dir(c: Container) -> str:
    """The container's memory cgroup directory on the host."""
    mem = next(m for m in nsenter.cgroup_paths_of(init_pid(c)) if "memory" in m.controllers)
    return nsenter.cgroup_dir(mem, nsenter.read_cgroup_mounts())


def oom_kills(c: Container) -> int:
    with open(f"{memcg_dir(c)}/memory.oom_control") as f:
        return int(dict(line.split() for line in f)["oom_kill"])



def top_pids(c: Container) -> set[int]:
    top = c.top()
    col = top["Titles"].index("PID")
    return {int(row[col]) for row in top["Processes"]}


async def test_clone_lives_in_the_container_and_shares_the_zygotes_memory(
    zygote: ZygoteProcess, containers: Callable[..., Container]
) -> None:
    c = containers()
    c.exec_run(["sh", "-c", "echo from-the-container-disk > /marker"])
    clone = await zygote.client.fork_into(c.name, ["--read", "/marker"])
    report = await eventually(
        lambda: asyncio.to_thread(lambda: probe_report(c)), what="probe report", timeout=20.0
    )

    # In the container's pid namespace, with its own pid there, and listed by Docker.
    assert report["pid"] == clone.ns_pid != clone.pid
    assert clone.target_pid == init_pid(c)
    assert clone.pid in top_pids(c)
    # The container's hostname (uts ns) and disk (mnt ns + chroot), not the host's.
    assert report["hostname"] == c.attrs["Config"]["Hostname"] == report["env_hostname"]
    assert report["read"] == "from-the-container-disk\n"
    assert "marker" in report["root_entries"] and "home" not in report["root_entries"]
    assert " / / " in report["root_mount"] and "overlay" in report["root_mount"]
    # Its cgroups are the container's, as the kernel reports them from the host.
    assert memory_cgroup(clone.pid) == memory_cgroup(init_pid(c)) == f"/docker/{c.id}"
    assert f"memory:/docker/{c.id}" in report["cgroup"]
    # The capabilities docker gave the container, not the host root's.
    mine, theirs = nsenter.capabilities_of(clone.pid), nsenter.capabilities_of(init_pid(c))
    assert (mine.bounding, mine.effective) == (theirs.bounding, theirs.effective)
    # No descriptor of the zygote's (its listening socket, the parent's pidfd, the report
    # pipe) reaches the container: only stdio is open (#15, also-verify).
    assert sorted(os.listdir(f"/proc/{clone.pid}/fd"), key=int) == ["0", "1", "2"]
    # Most of its memory is the zygote's pages, shared copy-on-write.
    sm = smaps_rollup_kb(clone.pid)
    shared = sm["Shared_Clean"] + sm["Shared_Dirty"]
    private = sm["Private_Clean"] + sm["Private_Dirty"]
    assert shared > private, sm
    assert (await zygote.client.status(clone.pid)) == ChildStatus(clone.pid, "running")


async def test_second_clone_while_the_first_runs_and_the_memory_limit_applies(
    zygote: ZygoteProcess, containers: Callable[..., Container]
) -> None:
    a, b = containers(), containers(memory="48m")
    first = await zygote.client.fork_into(a.name, [])
    await eventually(
        lambda: asyncio.to_thread(lambda: probe_report(a)), what="first probe report", timeout=20.0
    )
    # The second clone tries to hold far more than its container may use.
    second = await zygote.client.fork_into(init_pid(b), ["--alloc-mb", "160"])
    assert second.pid != first.pid
    assert memory_cgroup(second.pid) == f"/docker/{b.id}"

    async def ended() -> ChildStatus | None:
        st = await zygote.client.status(second.pid)
        return st if st.state != "running" else None

    st = await eventually(ended, timeout=20, what="the over-limit clone stopped")
    assert (st.state, st.code) == ("signaled", 9)  # the memory cgroup's OOM killer
    assert oom_kills(b) >= 1
    # The first clone, in the other container, never noticed.
    assert (await zygote.client.status(first.pid)).state == "running"
    assert first.pid in top_pids(a)


async def test_bad_targets_get_clear_errors_and_the_zygote_keeps_serving(
    zygote: ZygoteProcess, containers: Callable[..., Container], dock: docker.DockerClient
) -> None:
    client = zygote.client
    with pytest.raises(NotFound, match="no such container 'cowpod-zyg-nope'"):
        await client.fork_into("cowpod-zyg-nope", [])
    with pytest.raises(NotFound, match="no such process"):
        await client.fork_into(4_000_000, [])
    stopped = containers()
    stopped.stop(timeout=0)
    with pytest.raises(NotFound, match="is not running"):
        await client.fork_into(stopped.id, [])
    c = containers()
    # A failure inside the forked child comes back with the step that failed.
    with pytest.raises(FailedPrecondition, match=re.escape("open log file /proc/nope/clone.log")):
        await client.fork_into(c.id, [], log_path="/proc/nope/clone.log")
    ping = await client.ping()
    assert ping["ok"] and ping["children"] == []
    clone = await client.fork_into(c.id, [])
    assert (
        await eventually(
            lambda: asyncio.to_thread(lambda: probe_report(c)), what="probe report", timeout=20.0
        )
    )["pid"] == clone.ns_pid


async def test_zygote_charged_to_its_parent_leaves_with_it(
    tmp_path: pathlib.Path, containers: Callable[..., Container]
) -> None:
    parent, child = containers(memory="256m"), containers()
    zp = ZygoteProcess(
        ZygoteConfig(
            socket_path=str(tmp_path / "p.sock"), preload=PRELOAD, entrypoint=PROBE, charge_to=parent.name
        ),
        stderr_path=str(tmp_path / "zygote.log"),
    )
    await zp.start()
    try:
        # The zygote's memory is the parent VM's: its cgroups, listed by docker top, but host pid ns.
        assert memory_cgroup(zp.pid) == f"/docker/{parent.id}"
        assert zp.pid in top_pids(parent)
        # ... but not its freezer: pausing the parent (quiescing it) leaves the zygote serving.
        assert cgroup_of(zp.pid, "freezer") != f"/docker/{parent.id}"
        await asyncio.to_thread(parent.pause)
        parent.reload()
        assert parent.attrs["State"]["Paused"]
        client = ZygoteClient(zp.config.socket_path)
        assert (await asyncio.wait_for(client.ping(), 10))["ok"]
        clone = await asyncio.wait_for(client.fork_into(child.name, []), 10)
        await eventually(
            lambda: asyncio.to_thread(lambda: probe_report(child)), what="probe report", timeout=20.0
        )
        assert memory_cgroup(clone.pid) == f"/docker/{child.id}"
        # The clone is the child's, freezer included: pausing the child would freeze it.
        assert cgroup_of(clone.pid, "freezer") == f"/docker/{child.id}"
        parent.reload()
        assert parent.attrs["State"]["Paused"]
        await asyncio.to_thread(parent.unpause)
        parent_memcg = memcg_dir(parent)
        # The parent goes: the zygote leaves its cgroups and exits, so Docker can clean them up.
        parent.remove(force=True)
        assert await asyncio.wait_for(zp.wait(), 30) == 0
        assert not await asyncio.to_thread(os.path.exists, parent_memcg)
        # The clone belongs to its own container and outlives the zygote.
        assert clone.pid in top_pids(child)
    finally:
        await zp.stop()


async def test_warm_starter_forks_into_an_instant_clone_child_from_its_parents_zygote(
    tmp_path: pathlib.Path, containers: Callable[..., Container]
) -> None:
    """What DockerProvider.instant_clone does with `warm_start=ZygoteWarmStarter(...)`."""
    parent = containers(memory="256m")
    child = containers(labels={"cowpod.parent": parent.name.removeprefix("cowpod-zyg-")})
    starter = ZygoteWarmStarter(
        tmp_path / "zygotes", container_prefix="cowpod-zyg-", preload=PRELOAD, entrypoint=PROBE, sys_path=None
    )
    try:
        await starter(child.name, ["cowpod-agent", "--out", "/warm.json"], {"COWPOD_VM_NAME": "child"})
        report = await eventually(
            lambda: asyncio.to_thread(lambda: probe_report(child, "/warm.json")),
            what="warm probe report",
            timeout=20.0,
        )
        assert starter.last_clone is not None and report["pid"] == starter.last_clone.ns_pid
        assert report["hostname"] == child.name
        zp = await starter.prepare(parent.name)  # the same zygote, already running
        assert zp.pid in top_pids(parent)
        assert (await zp.client.ping())["children"] == [starter.last_clone.pid]
        await starter.release(parent.name)
        assert not zp.running and zp.pid not in top_pids(parent)
        # The container's environment plus the provider's, nothing of the host's.
        assert report["env"]["COWPOD_VM_NAME"] == "child"
        assert report["env"]["HOSTNAME"] == child.name
        assert "PYTEST_CURRENT_TEST" not in report["env"]
        # Even the frozen copy the kernel shows in /proc/PID/environ is the zygote's clean one.
        environ = await asyncio.to_thread(pathlib.Path(f"/proc/{starter.last_clone.pid}/environ").read_bytes)
        assert b"PYTEST_CURRENT_TEST" not in environ
    finally:
        await starter.close()
