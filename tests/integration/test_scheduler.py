"""The scheduler against the real controller and etcd, with hollow nodes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agent.hollow import HollowNodeSpec
from controller.testing import ControllerRunner
from cowpod.client import Client
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import event_pb2, meta_pb2
from tests.integration.scheduler_harness import (
    all_pods,
    bound_count,
    fast_controller,
    hollow_fleet,
    pod,
    running_scheduler,
    usage_by_node,
)
from tests.polling import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def controller(etcd: EtcdMember, etcd_prefix: str) -> AsyncIterator[ControllerRunner]:
    async with fast_controller(etcd.endpoint, etcd_prefix) as runner:
        yield runner


@pytest.fixture
async def client(controller: ControllerRunner) -> AsyncIterator[Client]:
    async with Client(controller.address) as c:
        yield c


async def test_binds_runs_and_explains_what_cannot_fit(client: Client, controller: ControllerRunner) -> None:
    specs = [HollowNodeSpec(f"n{i}", cpu_millis=1000, memory_bytes=2 << 30) for i in range(3)]
    specs.append(
        HollowNodeSpec(
            "gpu", cpu_millis=1000, memory_bytes=2 << 30, taints=[("dedicated", "gpu", "NoSchedule")]
        )
    )
    async with (
        hollow_fleet(client, specs, heartbeat_s=5.0) as fleet,
        running_scheduler(
            controller.address,
            "s1",
        ),
    ):
        for i in range(6):
            await client.pods.Create(pod(f"web-{i}", cpu=400))
        await client.pods.Create(pod("huge", cpu=100, memory=4 << 30))

        async def placed() -> bool:
            ps = {p.metadata.name: p for p in await all_pods(client)}
            return all(ps[f"web-{i}"].status.phase == "Running" for i in range(6))

        await eventually(placed, what="six pods Running", timeout=60.0)
        ps = {p.metadata.name: p for p in await all_pods(client)}
        assert all(ps[f"web-{i}"].spec.node_name in {"n0", "n1", "n2"} for i in range(6))
        assert fleet.marked_running >= 6
        usage = await usage_by_node(client)
        assert all(cpu <= 1000 for cpu, _, _ in usage.values()), (
            usage,
            {p.metadata.name: p.spec.node_name for p in await all_pods(client)},
        )

        want = (
            "0/4 nodes are available: 3 Insufficient memory, "
            "1 node(s) had untolerated taint {dedicated: gpu}."
        )

        async def explained() -> bool:
            p = await client.pods.Get(meta_pb2.ObjectKey(namespace="default", name="huge"))
            conds = {c.type: c for c in p.status.conditions}
            c = conds.get("PodScheduled")
            return c is not None and c.status == "False" and c.reason == "Unschedulable" and c.message == want

        await eventually(explained, what="PodScheduled=False with the reasons", timeout=60.0)
        assert (
            await client.pods.Get(meta_pb2.ObjectKey(namespace="default", name="huge"))
        ).spec.node_name == ""

        async def evented() -> bool:
            evs = await client.events.List(
                event_pb2.ListEventsRequest(
                    involved_object=event_pb2.ObjectReference(kind="Pod", namespace="default", name="huge")
                )
            )
            return any(e.reason == "FailedScheduling" and e.message == want for e in evs.items)

        await eventually(evented, what="a FailedScheduling event", timeout=60.0)


async def test_ephemeral_storage_requests_are_scheduled(client: Client, controller: ControllerRunner) -> None:
    """A pod asking more disk than any node has stays Pending and says why; one that fits binds,
    and the controller's bind check (which the scheduler's bind passes through) agrees."""
    specs = [HollowNodeSpec(f"d{i}", ephemeral_storage_bytes=(4 << 30) * (i + 1)) for i in range(2)]
    async with (
        hollow_fleet(client, specs, heartbeat_s=5.0),
        running_scheduler(controller.address, "s1"),
    ):
        big = pod("disk-hog")
        big.spec.containers[0].resources.requests.ephemeral_storage_bytes = 20 << 30
        await client.pods.Create(big)
        fits = pod("disk-ok")
        # A limit without a request reserves the limit: 6Gi fits only d1 (8Gi).
        fits.spec.containers[0].resources.limits.ephemeral_storage_bytes = 6 << 30
        await client.pods.Create(fits)

        await eventually(lambda: _bound(client, "disk-ok"), what="disk-ok bound", timeout=60.0)
        got = await client.pods.Get(meta_pb2.ObjectKey(namespace="default", name="disk-ok"))
        assert got.spec.node_name == "d1"

        want = "0/2 nodes are available: 2 Insufficient ephemeral-storage."

        async def explained() -> bool:
            p = await client.pods.Get(meta_pb2.ObjectKey(namespace="default", name="disk-hog"))
            c = {c.type: c for c in p.status.conditions}.get("PodScheduled")
            return c is not None and c.status == "False" and c.message == want

        await eventually(explained, what="disk-hog Pending with the reason", timeout=60.0)
        p = await client.pods.Get(meta_pb2.ObjectKey(namespace="default", name="disk-hog"))
        assert p.spec.node_name == "" and p.status.phase == "Pending"


async def test_pending_pod_is_placed_when_a_node_arrives(
    client: Client, controller: ControllerRunner
) -> None:
    async with (
        hollow_fleet(client, [HollowNodeSpec("small", cpu_millis=500)], heartbeat_s=5.0) as fleet,
        running_scheduler(controller.address, "s1") as (app, _),
    ):
        await client.pods.Create(pod("big", cpu=2000))
        await eventually(
            lambda: _true(app.scheduler.queue.depth()["unschedulable"] == 1), what="pod parked", timeout=60.0
        )
        await fleet.add(HollowNodeSpec("large", cpu_millis=4000))

        async def bound() -> bool:
            p = await client.pods.Get(meta_pb2.ObjectKey(namespace="default", name="big"))
            return p.spec.node_name == "large"

        await eventually(bound, what="pod bound to the new node", timeout=60.0)


async def test_freed_capacity_requeues_a_waiting_pod(client: Client, controller: ControllerRunner) -> None:
    async with (
        hollow_fleet(client, [HollowNodeSpec("n", cpu_millis=1000)], heartbeat_s=5.0),
        running_scheduler(
            controller.address,
            "s1",
        ) as (app, _),
    ):
        await client.pods.Create(pod("first", cpu=800))
        await eventually(lambda: _bound(client, "first"), what="first bound", timeout=60.0)
        await client.pods.Create(pod("second", cpu=800))
        await eventually(
            lambda: _true(app.scheduler.queue.depth()["unschedulable"] == 1),
            what="second parked",
            timeout=60.0,
        )
        await client.pods.Delete(
            meta_pb2.DeleteOptions(
                key=meta_pb2.ObjectKey(namespace="default", name="first"), grace_period_seconds=0
            )
        )
        await eventually(lambda: _bound(client, "second"), what="second bound after first left", timeout=60.0)


async def _bound(client: Client, name: str) -> bool:
    p = await client.pods.Get(meta_pb2.ObjectKey(namespace="default", name=name))
    return bool(p.spec.node_name)


async def _true(v: bool) -> bool:
    return v


async def test_two_schedulers_racing_never_bind_a_pod_twice(
    client: Client, controller: ControllerRunner
) -> None:
    """No leader election: both schedule the same pods at once. The controller's
    conditional bind lets exactly one plan per pod land; the loser forgets its
    assumption and drops the pod when the watch shows it bound."""
    specs = [HollowNodeSpec(f"n{i}", cpu_millis=64_000, memory_bytes=64 << 30, pods=500) for i in range(20)]
    async with (
        hollow_fleet(client, specs, heartbeat_s=5.0, mark_running=False),
        running_scheduler(
            controller.address,
            "a",
        ) as (a, _),
        running_scheduler(controller.address, "b") as (b, _),
    ):
        await asyncio.gather(a.leading.wait(), b.leading.wait())
        sem = asyncio.Semaphore(32)

        async def create(i: int) -> None:
            async with sem:
                await client.pods.Create(pod(f"p{i}", cpu=10, memory=1 << 20))

        await asyncio.gather(*(create(i) for i in range(300)))
        await eventually(lambda: _true_async(bound_count(client), 300), what="all 300 bound", timeout=60.0)
        # Every pod bound once: the two schedulers' successful binds add up to the pod count
        # (the List may show a bind before its scheduler has read the answer).
        await eventually(
            lambda: a.scheduler.scheduled + b.scheduler.scheduled >= 300, what="both schedulers' answers"
        )
        assert a.scheduler.scheduled + b.scheduler.scheduled == 300
        ok = a.metrics.binds.labels("ok")._value.get() + b.metrics.binds.labels("ok")._value.get()
        assert ok == 300


async def _true_async(v: object, want: int) -> bool:
    return await v == want  # type: ignore[misc]
