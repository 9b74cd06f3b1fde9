"""The docker provider on the real engine: what a VM container is made of."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence

import docker
import pytest

from cowpod.errors import AlreadyExists
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
    c = docker.from_env().containers.get(env.vm_container(name))
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
    cname = env.vm_container(name)
    assert "hypervisor.vminit" in sh(cname, "tr '\\0' ' ' </proc/1/cmdline")
    assert sh(cname, "cat /etc/machine-id") == info.machine_id
    assert sh(cname, "hostname") == name
    env_vars = dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])
    argv = json.loads(env_vars["COWPOD_AGENT_ARGV"])
    assert argv[0] == "cowpod-agent"
    assert argv[argv.index("--node-name") + 1] == name
    assert argv[argv.index("--vm-container") + 1] == env.vm_container(name)
    assert argv[argv.index("--advertise") + 1] == f"unix://{env.data_dir.resolve()}/run/agents/{name}.sock"
    assert "zone=z1" in argv[argv.index("--labels") + 1]


async def test_instant_clone_copies_the_parents_disk_at_the_clone(
    env: DockerTestEnv, provider: DockerProvider
) -> None:
    parent = await full_clone(provider, spec(f"par-{env.cluster_id}"))
    pc = env.vm_container(parent.name)
    sh(pc, "echo warm > /var/lib/cowpod/cache-before && mkdir -p /var/lib/cowpod/agent && echo p > "
           "/var/lib/cowpod/agent/identity")
    child = await instant_clone(provider, parent.name, spec(f"kid-{env.cluster_id}"))
    sh(pc, "echo late > /var/lib/cowpod/cache-after")
    cc = env.vm_container(child.name)
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
    assert f"cowpod/vm-own:{env.cluster_id}-{child.name}" in await provider.snapshot_images()
    await provider.destroy(parent.name)
    await provider.destroy(child.name)
    assert await provider.snapshot_images() == []
    assert await provider.list() == []


async def test_a_list_whose_inspect_meets_a_pause_reports_running_once_it_is_over(
    env: DockerTestEnv, provider: DockerProvider
) -> None:
    """The race a snapshot's `commit --pause` opens: `docker ps` says running, the container
    is paused before the list inspects it. That inspect must not stand for "running" after
    the pause (it left a warm parent reported Paused for good). Also what the unit tests'
    fake engine assumes: ps and inspect name a paused container's state alike."""
    name = f"ls-{env.cluster_id}"
    await full_clone(provider, spec(name))
    c = docker.from_env().containers.get(env.vm_container(name))
    (summary,) = provider.docker.api.containers(all=True, filters={"id": c.id})
    assert summary["State"] == "running"
    c.pause()
    try:
        (paused,) = provider.docker.api.containers(all=True, filters={"id": c.id})
        listed = provider._listed_sync(summary)
        assert listed is not None
        assert paused["State"] == listed.attrs["State"]["Status"] == "paused"
    finally:
        c.unpause()
    (info,) = [v for v in await provider.list() if v.name == name]
    assert info.state == VMState.RUNNING


async def test_docker_stop_is_a_clean_shutdown_and_kill_a_failure(
    env: DockerTestEnv, provider: DockerProvider
) -> None:
    a = await full_clone(provider, spec(f"stop-{env.cluster_id}"))
    b = await full_clone(provider, spec(f"kill-{env.cluster_id}"))
    client = docker.from_env()
    await asyncio.to_thread(client.containers.get(env.vm_container(a.name)).stop, timeout=10)
    await asyncio.to_thread(client.containers.get(env.vm_container(b.name)).kill)
    stopped, killed = await provider.get(a.name), await provider.get(b.name)
    assert stopped.state == VMState.STOPPED
    assert killed.state == VMState.FAILED and "137" in killed.message
    logs = client.containers.get(env.vm_container(a.name)).logs().decode()
    assert "cowpod-init: stopped" in logs


async def test_power_off_stops_the_vms_pods_and_destroy_removes_them(
    env: DockerTestEnv, provider: DockerProvider
) -> None:
    info = await full_clone(provider, spec(f"pods-{env.cluster_id}"))
    pod = await asyncio.to_thread(
        env.run_nested, env.vm_container(info.name), info.name, f"pod-{env.cluster_id}"
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
        assert [c[0] for c in hook.calls] == [env.vm_container(child.name)]
        _, argv, child_env = hook.calls[0]
        assert argv[argv.index("--node-name") + 1] == child.name
        assert child_env["COWPOD_AGENT_START"] == "wait"
        container = docker.from_env().containers.get(env.vm_container(child.name))
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


async def test_two_clusters_on_one_engine_both_make_vm_1(env: DockerTestEnv) -> None:
    """Two `cowpod up` clusters (own data dirs and cluster ids, one engine and network) both make
    `vm-1`: each VM container is named after its cluster (as kind names its nodes), so neither
    fails with "already exists", and each cluster sees and destroys only its own."""
    other = DockerTestEnv.create(network=env.network)
    (other.data_dir / "run").mkdir()
    a, b = env.provider(pool_size=0), other.provider(pool_size=0)
    try:
        va = await full_clone(a, spec("vm-1"))
        vb = await full_clone(b, spec("vm-1"))
        assert va.provider_id != vb.provider_id
        client = docker.from_env()
        for e in (env, other):
            c = client.containers.get(e.vm_container("vm-1"))
            assert c.name == f"cowpod-{e.cluster_id}-vm-1" and c.labels["cowpod.cluster"] == e.cluster_id
            # The agent is told its own VM's container (it nests pods in its cgroup and network).
            argv = json.loads(dict(v.split("=", 1) for v in c.attrs["Config"]["Env"])["COWPOD_AGENT_ARGV"])
            assert argv[argv.index("--vm-container") + 1] == c.name
        assert [v.name for v in await a.list()] == ["vm-1"] == [v.name for v in await b.list()]
        # Each clones its own `vm-1` into `vm-2`: each child has its own parent's disk (snapshot
        # tags are the cluster's too, so neither quiesce point takes the other's tag).
        for e in (env, other):
            sh(e.vm_container("vm-1"), f"echo {e.cluster_id} > /etc/which-cluster")
        await instant_clone(a, "vm-1", spec("vm-2"))
        await instant_clone(b, "vm-1", spec("vm-2"))
        for e in (env, other):
            assert sh(e.vm_container("vm-2"), "cat /etc/which-cluster") == e.cluster_id
        await b.destroy("vm-2")
        await b.destroy("vm-1")
        assert (await a.get("vm-1")).state == (await a.get("vm-2")).state == VMState.RUNNING
        assert [v.name for v in await b.list()] == []
        # The same name again in the same cluster is refused, and says so.
        with pytest.raises(AlreadyExists, match=f"already exists in this cluster \\({env.cluster_id}\\)"):
            await full_clone(a, spec("vm-1"))
    finally:
        await a.close()
        await b.close()
        other.cleanup(network=False)


async def test_a_taken_container_name_says_which_cluster_has_it(env: DockerTestEnv) -> None:
    """Cluster `<id>-x`'s `vm-1` and cluster `<id>`'s `x-vm-1` would share a container name (ids
    cowpod makes, `cp-<10 hex>`, never end up so): the refusal names the cluster that has it."""
    other = DockerTestEnv(cluster_id=f"{env.cluster_id}-x", network=env.network,
                          data_dir=DockerTestEnv.create().data_dir)
    (other.data_dir / "run").mkdir()
    a, b = env.provider(pool_size=0), other.provider(pool_size=0)
    try:
        await full_clone(a, spec("x-vm-1"))
        assert env.vm_container("x-vm-1") == other.vm_container("vm-1")
        with pytest.raises(AlreadyExists) as err:
            await full_clone(b, spec("vm-1"))
        owner = f"belongs to cowpod cluster {env.cluster_id!r}, not this one ({other.cluster_id})"
        assert owner in str(err.value)
        assert (await a.get("x-vm-1")).state == VMState.RUNNING  # untouched
    finally:
        await a.close()
        await b.close()
        other.cleanup(network=False)
