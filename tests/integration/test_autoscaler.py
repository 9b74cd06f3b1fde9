"""The autoscaler in a whole simulated cluster: real etcd and controller, the
real scheduler, the VM manager with the sim provider, hollow agents.

Pods the scheduler cannot place get VMs instant-cloned from a warm parent
(just enough of them), run there, and the clones go again once empty; a pod
no class can take gets an event and no VM; with instant clones off, VMs are
full clones; two autoscalers behind one lease never both act.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from agent.hollow import FleetAgents, HollowFleet
from controller.autoscaler.leader import LeaseConfig
from controller.autoscaler.reconciler import Autoscaler, Options
from controller.testing import ControllerRunner
from cowpod.client import Client
from cowpod.clusterconfig import ClusterConfig, VMClass
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import event_pb2, meta_pb2, pod_pb2, vm_pb2
from hypervisor.manager import VMManager
from hypervisor.providers.sim import SimLatencies, SimProvider
from tests.integration.scheduler_harness import fast_controller, pod, running_scheduler
from tests.polling import eventually

pytestmark = pytest.mark.integration

SMALL = VMClass("small", 1000, 1 << 30, labels={"tier": "small"}, max=6)
FAST = SimLatencies(full_clone=0.3, instant_clone=0.05, destroy=0.01, snap_free=0.01)


def config(**kw: object) -> ClusterConfig:
    base = ClusterConfig(
        vm_classes=(SMALL,), scan_interval_s=0.2, scale_down_unneeded_s=3600, cooldown_s=1.0
    )
    return base.replace(**kw)


@dataclass
class Sim:
    controller: ControllerRunner
    client: Client
    autoscalers: list[Autoscaler]

    async def vms(self) -> list[vm_pb2.VM]:
        return list((await self.client.vms.List(meta_pb2.ListOptions())).items)

    async def clones(self) -> list[vm_pb2.VM]:
        return [
            v for v in await self.vms()
            if not v.spec.template and not v.metadata.HasField("deletion_timestamp")
        ]

    async def pods(self) -> list[pod_pb2.Pod]:
        return list((await self.client.pods.List(meta_pb2.ListOptions())).items)

    async def events(self, kind: str, name: str, namespace: str = "default") -> list[event_pb2.Event]:
        ref = event_pb2.ObjectReference(kind=kind, namespace=namespace, name=name)
        resp = await self.client.events.List(event_pb2.ListEventsRequest(involved_object=ref))
        return list(resp.items)

    async def parent_ready(self) -> bool:
        vms = [v for v in await self.vms() if v.spec.template]
        if not vms or vms[0].status.phase != "Running":
            return False
        try:
            node = await self.client.nodes.Get(meta_pb2.ObjectKey(name=vms[0].metadata.name))
        except Exception:
            return False
        return any(t.key == "cowpod.io/parent" for t in node.spec.taints)

    async def all_running(self, n: int) -> bool:
        pods = await self.pods()
        return len(pods) == n and all(p.status.phase == "Running" for p in pods)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def sim_cluster(
    etcd: EtcdMember, prefix: str, tmp: pathlib.Path, cfg: ClusterConfig, *, autoscalers: int = 1
) -> AsyncIterator[Sim]:
    async with (
        fast_controller(etcd.endpoint, prefix) as controller,
        Client(controller.address) as client,
        Client(controller.address) as agents_client,
        running_scheduler(controller.address, "sched-1"),
    ):
        fleet = HollowFleet(agents_client, heartbeat_s=5.0)
        provider = SimProvider(latencies=FAST, agents=FleetAgents(fleet))
        manager = VMManager(client, "sim", tmp, provider=provider, resync_seconds=0.5)
        lease = LeaseConfig(name="as-test", lease_duration_s=2.0, renew_deadline_s=1.5, retry_period_s=0.2)
        scalers = [
            Autoscaler(
                client,
                cfg,
                options=Options(leader_elect=autoscalers > 1, lease=lease, identity=f"as-{i}"),
            )
            for i in range(autoscalers)
        ]
        tasks = [asyncio.create_task(manager.run(), name="test-vm-manager")]
        tasks += [asyncio.create_task(a.run(), name=f"test-autoscaler-{i}") for i, a in enumerate(scalers)]
        try:
            yield Sim(controller, client, scalers)
        finally:
            for t in reversed(tasks):
                await _cancel(t)


async def test_pending_pods_get_just_enough_instant_clones_and_run(
    etcd: EtcdMember, etcd_prefix: str, tmp_path: pathlib.Path
) -> None:
    async with sim_cluster(etcd, etcd_prefix, tmp_path, config()) as sim:
        await eventually(sim.parent_ready, timeout=30, what="the warm parent Running with its node tainted")
        for i in range(5):
            await sim.client.pods.Create(pod(f"web-{i}", cpu=300))
        await eventually(lambda: sim.all_running(5), timeout=30, what="5 pods Running")

        clones = await sim.clones()
        # 900m allocatable per small VM: three 300m pods each, so two clones.
        assert len(clones) == 2
        assert {v.spec.parent for v in clones} == {"small-parent"}
        assert {v.status.clone_kind for v in clones} == {"instant"}
        nodes = {p.spec.node_name for p in await sim.pods()}
        assert nodes == {v.metadata.name for v in clones}
        ev = await sim.events("Pod", "web-0")
        assert any(
            e.reason == "TriggeredScaleUp" and "cloned" in e.message and "from small-parent" in e.message
            for e in ev
        )
        # More passes over a settled cluster make nothing more.
        passes = sim.autoscalers[0].passes
        await eventually(lambda: _more(sim.autoscalers[0], passes + 5), timeout=10, what="five more passes")
        assert len(await sim.clones()) == 2


async def _more(a: Autoscaler, n: int) -> bool:
    return a.passes >= n


async def test_a_pod_no_class_can_take_gets_an_event_and_no_vm(
    etcd: EtcdMember, etcd_prefix: str, tmp_path: pathlib.Path
) -> None:
    async with sim_cluster(etcd, etcd_prefix, tmp_path, config()) as sim:
        await eventually(sim.parent_ready, timeout=30, what="the warm parent")
        await sim.client.pods.Create(pod("huge", cpu=16000))

        async def told() -> bool:
            return any(e.reason == "NotTriggerScaleUp" for e in await sim.events("Pod", "huge"))

        await eventually(told, timeout=20, what="a NotTriggerScaleUp event")
        [e] = [e for e in await sim.events("Pod", "huge") if e.reason == "NotTriggerScaleUp"]
        assert "pod bigger than any VM class" in e.message
        assert await sim.clones() == []


async def test_empty_clones_are_scaled_down_to_the_minimum_and_the_parent_stays(
    etcd: EtcdMember, etcd_prefix: str, tmp_path: pathlib.Path
) -> None:
    small = VMClass("small", 1000, 1 << 30, labels={"tier": "small"}, min=1, max=6)
    cfg = config(vm_classes=(small,), scale_down_unneeded_s=1.0)
    async with sim_cluster(etcd, etcd_prefix, tmp_path, cfg) as sim:
        await eventually(sim.parent_ready, timeout=30, what="the warm parent")
        for i in range(6):
            await sim.client.pods.Create(pod(f"job-{i}", cpu=400))
        await eventually(lambda: sim.all_running(6), timeout=30, what="6 pods Running")
        peak = len(await sim.clones())
        assert peak >= 3  # two 400m pods per 900m node
        for i in range(6):
            await sim.client.pods.Delete(
                meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(namespace="default", name=f"job-{i}"))
            )

        async def down_to_min() -> bool:
            return len(await sim.clones()) == 1 and not await sim.pods()

        await eventually(down_to_min, timeout=40, what="clones scaled down to the class minimum of 1")
        assert [v.metadata.name for v in await sim.vms() if v.spec.template] == ["small-parent"]

        async def scale_down_event() -> bool:
            resp = await sim.client.events.List(event_pb2.ListEventsRequest())
            return any(e.reason == "ScaleDown" and "unneeded" in e.message for e in resp.items)

        await eventually(scale_down_event, timeout=10, what="ScaleDown events")


async def test_with_instant_clones_off_new_vms_are_full_clones(
    etcd: EtcdMember, etcd_prefix: str, tmp_path: pathlib.Path
) -> None:
    async with sim_cluster(etcd, etcd_prefix, tmp_path, config(instant_clones=False)) as sim:
        await sim.client.pods.Create(pod("web-0", cpu=300))
        await eventually(lambda: sim.all_running(1), timeout=30, what="the pod Running")
        vms = await sim.vms()
        assert [v.spec.template for v in vms] == [False]
        assert vms[0].status.clone_kind == "full" and not vms[0].spec.parent


async def test_two_autoscalers_behind_one_lease_make_each_vm_once(
    etcd: EtcdMember, etcd_prefix: str, tmp_path: pathlib.Path
) -> None:
    async with sim_cluster(etcd, etcd_prefix, tmp_path, config(), autoscalers=2) as sim:
        await eventually(sim.parent_ready, timeout=30, what="the warm parent")
        for i in range(3):
            await sim.client.pods.Create(pod(f"web-{i}", cpu=300))
        await eventually(lambda: sim.all_running(3), timeout=30, what="3 pods Running")
        assert len([v for v in await sim.vms() if v.spec.template]) == 1
        assert len(await sim.clones()) == 1
        assert sum(a.elector.is_leader() for a in sim.autoscalers) == 1


async def test_the_controller_runs_the_autoscaler_when_asked(
    etcd: EtcdMember, etcd_prefix: str, tmp_path: pathlib.Path
) -> None:
    """`--autoscale` wiring, with TLS and authentication on: the autoscaler
    calls the API as system:controller and asks for the class's warm parent."""
    runner = ControllerRunner.secure(
        etcd.endpoint, etcd_prefix, pki_dir=tmp_path / "pki", autoscaler=config()
    )
    async with runner, runner.client() as client:

        async def parent_asked_for() -> bool:
            vms = (await client.vms.List(meta_pb2.ListOptions())).items
            return [(v.metadata.name, v.spec.template, v.spec.class_name) for v in vms] == [
                ("small-parent", True, "small")
            ]

        await eventually(parent_asked_for, timeout=20, what="the warm parent VM object")
        [vm] = (await client.vms.List(meta_pb2.ListOptions())).items
        assert dict(vm.spec.node_labels) == {"tier": "small", "cowpod.io/class": "small"}
        assert (vm.spec.cpu_millis, vm.spec.memory_bytes) == (1000, 1 << 30)
        # Its node exists already, tainted, so no pod can land on it before the taint pass.
        node = await client.nodes.Get(meta_pb2.ObjectKey(name="small-parent"))
        assert [(t.key, t.effect) for t in node.spec.taints] == [("cowpod.io/parent", "NoSchedule")]
