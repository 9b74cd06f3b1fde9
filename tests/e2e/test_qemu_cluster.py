"""The qemu provider in a real cluster: controller (real etcd), VM manager, the Debian guest image.

A template parent cold-boots under TCG (about a minute here), is snapshotted
while warm, and takes its identity; two instant clones of it come up as
distinct Ready nodes; a pod runs in one of them and its logs come back through
the controller (which dials the agent at its forwarded port); killing a
clone's QEMU process fails its VM and takes its node out of service. Slow (the cold boot): the image
is built by deploy/qemu/build-image.sh (skipped when it is missing, failed in CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from cowpod.client import Client
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2, vm_pb2
from hypervisor.manager import VMManager
from hypervisor.provider import ControllerAddress
from hypervisor.providers.qemu.provider import QemuProvider
from hypervisor.providers.qemu.settings import DEFAULT_IMAGE_DIR
from hypervisor.providers.qemu.store import read_record
from hypervisor.providers.qemu.testing import QemuTestEnv
from tests.polling import eventually

pytestmark = pytest.mark.e2e


@dataclass
class Stack:
    client: Client
    provider: QemuProvider
    env: QemuTestEnv


@pytest.fixture(scope="module")
def real_image() -> None:
    if not (DEFAULT_IMAGE_DIR / "image.json").exists():
        msg = f"no qemu guest image in {DEFAULT_IMAGE_DIR}: run deploy/qemu/build-image.sh"
        pytest.fail(msg) if os.environ.get("CI") else pytest.skip(msg)


@pytest.fixture
async def stack(etcd: EtcdMember, etcd_prefix: str, real_image: None) -> AsyncIterator[Stack]:
    from controller.testing import ControllerRunner

    env = QemuTestEnv.create(DEFAULT_IMAGE_DIR, boot_timeout_s=900.0, start_timeout_s=300.0)
    runner = ControllerRunner(etcd.endpoint, etcd_prefix, data_dir=env.data_dir,
                              node_monitor_grace=20.0, node_monitor_period=1.0)
    await runner.start()
    controller = ControllerAddress(tcp=runner.address)
    provider = QemuProvider(env.settings, env.context(controller), powerdown_grace_s=1.0)
    try:
        async with Client(runner.address) as client:
            manager = VMManager(client, "qemu", env.data_dir, provider=provider, controller=controller,
                                cluster_id=env.cluster_id, resync_seconds=0.5)
            task = asyncio.create_task(manager.run(), name="vm-manager-under-test")
            try:
                yield Stack(client, provider, env)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await provider.close()
        await runner.stop()
        env.cleanup()


async def node_ready(c: Client, name: str) -> str:
    """The node's Ready condition status ("" while it has not registered)."""
    try:
        node: node_pb2.Node = await c.nodes.Get(meta_pb2.ObjectKey(name=name))
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.NOT_FOUND:
            return ""
        raise
    return next((cond.status for cond in node.status.conditions if cond.type == "Ready"), "")


def new_vm(name: str, *, template: bool = False) -> vm_pb2.VM:
    return vm_pb2.VM(metadata=meta_pb2.ObjectMeta(name=name),
                     spec=vm_pb2.VMSpec(class_name="small", cpu_millis=2000, memory_bytes=1024 << 20,
                                        template=template))


async def test_instant_clones_of_a_warm_parent_are_ready_nodes_that_run_pods(stack: Stack) -> None:
    c, cid = stack.client, stack.env.cluster_id
    parent, kids = f"tpl-{cid}", [f"kid-a-{cid}", f"kid-b-{cid}"]
    await c.vms.Create(new_vm(parent, template=True))

    async def ready(name: str) -> bool:
        return await node_ready(c, name) == "True"

    await eventually(
        lambda: ready(parent),
        what="the parent's node Ready (a cold boot under TCG)",
        timeout=900,
        interval=0.5,
    )
    await c.vms.Clone(vm_pb2.CloneRequest(parent=parent, names=kids))
    for k in kids:
        await eventually(
            functools.partial(ready, k), what=f"clone {k}'s node Ready", timeout=300, interval=0.5
        )

    nodes = [await c.nodes.Get(meta_pb2.ObjectKey(name=n)) for n in [parent, *kids]]
    machine_ids = {n.status.node_info.machine_id for n in nodes}
    assert len(machine_ids) == 3 and "" not in machine_ids
    vms = [await c.vms.Get(meta_pb2.ObjectKey(name=k)) for k in kids]
    assert all(v.status.clone_kind == "instant" and v.spec.parent == parent for v in vms)

    pod = pod_pb2.Pod(
        metadata=meta_pb2.ObjectMeta(name=f"hello-{cid}", namespace="default"),
        spec=pod_pb2.PodSpec(restart_policy="Always", containers=[pod_pb2.Container(
            name="hello", image="cowpod/busybox:latest",
            command=["sh", "-c", "echo hello from $(hostname); sleep 3600"])]),
    )
    key = meta_pb2.ObjectKey(namespace="default", name=pod.metadata.name)
    created = await c.pods.Create(pod)
    await c.pods.Bind(pod_pb2.Binding(pod=key, node_name=kids[0], pod_uid=created.metadata.uid))

    async def running() -> bool:
        got: pod_pb2.Pod = await c.pods.Get(key)
        return got.status.phase == "Running"

    await eventually(running, what="the pod Running in the clone", timeout=300, interval=0.5)

    async def logs() -> bool:
        chunks = [chunk.data async for chunk in c.pods.Logs(pod_pb2.LogsRequest(pod=key), timeout=60)]
        return b"hello from" in b"".join(chunks)

    await eventually(logs, what="the pod's logs through the controller", timeout=60, interval=0.5)

    # A clone's QEMU dies: the provider reports it FAILED, the VM manager marks the
    # VM Failed and deletes its node (so its pods are replaced elsewhere).
    os.kill(stack.provider.pid(kids[1]), signal.SIGKILL)
    await eventually(
        functools.partial(_failed_without_a_ready_node, c, kids[1]),
        what="the killed clone Failed and its node no longer Ready",
        timeout=120,
        interval=0.5,
    )
    failed = await c.vms.Get(meta_pb2.ObjectKey(name=kids[1]))
    assert "qemu" in failed.status.message, failed.status.message
    assert await node_ready(c, kids[0]) == "True"


async def test_an_instant_clone_of_a_node_becomes_a_node_of_its_own(stack: Stack) -> None:
    """Forking a VM that already is a node (not a template): the child resumes as the
    parent — its agent, its pods — and must drop all of that for its own identity."""
    c, cid = stack.client, stack.env.cluster_id
    parent, kid = f"node-{cid}", f"fork-{cid}"
    await c.vms.Create(new_vm(parent))

    async def ready(name: str) -> bool:
        return await node_ready(c, name) == "True"

    await eventually(
        lambda: ready(parent),
        what="the parent's node Ready (a cold boot under TCG)",
        timeout=900,
        interval=0.5,
    )
    pod = pod_pb2.Pod(
        metadata=meta_pb2.ObjectMeta(name=f"stay-{cid}", namespace="default"),
        spec=pod_pb2.PodSpec(restart_policy="Always", containers=[pod_pb2.Container(
            name="stay", image="cowpod/busybox:latest",
            command=["sh", "-c", "echo parent pod up; sleep 3600"])]),
    )
    key = meta_pb2.ObjectKey(namespace="default", name=pod.metadata.name)
    created = await c.pods.Create(pod)
    await c.pods.Bind(pod_pb2.Binding(pod=key, node_name=parent, pod_uid=created.metadata.uid))

    async def running() -> bool:
        got: pod_pb2.Pod = await c.pods.Get(key)
        return got.status.phase == "Running" and got.spec.node_name == parent

    await eventually(running, what="the pod Running in the parent", timeout=300, interval=0.5)

    await c.vms.Clone(vm_pb2.CloneRequest(parent=parent, names=[kid]))
    await eventually(
        functools.partial(ready, kid), what=f"clone {kid}'s node Ready", timeout=300, interval=0.5
    )

    nodes = [await c.nodes.Get(meta_pb2.ObjectKey(name=n)) for n in (parent, kid)]
    ids = [n.status.node_info.machine_id for n in nodes]
    assert ids[0] and ids[1] and ids[0] != ids[1]
    vm: vm_pb2.VM = await c.vms.Get(meta_pb2.ObjectKey(name=kid))
    assert vm.status.clone_kind == "instant" and vm.spec.parent == parent
    # The guest said whose leftovers it dropped; the parent's pod (sandbox + app)
    # was among them, and the child's node runs no pod.
    rec = read_record(stack.provider.vm_dir(kid))
    assert rec is not None and rec.guest.get("previous") == parent
    console = (stack.provider.vm_dir(kid) / "console.log").read_text(errors="replace")
    removed = re.search(rf"clone of node {re.escape(parent)}: removed (\d+) container", console)
    assert removed is not None and int(removed.group(1)) >= 2, console[-2000:]
    pods: pod_pb2.PodList = await c.pods.List(meta_pb2.ListOptions(namespace="default"))
    assert [p.metadata.name for p in pods.items if p.spec.node_name == kid] == []
    # The parent keeps its identity and its pod, and its agent (restored in a new
    # QEMU process at the quiesce) serves the controller again: the pod's logs.
    assert await ready(parent)
    assert await running()

    async def parent_logs() -> bool:
        chunks = [chunk.data async for chunk in c.pods.Logs(pod_pb2.LogsRequest(pod=key), timeout=60)]
        return b"parent pod up" in b"".join(chunks)

    await eventually(
        parent_logs,
        what="the parent's pod logs through the controller after the fork",
        timeout=60,
        interval=0.5,
    )
    parent_vm: vm_pb2.VM = await c.vms.Get(meta_pb2.ObjectKey(name=parent))
    assert parent_vm.status.phase == "Running"


async def _failed_without_a_ready_node(c: Client, name: str) -> bool:
    vm: vm_pb2.VM = await c.vms.Get(meta_pb2.ObjectKey(name=name))
    return vm.status.phase == "Failed" and await node_ready(c, name) != "True"
