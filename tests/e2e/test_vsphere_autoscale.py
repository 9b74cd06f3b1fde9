"""End to end on VMware's simulator: a pod no node can take becomes Running on
a VM that the autoscaler instant-cloned, through InstantClone_Task, from the
class's warm parent in vcsim; the guest of each VM is a container of cowpod's
VM image, whose init took its identity from guestinfo and whose agent joined.

Everything real but in one process, as tests/e2e/test_autoscale_docker.py:
etcd, the controller, the scheduler, the VM manager driving the vsphere
provider, and the autoscaler. The simulator is started by deploy/vcsim/start.sh.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from controller.autoscaler.reconciler import Autoscaler, Options
from controller.testing import ControllerRunner
from cowpod.client import Client
from cowpod.clusterconfig import ClusterConfig, VMClass
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import meta_pb2, pod_pb2, vm_pb2
from hypervisor.manager import VMManager
from hypervisor.provider import ControllerAddress
from hypervisor.providers.vsphere.client import connect
from hypervisor.providers.vsphere.testing import Vcsim, VSphereTestEnv
from tests.polling import eventually

pytestmark = pytest.mark.e2e

SMALL = VMClass("small", 1000, 512 << 20, labels={"tier": "small"}, max=2, image="cowpod-template")
CONFIG = ClusterConfig(vm_classes=(SMALL,), scan_interval_s=1.0, cooldown_s=5.0, max_vms=3,
                       provider="vsphere")



async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def cluster(etcd: EtcdMember, prefix: str, sim: Vcsim) -> AsyncIterator[tuple[Client, VSphereTestEnv]]:
    async with ControllerRunner(etcd.endpoint, prefix) as runner, Client(runner.address) as client:
        env = VSphereTestEnv(sim, controller=ControllerAddress(tcp=runner.address))
        from tests.integration.scheduler_harness import running_scheduler

        async with running_scheduler(runner.address, "sched-vsphere"):
            provider = env.provider()
            manager = VMManager(client, "vsphere", env.data_dir, provider=provider, cluster_id=env.cluster_id)
            autoscaler = Autoscaler(client, CONFIG, options=Options(leader_elect=False))
            tasks = [asyncio.create_task(manager.run(), name="e2e-vm-manager"),
                     asyncio.create_task(autoscaler.run(), name="e2e-autoscaler")]
            try:
                yield client, env
            finally:
                await _cancel(tasks[1])
                await _cancel(tasks[0])
                try:
                    await env.cleanup()
                finally:
                    await provider.close()


def instant_clone_tasks(sim: Vcsim) -> list[tuple[str, str, str]]:
    """(parent name, child name, state) of every instantClone task the simulator ran."""
    si = sim.connect()
    try:
        out = []
        for t in si.RetrieveContent().taskManager.recentTask:
            info = t.info
            if info.descriptionId == "VirtualMachine.instantClone":
                child = info.result.name if info.result is not None else ""
                out.append((info.entity.name, child, str(info.state)))
        return out
    finally:
        connect.Disconnect(si)


async def test_a_pending_pod_runs_on_a_vm_made_by_InstantClone_Task(
        etcd: EtcdMember, etcd_prefix: str, vcsim: Vcsim) -> None:
    async with cluster(etcd, etcd_prefix, vcsim) as (client, env):
        async def parent_ready() -> bool:
            parents = [v for v in (await client.vms.List(meta_pb2.ListOptions())).items if v.spec.template]
            if not parents or parents[0].status.phase != "Running":
                return False
            node = await client.nodes.Get(meta_pb2.ObjectKey(name=parents[0].metadata.name))
            return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)

        await eventually(parent_ready, timeout=180, what="the warm parent VM Running with its node Ready")

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
        got = await client.pods.Get(meta_pb2.ObjectKey(namespace="default", name="web"))
        vm: vm_pb2.VM = await client.vms.Get(meta_pb2.ObjectKey(name=got.spec.node_name))
        assert not vm.spec.template and vm.spec.parent == "small-parent"
        assert vm.status.clone_kind == "instant"
        # The simulator's own record: the VM the pod runs on came from InstantClone_Task on the parent.
        assert ("small-parent", vm.metadata.name, "success") in instant_clone_tasks(vcsim)
        # ... and the pod's containers nest in that VM's guest container.
        assert env.pod_containers(vm.metadata.name)
