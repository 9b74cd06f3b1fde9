"""Warm shells on the real engine: instant clones taken from a pool of pre-made
child containers, their identity, the pool's refill, and that no shell outlives
its parent, its cluster or `cowpod down`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import docker
import pytest

from cowpod.client import Client
from cowpod.local.docker_env import remove_cluster_containers
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import meta_pb2, pod_pb2, vm_pb2
from hypervisor.manager import VMManager
from hypervisor.provider import VMSpecInfo, VMState
from hypervisor.providers.docker.provider import L_SHELL_OF, DockerProvider
from hypervisor.testing import DockerTestEnv, full_clone, instant_clone
from tests.polling import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture
async def provider(env: DockerTestEnv) -> AsyncIterator[DockerProvider]:
    p = env.provider(pool_size=2)
    try:
        yield p
    finally:
        await p.close()


def spec(name: str) -> VMSpecInfo:
    return VMSpecInfo(name=name, class_name="small", cpu_millis=500, memory_bytes=256 << 20)


def sh(container: str, cmd: str) -> str:
    c = docker.from_env().containers.get(container)
    rc, out = c.exec_run(["sh", "-c", cmd])
    assert isinstance(out, bytes)
    assert rc == 0, f"{cmd!r} in {container}: {out.decode()}"
    return out.decode().strip()


def shells(env: DockerTestEnv, parent: str = "") -> list[str]:
    """Idle shells of the env's cluster (of one parent when given)."""
    lbl = f"{L_SHELL_OF}={parent}" if parent else L_SHELL_OF
    cs = docker.from_env().containers.list(
        all=True, filters={"label": [f"cowpod.cluster={env.cluster_id}", lbl]}, ignore_removed=True)
    return sorted(str(c.name) for c in cs if str(c.name).startswith("cowpod-shell-"))


async def test_pooled_clones_have_unique_identities_and_the_pool_refills(
    env: DockerTestEnv, provider: DockerProvider
) -> None:
    parent = await full_clone(provider, spec(f"par-{env.cluster_id}"))
    await provider.prepare_parent(parent.name)
    await eventually(lambda: len(shells(env, parent.name)) == 2, what="two idle shells", timeout=60.0)
    pooled = set(shells(env, parent.name))
    kids = [await instant_clone(provider, parent.name, spec(f"kid{i}-{env.cluster_id}")) for i in range(3)]
    # The first two came from the pool (those shells are now VMs). The three clones, asked
    # with no quiet second between them, were one burst: the pool refills to 3, its size.
    assert not pooled & set(shells(env, parent.name))
    assert provider.pool_target(parent.name) == 3
    await eventually(lambda: len(shells(env, parent.name)) == 3, what="the pool refilled", timeout=60.0)
    seen: dict[str, set[str]] = {"hostname": set(), "machine_id": set(), "ip": set(), "node": set()}
    for vm in [parent, *kids]:
        cname = env.vm_container(vm.name)
        hostname, machine_id = sh(cname, "hostname"), sh(cname, "cat /etc/machine-id")
        if vm is not parent:
            assert hostname == vm.name == vm.hostname == vm.node_name
            assert machine_id == vm.machine_id
            assert sh(cname, "cat /var/lib/cowpod/vm-name") == vm.name
            assert vm.state == VMState.RUNNING and vm.parent == parent.name
            assert (vm.cpu_millis, vm.memory_bytes, vm.class_name) == (500, 256 << 20, "small")
        for key, value in (("hostname", hostname), ("machine_id", machine_id), ("ip", vm.ip),
                           ("node", vm.node_name)):
            assert value and value not in seen[key], (key, vm.name)
            seen[key].add(value)
    # Idle shells are not VMs; the taken ones are, and they are the parent's children.
    assert {v.name for v in await provider.list()} == {parent.name, *(k.name for k in kids)}
    assert set((await provider.get(parent.name)).children) == {k.name for k in kids}
    # One quiesce point: every child forks from the same snapshot.
    assert len({k.labels["cowpod.snapshot"] for k in kids}) == 1
    # Destroying the parent (cascade) takes its children and its idle shells.
    await provider.destroy(parent.name, cascade=True)
    assert shells(env) == []
    assert await provider.list() == []
    assert await provider.snapshot_images() == []


async def test_the_pool_grows_to_a_burst_up_to_its_max_and_shrinks_back(env: DockerTestEnv) -> None:
    """Three clones at once with `pool_size` 1 and `pool_max` 2: the pool is refilled to
    2 (the burst, bounded), and back to 1 once the burst is forgotten (`pool_memory_s`)."""
    p = env.provider(pool_size=1, pool_max=2, pool_memory_s=4.0, refill_quiet_s=0.5)
    try:
        parent = await full_clone(p, spec(f"par-{env.cluster_id}"))
        await p.prepare_parent(parent.name)
        await eventually(lambda: len(shells(env, parent.name)) == 1, what="one idle shell", timeout=60.0)
        kids = await asyncio.gather(*(instant_clone(p, parent.name, spec(f"kid{i}-{env.cluster_id}"))
                                      for i in range(3)))
        assert {k.state for k in kids} == {VMState.RUNNING}
        # (Docker lists a shell a moment before it is ready and in the pool.)
        await eventually(lambda: len(shells(env, parent.name)) == 2 == p.idle_shells(parent.name),
                         what="the pool grown to 2", timeout=60.0)
        await eventually(lambda: len(shells(env, parent.name)) == 1 == p.idle_shells(parent.name),
                         what="the pool shrunk to 1", timeout=60.0)
        assert p.pool_target(parent.name) == 1
        # The shell left is a working one: the next clone takes it.
        left = shells(env, parent.name)
        await instant_clone(p, parent.name, spec(f"kid9-{env.cluster_id}"))
        assert not set(left) & set(shells(env, parent.name))
        await p.destroy(parent.name, cascade=True)
        assert shells(env) == []
    finally:
        await p.close()


async def test_empty_pool_creates_the_childs_own_container(env: DockerTestEnv) -> None:
    p = env.provider(pool_size=0)
    try:
        parent = await full_clone(p, spec(f"par-{env.cluster_id}"))
        kid = await instant_clone(p, parent.name, spec(f"kid-{env.cluster_id}"))
        assert kid.state == VMState.RUNNING and kid.hostname == kid.name != parent.hostname
        assert sh(env.vm_container(kid.name), "hostname") == kid.name
        assert kid.machine_id != parent.machine_id and kid.ip != parent.ip
        # Its own container from the start: Docker's view is the VM's (no shell left over).
        attrs = docker.from_env().containers.get(env.vm_container(kid.name)).attrs
        assert attrs["Config"]["Hostname"] == kid.name
        assert attrs["Config"]["Labels"]["cowpod.vm"] == kid.name
        assert attrs["Config"]["Labels"]["cowpod.shell-of"] == ""
        assert attrs["Config"]["Labels"]["cowpod.parent"] == parent.name
        # Without a warm-start hook its init takes the identity and starts the agent at once.
        vm_container = docker.from_env().containers.get(env.vm_container(kid.name))
        deadline = time.monotonic() + 30
        while "started agent" not in (logs := vm_container.logs().decode()):
            assert time.monotonic() < deadline, logs
            await asyncio.sleep(0.1)
        assert sh(env.vm_container(kid.name), "cat /etc/machine-id") == kid.machine_id
        assert shells(env) == []  # no pool: nothing idle is kept
        await p.destroy(kid.name)
        # The parent's quiesce point stays for the next child while the parent lives.
        point = f"cowpod/vm-snap:{env.cluster_id}-{parent.name}-"
        assert any(t.startswith(point) for t in await p.snapshot_images())
        await p.destroy(parent.name)
        assert await p.snapshot_images() == []
    finally:
        await p.close()


async def test_orphan_shells_go_at_manager_start_and_on_cowpod_down(env: DockerTestEnv) -> None:
    p = env.provider(pool_size=2)
    parent = await full_clone(p, spec(f"par-{env.cluster_id}"))
    await p.prepare_parent(parent.name)
    await eventually(lambda: len(shells(env, parent.name)) == 2, what="two idle shells", timeout=60.0)
    await p.close()
    # The parent vanishes behind the provider's back (a crash, a manual docker rm).
    client = docker.from_env()
    client.containers.get(env.vm_container(parent.name)).remove(force=True)
    fresh = env.provider()
    try:
        removed = await fresh.collect_garbage()
        assert sorted(removed) and shells(env) == []
    finally:
        await fresh.close()
    # `cowpod down` removes what carries the cluster label: shells carry it.
    p2 = env.provider(pool_size=2)
    try:
        other = await full_clone(p2, spec(f"par2-{env.cluster_id}"))
        await p2.prepare_parent(other.name)
        await eventually(lambda: len(shells(env, other.name)) == 2, what="two idle shells", timeout=60.0)
    finally:
        await p2.close()
    removed_names = await asyncio.to_thread(remove_cluster_containers, env.cluster_id)
    assert shells(env) == [] and any(n.startswith("cowpod-shell-") for n in removed_names)


async def test_a_pooled_clone_registers_its_node(
    etcd: EtcdMember, etcd_prefix: str, env: DockerTestEnv
) -> None:
    from controller.testing import ControllerRunner

    sock = str(env.data_dir / "run" / "controller.sock")
    runner = ControllerRunner(etcd.endpoint, etcd_prefix, listen_unix=sock, data_dir=env.data_dir)
    await runner.start()
    provider = env.provider(pool_size=1)
    try:
        async with Client(runner.address) as c:
            manager = VMManager(c, "docker", env.data_dir, provider=provider, resync_seconds=0.5)
            task = asyncio.create_task(manager.run(), name="vm-manager-under-test")
            try:
                parent = f"tpl-{env.cluster_id}"
                await c.vms.Create(vm_pb2.VM(
                    metadata=meta_pb2.ObjectMeta(name=parent),
                    spec=vm_pb2.VMSpec(class_name="small", cpu_millis=500, memory_bytes=256 << 20,
                                       template=True)))
                # The manager prepares a template: its pool fills without any clone asked for.
                await eventually(
                    lambda: len(shells(env, parent)) == 1, what="the template's shell", timeout=90
                )
                kid = f"kid-{env.cluster_id}"
                await c.vms.Clone(vm_pb2.CloneRequest(parent=parent, count=1, names=[kid]))

                async def registered() -> bool:
                    nodes = (await c.nodes.List(meta_pb2.ListOptions())).items
                    return any(n.metadata.name == kid for n in nodes)
                await eventually(registered, what="the clone's node", timeout=90)
                node = await c.nodes.Get(meta_pb2.ObjectKey(name=kid))
                vm = await c.vms.Get(meta_pb2.ObjectKey(name=kid))
                assert vm.status.clone_kind == "instant" and vm.status.node_name == kid
                assert node.status.node_info.machine_id in ("", vm.status.machine_id)
                await eventually(lambda: len(shells(env, parent)) == 1, what="the pool refilled", timeout=90)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await provider.close()
        await runner.stop()


async def test_paused_shells_are_unpaused_when_taken(env: DockerTestEnv) -> None:
    p = env.provider(pool_size=1, pool_paused=True)
    try:
        parent = await full_clone(p, spec(f"par-{env.cluster_id}"))
        await p.prepare_parent(parent.name)
        await eventually(lambda: len(shells(env, parent.name)) == 1, what="an idle shell", timeout=60.0)
        await eventually(
            lambda: p.idle_shells(parent.name) == 1, what="the shell made and paused", timeout=60.0
        )
        idle = docker.from_env().containers.get(shells(env, parent.name)[0])
        assert idle.attrs["State"]["Paused"]
        kid = await instant_clone(p, parent.name, spec(f"kid-{env.cluster_id}"))
        assert kid.state == VMState.RUNNING
        assert sh(env.vm_container(kid.name), "hostname") == kid.name
        await p.destroy(parent.name, cascade=True)
        assert shells(env) == [] and await p.list() == []
    finally:
        await p.close()


async def test_a_clone_without_a_shell_is_a_working_vm_of_its_own(
    etcd: EtcdMember, etcd_prefix: str, env: DockerTestEnv
) -> None:
    """No pool: the child's own container, started off the network, its agent
    forked from the parent's zygote while the network is attached. The node
    registers with the child's own address and machine id, and runs a pod."""
    from controller.testing import ControllerRunner
    from hypervisor.providers.docker.zygote_warm import ZygoteWarmStarter

    sock = env.data_dir / "run" / "controller.sock"
    sock.parent.mkdir(parents=True, exist_ok=True)
    warm = ZygoteWarmStarter(ZygoteWarmStarter.default_socket_dir(env.data_dir))
    provider = DockerProvider(env.config(pool_size=0), warm_start=warm)
    try:
        async with (
            ControllerRunner(etcd.endpoint, etcd_prefix, listen_unix=str(sock)) as runner,
            Client(runner.address) as c,
        ):
            manager = VMManager(c, "docker", env.data_dir, provider=provider, cluster_id=env.cluster_id,
                                resync_seconds=0.5)
            task = asyncio.create_task(manager.run(), name="vm-manager-under-test")
            try:
                parent = f"tpl-{env.cluster_id}"
                await c.vms.Create(vm_pb2.VM(
                    metadata=meta_pb2.ObjectMeta(name=parent),
                    spec=vm_pb2.VMSpec(class_name="small", cpu_millis=500, memory_bytes=256 << 20,
                                       template=True)))
                kid = f"kid-{env.cluster_id}"

                async def ready(name: str) -> bool:
                    nodes = (await c.nodes.List(meta_pb2.ListOptions())).items
                    return any(n.metadata.name == name and any(
                        x.type == "Ready" and x.status == "True" for x in n.status.conditions) for n in nodes)
                await eventually(lambda: ready(parent), what="the parent's node Ready", timeout=90)
                await c.vms.Clone(vm_pb2.CloneRequest(parent=parent, count=1, names=[kid]))
                await eventually(lambda: ready(kid), what="the clone's node Ready", timeout=90)
                assert shells(env) == []  # pool_size 0: no shell was made, before or after
                vm = await c.vms.Get(meta_pb2.ObjectKey(name=kid))
                pvm = await c.vms.Get(meta_pb2.ObjectKey(name=parent))
                node = await c.nodes.Get(meta_pb2.ObjectKey(name=kid))
                assert vm.status.clone_kind == "instant" and vm.spec.parent == parent
                # Its own address (registered after the attach), not a loopback, not the parent's.
                ips = {a.address for a in node.status.addresses if a.type == "InternalIP"}
                assert ips == {vm.status.ip} and vm.status.ip != pvm.status.ip
                # Its own identity, on its disk and on its node.
                cname = env.vm_container(kid)
                assert node.status.node_info.machine_id == vm.status.machine_id != pvm.status.machine_id
                assert sh(cname, "cat /etc/machine-id") == vm.status.machine_id
                assert sh(cname, "cat /var/lib/cowpod/vm-name") == kid == sh(cname, "hostname")
                # The agent was forked in (its init started none of its own).
                engine = docker.from_env()
                container = engine.containers.get(cname)
                assert "started agent" not in container.logs().decode()
                procs = container.top(ps_args="-o pid,comm")["Processes"]
                assert any("cowpod-agent" in " ".join(p) for p in procs)
                # And it runs a pod, in its own network namespace.
                pod = pod_pb2.Pod(
                    metadata=meta_pb2.ObjectMeta(name=f"p-{env.cluster_id}", namespace="default"),
                    spec=pod_pb2.PodSpec(restart_policy="Always", containers=[pod_pb2.Container(
                        name="s", image="cowpod/busybox:latest", command=["sleep", "3600"])]))
                created = await c.pods.Create(pod)
                key = meta_pb2.ObjectKey(namespace="default", name=pod.metadata.name)
                await c.pods.Bind(pod_pb2.Binding(pod=key, node_name=kid, pod_uid=created.metadata.uid))

                async def running() -> bool:
                    got = await c.pods.Get(key)
                    return bool(got.status.phase == "Running")
                await eventually(running, what="the pod Running on the clone", timeout=90)
                (pc,) = engine.containers.list(filters={"label": f"cowpod.node={kid}"})
                assert f"inet {vm.status.ip}/" in sh(str(pc.name), "ip -4 -o addr show")
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                # The provider's destroy stops each VM before removing its pods, so a
                # live agent cannot make a pod container after the sweep.
                with contextlib.suppress(Exception):
                    await provider.destroy(f"tpl-{env.cluster_id}", cascade=True)
    finally:
        await provider.close()
        await asyncio.to_thread(remove_cluster_containers, env.cluster_id)
