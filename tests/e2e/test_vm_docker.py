"""The docker provider on the real engine: what a VM container is made of."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence

import docker
import pytest

from hypervisor.provider import VMSpecInfo, VMState
from hypervisor.providers.docker.provider import DockerProvider
from hypervisor.testing import DockerTestEnv, full_clone, instant_clone
from tests.polling import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture
async def provider(env: DockerTestEnv) -> AsyncIterator[DockerProvider]:
    p = env.provider()
    try:
        yield p
    finally:
        await p.close()


def spec(name: str, **kw: object) -> VMSpecInfo:
    return VMSpecInfo(name=name, class_name="small", cpu_millis=500, memory_bytes=256 << 20, **kw)  # type: ignore[arg-type]


def sh(container: str, cmd: str) -> str:
    c = docker.from_env().containers.get(container)
    rc, out = c.exec_run(["sh", "-c", cmd])
    assert isinstance(out, bytes)
    assert rc == 0, f"{cmd!r} in {container}: {out.decode()}"
    return out.decode().strip()


async def test_vm_container_has_its_limits_identity_and_mounts(
    env: DockerTestEnv, provider: DockerProvider
) -> None:
    name = f"lim-{env.cluster_id}"
    info = await full_clone(provider, spec(name, node_labels={"zone": "z1"}))
    c = docker.from_env().containers.get(f"cowpod-vm-{name}")
    hc = c.attrs["HostConfig"]
    assert hc["NanoCpus"] == 500_000_000
    assert hc["Memory"] == 256 << 20 and hc["MemorySwap"] == 256 << 20
    assert c.attrs["Config"]["Hostname"] == name
    assert c.attrs["NetworkSettings"]["Networks"][env.network]["IPAddress"] == info.ip
    mounts = {m["Destination"]: m["Source"] for m in c.attrs["Mounts"]}
    assert mounts["/var/run/docker.sock"] == "/var/run/docker.sock"
    assert mounts["/run/cowpod"] == str(env.data_dir.resolve() / "run")
    labels = c.labels
    assert labels["cowpod.vm"] == name and labels["cowpod.managed"] == "1"
    assert labels["cowpod.cluster"] == env.cluster_id and labels["cowpod.test"] == "1"
    assert info.provider_id == f"docker://{c.id}"
    # The init is PID 1 and wrote the VM's identity.
    cname = f"cowpod-vm-{name}"
    assert "hypervisor.vminit" in sh(cname, "tr '\\0' ' ' </proc/1/cmdline")
    assert sh(cname, "cat /etc/machine-id") == info.machine_id
    assert sh(cname, "hostname") == name
    env_vars = dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])
    argv = json.loads(env_vars["COWPOD_AGENT_ARGV"])
    assert argv[0] == "cowpod-agent"
    assert argv[argv.index("--node-name") + 1] == name
    assert argv[argv.index("--vm-container") + 1] == f"cowpod-vm-{name}"
    assert argv[argv.index("--advertise") + 1] == f"unix://{env.data_dir.resolve()}/run/agents/{name}.sock"
    assert "zone=z1" in argv[argv.index("--labels") + 1]


async def test_instant_clone_copies_the_parents_disk_at_the_clone(
    env: DockerTestEnv, provider: DockerProvider
) -> None:
    parent = await full_clone(provider, spec(f"par-{env.cluster_id}"))
    pc = f"cowpod-vm-{parent.name}"
    sh(pc, "echo warm > /var/lib/cowpod/cache-before && mkdir -p /var/lib/cowpod/agent && echo p > "
           "/var/lib/cowpod/agent/identity")
    child = await instant_clone(provider, parent.name, spec(f"kid-{env.cluster_id}"))
    sh(pc, "echo late > /var/lib/cowpod/cache-after")
    cc = f"cowpod-vm-{child.name}"
    assert sh(cc, "cat /var/lib/cowpod/cache-before") == "warm"
    assert sh(cc, "test -e /var/lib/cowpod/cache-after && echo yes || echo no") == "no"
    # The parent's per-VM state is wiped; the child's identity is its own.
    assert sh(cc, "test -e /var/lib/cowpod/agent/identity && echo yes || echo no") == "no"
    assert sh(cc, "cat /var/lib/cowpod/vm-name") == child.name
    assert sh(cc, "cat /etc/machine-id") == child.machine_id != parent.machine_id
    assert sh(cc, "hostname") == child.name
    assert child.labels["cowpod.snapshot"] in await provider.snapshot_images()
    # Snap free, then destroy both: nothing of this cluster is left behind.
    await provider.snap_free(child.name)
    assert f"cowpod/vm-own:{child.name}" in await provider.snapshot_images()
    await provider.destroy(parent.name)
    await provider.destroy(child.name)
    assert await provider.snapshot_images() == []
    assert await provider.list() == []


async def test_docker_stop_is_a_clean_shutdown_and_kill_a_failure(
    env: DockerTestEnv, provider: DockerProvider
) -> None:
    a = await full_clone(provider, spec(f"stop-{env.cluster_id}"))
    b = await full_clone(provider, spec(f"kill-{env.cluster_id}"))
    client = docker.from_env()
    await asyncio.to_thread(client.containers.get(f"cowpod-vm-{a.name}").stop, timeout=10)
    await asyncio.to_thread(client.containers.get(f"cowpod-vm-{b.name}").kill)
    stopped, killed = await provider.get(a.name), await provider.get(b.name)
    assert stopped.state == VMState.STOPPED
    assert killed.state == VMState.FAILED and "137" in killed.message
    logs = client.containers.get(f"cowpod-vm-{a.name}").logs().decode()
    assert "cowpod-init: stopped" in logs


async def test_power_off_stops_the_vms_pods_and_destroy_removes_them(
    env: DockerTestEnv, provider: DockerProvider
) -> None:
    info = await full_clone(provider, spec(f"pods-{env.cluster_id}"))
    pod = await asyncio.to_thread(
        env.run_nested, f"cowpod-vm-{info.name}", info.name, f"pod-{env.cluster_id}"
    )
    client = docker.from_env()
    # The nested container shares the VM's network namespace and sits in its cgroup.
    pc = client.containers.get(pod)
    assert pc.attrs["HostConfig"]["NetworkMode"].startswith("container:")
    await provider.power_off(info.name)
    assert client.containers.get(pod).status == "exited"
    await provider.destroy(info.name)
    assert client.containers.list(all=True, filters={"id": pod}) == []


class RecordingWarmStart:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.calls: list[tuple[str, list[str], dict[str, str]]] = []
        self.pids: list[int] = []

    async def __call__(
        self, child_container: str, agent_argv: Sequence[str], env: Mapping[str, str], *, init_pid: int = 0
    ) -> None:
        self.calls.append((child_container, list(agent_argv), dict(env)))
        self.pids.append(init_pid)
        if self.fail:
            raise RuntimeError("no zygote here")


@pytest.mark.parametrize("fail", [False, True], ids=["warm", "falls-back-cold"])
async def test_warm_start_hook(env: DockerTestEnv, fail: bool) -> None:
    hook = RecordingWarmStart(fail)
    p = DockerProvider(env.config(), warm_start=hook)
    try:
        parent = await full_clone(p, spec(f"wp-{env.cluster_id}"))
        child = await instant_clone(p, parent.name, spec(f"wc-{env.cluster_id}"))
        assert [c[0] for c in hook.calls] == [f"cowpod-vm-{child.name}"]
        _, argv, child_env = hook.calls[0]
        assert argv[argv.index("--node-name") + 1] == child.name
        assert child_env["COWPOD_AGENT_START"] == "wait"
        container = docker.from_env().containers.get(f"cowpod-vm-{child.name}")
        # The hook is told the child's init (no lookup by name behind the network attach).
        assert hook.pids == [int(container.attrs["State"]["Pid"])]
        if fail:
            await eventually(
                lambda: asyncio.to_thread(lambda: "starting the agent cold" in container.logs().decode()),
                timeout=20.0,
            )
            # The cold fallback took the child's identity before its agent.
            rc, out = container.exec_run(["cat", "/etc/machine-id", "/var/lib/cowpod/vm-name"])
            assert rc == 0 and isinstance(out, bytes)
            assert out.decode().split() == [child.machine_id, child.name]
        else:
            await asyncio.sleep(0.5)
            assert "started agent" not in container.logs().decode()
    finally:
        await p.close()
