"""End to end on the real Docker engine: a pod no node can take becomes Running
on a VM the autoscaler instant-cloned from the class's warm parent — also when
that parent was paused for being idle, its node quietly VMPaused, and the
child's agent forked from the parent's zygote while the parent stays frozen.

Everything real but in one process: etcd, the controller (with the unix
socket the VMs' agents dial), the scheduler, the VM manager driving the
docker provider (VM containers labelled cowpod.test=1), and the autoscaler.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import docker.errors
import pytest

from controller.autoscaler.reconciler import Autoscaler, Options
from controller.testing import ControllerRunner
from cowpod.client import Client
from cowpod.clusterconfig import ClusterConfig, VMClass
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import event_pb2, meta_pb2, pod_pb2, vm_pb2
from hypervisor.manager import VMManager
from hypervisor.providers.docker.provider import DockerProvider
from hypervisor.providers.docker.zygote_warm import ZygoteWarmStarter
from hypervisor.testing import DockerTestEnv
from tests.integration.scheduler_harness import running_scheduler
from tests.polling import eventually

pytestmark = pytest.mark.e2e

SMALL = VMClass("small", 1000, 512 << 20, labels={"tier": "small"}, max=2)
CONFIG = ClusterConfig(vm_classes=(SMALL,), scan_interval_s=1.0, cooldown_s=5.0, max_vms=3)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@dataclasses.dataclass
class Cluster:
    """The parts one test runs; `explain` says what each of them sees (for a timed-out wait)."""

    client: Client
    manager: VMManager
    autoscaler: Autoscaler

    def explain(self) -> str:
        def vms(cache: Any) -> str:
            return "; ".join(
                f"{v.metadata.name} rv={v.metadata.resource_version} phase={v.status.phase or '-'}"
                f"{' paused' if v.spec.paused else ''}"
                for v in sorted(cache.values(), key=lambda v: v.metadata.name)
            )

        a, m = self.autoscaler, self.manager
        return (
            f"autoscaler: passes={a.passes} synced={a.synced} informer rv={a.vms.resource_version} "
            f"vms: {vms(a.vms.cache)}; parent_last_used={dict(a.memory.parent_last_used)} "
            f"(now {a.clock.now():.1f})\n"
            f"vm-manager: passes={m.passes} informer rv={m.vms.resource_version} vms: {vms(m.vms.cache)}; "
            f"written={m.api.written}"
        )


@contextlib.asynccontextmanager
async def cluster(
    etcd: EtcdMember, prefix: str, env: DockerTestEnv, *, warm: ZygoteWarmStarter | None = None,
    options: Options | None = None, **controller: Any,
) -> AsyncIterator[Cluster]:
    sock = env.data_dir / "run" / "controller.sock"
    sock.parent.mkdir(parents=True, exist_ok=True)
    # The controller here is plaintext; the VMs' agents must be told so.
    provider = DockerProvider(env.config(),
                              warm_start=warm)
    async with (
        ControllerRunner(etcd.endpoint, prefix, listen_unix=str(sock), **controller) as runner,
        Client(runner.address) as client,
        running_scheduler(runner.address, "sched-e2e"),
    ):
        manager = VMManager(client, "docker", env.data_dir, provider=provider, cluster_id=env.cluster_id)
        autoscaler = Autoscaler(client, CONFIG, options=options or Options(leader_elect=False))
        tasks = [
            asyncio.create_task(manager.run(), name="e2e-vm-manager"),
            asyncio.create_task(autoscaler.run(), name="e2e-autoscaler"),
        ]
        try:
            yield Cluster(client, manager, autoscaler)
        finally:
            await _cancel(tasks[1])
            await _cancel(tasks[0])
            try:
                await _teardown(env)
            finally:
                await provider.close()  # stops the zygotes, if any


async def _teardown(env: DockerTestEnv) -> None:
    """Destroy the VMs (children first), then sweep their pods' containers: an
    agent may still be (re)creating one while its VM goes."""
    fresh = env.provider()
    try:
        vms = sorted(await fresh.list(), key=lambda v: v.parent == "")
        for vm in vms:
            with contextlib.suppress(Exception):
                await fresh.destroy(vm.name, cascade=True)
    finally:
        await fresh.close()
    nodes = [f"cowpod.node={vm.name}" for vm in vms]
    if not nodes:
        return
    for _ in range(2):
        for label in nodes:
            for c in env.client.containers.list(all=True, filters={"label": label}, ignore_removed=True):
                with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                    c.remove(force=True, v=True)
        await asyncio.sleep(1.0)


async def _vms(client: Client) -> list[vm_pb2.VM]:
    return list((await client.vms.List(meta_pb2.ListOptions())).items)


async def test_a_pending_pod_runs_on_a_freshly_cloned_vm(
    etcd: EtcdMember, etcd_prefix: str, env: DockerTestEnv
) -> None:
    async with cluster(etcd, etcd_prefix, env) as parts:
        client = parts.client

        async def parent_ready() -> bool:
            parents = [v for v in await _vms(client) if v.spec.template]
            if not parents or parents[0].status.phase != "Running":
                return False
            node = await client.nodes.Get(meta_pb2.ObjectKey(name=parents[0].metadata.name))
            return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)

        await eventually(parent_ready, timeout=180, what="the warm parent VM Running with its node Ready",
                         explain=parts.explain)

        got = await _run_web_pod(client)
        vms = {v.metadata.name: v for v in await _vms(client)}
        vm = vms[got.spec.node_name]
        assert not vm.spec.template
        assert vm.spec.parent == "small-parent"
        assert vm.status.clone_kind == "instant"
        assert len([v for v in vms.values() if not v.spec.template]) == 1

        ref = event_pb2.ObjectReference(kind="Pod", namespace="default", name="web")
        events = (await client.events.List(event_pb2.ListEventsRequest(involved_object=ref))).items
        assert any(e.reason == "TriggeredScaleUp" and "from small-parent" in e.message for e in events)


async def _run_web_pod(client: Client) -> pod_pb2.Pod:
    """A 200m pod `web` that needs new capacity, once it is Running."""
    pod = pod_pb2.Pod()
    pod.metadata.name = "web"
    pod.metadata.namespace = "default"
    c = pod.spec.containers.add(name="main", image="cowpod/busybox:latest", command=["sleep", "3600"])
    c.resources.requests.cpu_millis = 200
    c.resources.requests.memory_bytes = 32 << 20
    await client.pods.Create(pod)

    async def running() -> bool:
        p = await client.pods.Get(meta_pb2.ObjectKey(namespace="default", name="web"))
        return bool(p.status.phase == "Running")

    await eventually(running, timeout=180, what="pod web Running")
    got: pod_pb2.Pod = await client.pods.Get(meta_pb2.ObjectKey(namespace="default", name="web"))
    return got


def _ready(node: Any) -> tuple[str, str]:
    for c in node.status.conditions:
        if c.type == "Ready":
            return str(c.status), str(c.reason)
    return "", ""


async def test_an_idle_parent_is_paused_and_a_pod_runs_on_a_clone_forked_from_it(
    etcd: EtcdMember, etcd_prefix: str, env: DockerTestEnv
) -> None:
    warm = ZygoteWarmStarter(ZygoteWarmStarter.default_socket_dir(env.data_dir))
    options = Options(leader_elect=False, parent_idle_pause_s=1.0)
    async with cluster(etcd, etcd_prefix, env, warm=warm, options=options,
                       node_monitor_grace=2.0, node_monitor_period=0.5) as parts:
        client = parts.client
        async def parent_paused() -> bool:
            parents = [v for v in await _vms(client) if v.spec.template]
            return bool(parents) and parents[0].spec.paused and parents[0].status.phase == "Paused"

        await eventually(parent_paused, timeout=180, what="the idle warm parent paused",
                         explain=parts.explain)
        container = await asyncio.to_thread(env.client.containers.get, env.vm_container("small-parent"))
        assert container.attrs["State"]["Paused"]
        ref = event_pb2.ObjectReference(kind="VM", name="small-parent")
        events = (await client.events.List(event_pb2.ListEventsRequest(involved_object=ref))).items
        assert any(e.reason == "PausedParent" for e in events)

        # Its node: Ready=Unknown for a paused VM, never unreachable (no NoExecute taint).
        async def node_marked_paused() -> bool:
            node = await client.nodes.Get(meta_pb2.ObjectKey(name="small-parent"))
            return _ready(node) == ("Unknown", "VMPaused")

        await eventually(
            node_marked_paused, timeout=60, what="the paused parent's node Ready=Unknown/VMPaused"
        )

        got = await _run_web_pod(client)
        vm = await client.vms.Get(meta_pb2.ObjectKey(name=got.spec.node_name))
        assert vm.spec.parent == "small-parent" and vm.status.clone_kind == "instant"
        child_node = await client.nodes.Get(meta_pb2.ObjectKey(name=vm.metadata.name))
        assert _ready(child_node)[0] == "True"
        # The child's agent was forked by the parent's zygote, which the pause did not freeze.
        assert warm.last_clone is not None
        top = await asyncio.to_thread(env.client.containers.get(env.vm_container(vm.metadata.name)).top)
        pid_col = top["Titles"].index("PID")
        assert str(warm.last_clone.pid) in [row[pid_col] for row in top["Processes"]]
        # ... and the parent stayed paused throughout, its node quiet.
        parent = await client.vms.Get(meta_pb2.ObjectKey(name="small-parent"))
        assert parent.spec.paused and parent.status.phase == "Paused"
        container.reload()
        assert container.attrs["State"]["Paused"]
        pnode = await client.nodes.Get(meta_pb2.ObjectKey(name="small-parent"))
        assert _ready(pnode) == ("Unknown", "VMPaused")
        assert not [t for t in pnode.spec.taints if t.effect == "NoExecute"]
