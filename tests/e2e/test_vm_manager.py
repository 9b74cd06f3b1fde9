"""The VM manager end to end: a controller (real etcd), the manager, the docker provider,
and the real agent inside the VM image."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import docker
import grpc
import pytest

from cowpod.client import Client
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import event_pb2, meta_pb2, pod_pb2, vm_pb2
from hypervisor.manager import VMManager
from hypervisor.provider import VMSpecInfo
from hypervisor.providers.docker.provider import DockerProvider
from hypervisor.testing import DockerTestEnv, full_clone
from tests.polling import eventually

pytestmark = pytest.mark.e2e


@dataclass
class Stack:
    client: Client
    provider: DockerProvider
    manager: VMManager
    env: DockerTestEnv


@contextlib.asynccontextmanager
async def running_manager(client: Client, env: DockerTestEnv) -> AsyncIterator[Stack]:
    provider = env.provider()
    manager = VMManager(client, "docker", env.data_dir, provider=provider, resync_seconds=0.5)
    task = asyncio.create_task(manager.run(), name="vm-manager-under-test")
    try:
        yield Stack(client, provider, manager, env)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def stack(etcd: EtcdMember, etcd_prefix: str, env: DockerTestEnv) -> AsyncIterator[Stack]:
    from controller.testing import ControllerRunner

    sock = str(env.data_dir / "run" / "controller.sock")
    runner = ControllerRunner(etcd.endpoint, etcd_prefix, listen_unix=sock, data_dir=env.data_dir)
    await runner.start()
    try:
        async with Client(runner.address) as client, running_manager(client, env) as s:
            yield s
    finally:
        await runner.stop()


async def get_vm(c: Client, name: str) -> vm_pb2.VM | None:
    try:
        return await c.vms.Get(meta_pb2.ObjectKey(name=name))
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


async def phase_is(c: Client, name: str, phase: str) -> bool:
    vm = await get_vm(c, name)
    return vm is not None and vm.status.phase == phase


def new_vm(name: str, **spec: object) -> vm_pb2.VM:
    return vm_pb2.VM(metadata=meta_pb2.ObjectMeta(name=name),
                     spec=vm_pb2.VMSpec(class_name="small", cpu_millis=500, memory_bytes=256 << 20,
                                        **spec))  # type: ignore[arg-type]


async def test_full_clone_registers_a_ready_node_and_destroy_cleans_up(stack: Stack) -> None:
    c, name = stack.client, f"full-{stack.env.cluster_id}"
    await c.vms.Create(new_vm(name))
    await eventually(lambda: phase_is(c, name, "Running"), what="VM Running", timeout=60.0)
    vm = await get_vm(c, name)
    assert vm is not None
    assert vm.status.ip and vm.status.provider_id.startswith("docker://") and vm.status.node_name == name
    assert vm.status.HasField("created_at") and vm.status.clone_kind == "full"
    # The real agent in the VM registers the node; the manager stamps ready_at.
    async def ready() -> bool:
        v = await get_vm(c, name)
        return v is not None and v.status.HasField("ready_at")
    await eventually(ready, what="the VM's node Ready (ready_at)", timeout=90)
    node = await c.nodes.Get(meta_pb2.ObjectKey(name=name))
    assert node.status.node_info.machine_id in ("", vm.status.machine_id)
    await c.vms.Destroy(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name=name)))
    await eventually(lambda: _gone(c, name), what="VM object removed", timeout=60.0)
    assert docker.from_env().containers.list(all=True, filters={"name": stack.env.vm_container(name)}) == []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await c.nodes.Get(meta_pb2.ObjectKey(name=name))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_destroy_removes_the_pods_its_live_agent_would_restart(stack: Stack) -> None:
    """The agent inside a VM restarts pod containers that vanish; destroying the
    VM must not race it and leave pod containers behind."""
    c, name = stack.client, f"pods-{stack.env.cluster_id}"
    await c.vms.Create(new_vm(name))

    async def node_ready() -> bool:
        v = await get_vm(c, name)
        return v is not None and v.status.HasField("ready_at")

    await eventually(node_ready, what="the VM's node Ready", timeout=90)
    pod = pod_pb2.Pod(
        metadata=meta_pb2.ObjectMeta(name=f"sleeper-{stack.env.cluster_id}", namespace="default"),
        spec=pod_pb2.PodSpec(
            restart_policy="Always",
            containers=[
                pod_pb2.Container(name="s", image="cowpod/busybox:latest", command=["sleep", "3600"])
            ],
        ),
    )
    created = await c.pods.Create(pod)
    await c.pods.Bind(pod_pb2.Binding(pod=meta_pb2.ObjectKey(namespace="default", name=pod.metadata.name),
                                      node_name=name, pod_uid=created.metadata.uid))

    async def running() -> bool:
        got = await c.pods.Get(meta_pb2.ObjectKey(namespace="default", name=pod.metadata.name))
        return got.status.phase == "Running"

    await eventually(running, what="pod Running on the VM", timeout=90)
    engine = docker.from_env()
    assert engine.containers.list(all=True, filters={"label": f"cowpod.node={name}"})
    await c.vms.Destroy(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name=name)))
    await eventually(lambda: _gone(c, name), what="VM object removed", timeout=60.0)
    assert engine.containers.list(all=True, filters={"label": f"cowpod.node={name}"}) == []


async def _gone(c: Client, name: str) -> bool:
    return await get_vm(c, name) is None


async def test_instant_clone_and_snap_free_through_the_api(stack: Stack) -> None:
    c, parent = stack.client, f"par-{stack.env.cluster_id}"
    child = f"kid-{stack.env.cluster_id}"
    await c.vms.Create(new_vm(parent))
    await eventually(lambda: phase_is(c, parent, "Running"), what="parent Running", timeout=60.0)
    await c.vms.Clone(vm_pb2.CloneRequest(parent=parent, names=[child]))
    await eventually(lambda: phase_is(c, child, "Running"), what="child Running", timeout=60.0)
    kid = await get_vm(c, child)
    par = await get_vm(c, parent)
    assert kid is not None and par is not None
    assert kid.status.clone_kind == "instant" and not kid.status.snapped_free
    for f in ("ip", "hostname", "machine_id", "node_name", "provider_id"):
        assert getattr(kid.status, f) != getattr(par.status, f), f
    await c.vms.SnapFree(meta_pb2.ObjectKey(name=child))

    async def freed() -> bool:
        v = await get_vm(c, child)
        return v is not None and v.status.snapped_free
    await eventually(freed, what="child snapped free", timeout=60.0)
    await c.vms.Destroy(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name=parent)))
    await eventually(lambda: _gone(c, parent), what="parent removed", timeout=60.0)
    assert (await stack.provider.get(child)).state.value == "running"


async def test_a_vm_that_dies_is_marked_failed_with_an_event(stack: Stack) -> None:
    c, name = stack.client, f"die-{stack.env.cluster_id}"
    await c.vms.Create(new_vm(name))
    await eventually(lambda: phase_is(c, name, "Running"), what="VM Running", timeout=60.0)
    await asyncio.to_thread(docker.from_env().containers.get(stack.env.vm_container(name)).kill)
    await eventually(lambda: phase_is(c, name, "Failed"), what="VM Failed", timeout=60.0)
    vm = await get_vm(c, name)
    assert vm is not None and "137" in vm.status.message
    evs = await c.events.List(event_pb2.ListEventsRequest(
        list=meta_pb2.ListOptions(namespace="default"),
        involved_object=event_pb2.ObjectReference(kind="VM", name=name)))
    assert "VMFailed" in [e.reason for e in evs.items]


async def test_startup_destroys_orphans_and_fails_vanished_vms(
    etcd: EtcdMember, etcd_prefix: str, env: DockerTestEnv
) -> None:
    from controller.testing import ControllerRunner

    async with ControllerRunner(etcd.endpoint, etcd_prefix) as runner, Client(runner.address) as c:
        provider = env.provider()
        orphan = f"orph-{env.cluster_id}"
        await full_clone(provider, VMSpecInfo(name=orphan, class_name="s", cpu_millis=200,
                                             memory_bytes=128 << 20))
        lost = f"lost-{env.cluster_id}"
        created = await c.vms.Create(new_vm(lost))
        created.status.phase = "Running"
        await c.vms.UpdateStatus(created)
        await provider.close()
        async with running_manager(c, env) as s:
            await eventually(lambda: phase_is(c, lost, "Failed"), what="vanished VM Failed", timeout=60.0)
            async def orphan_gone() -> bool:
                return orphan not in [v.name for v in await s.provider.list()]
            await eventually(orphan_gone, what="orphan destroyed", timeout=60.0)


async def test_secure_cluster_agent_joins_with_the_bundle(
    etcd: EtcdMember, etcd_prefix: str, env: DockerTestEnv
) -> None:
    """With TLS and authentication on, the VM's agent joins with the bundle the controller
    publishes in <data_dir>/run (CA, transport pair, join token) and its node becomes Ready."""
    from controller.testing import ControllerRunner

    sock = str(env.data_dir / "run" / "controller.sock")
    runner = ControllerRunner.secure(etcd.endpoint, etcd_prefix, pki_dir=env.data_dir / "pki",
                                     listen_unix=sock, data_dir=env.data_dir)
    async with runner, runner.client() as c:
        provider = env.provider()
        manager = VMManager(c, "docker", env.data_dir, provider=provider, resync_seconds=0.5)
        task = asyncio.create_task(manager.run(), name="vm-manager-under-test")
        try:
            name = f"sec-{env.cluster_id}"
            await c.vms.Create(new_vm(name))

            async def ready() -> bool:
                v = await get_vm(c, name)
                return v is not None and v.status.HasField("ready_at")
            await eventually(ready, what="the VM's node Ready in a secure cluster", timeout=90)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
