"""Two schedulers on one controller: leader election, fail-over, no overcommit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agent.hollow import HollowNodeSpec
from controller.kinds import PODS
from controller.store import Put, encode
from controller.testing import ControllerRunner
from cowpod.client import Client
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import meta_pb2, pod_pb2
from scheduler.config import SchedulerConfig
from tests.integration.scheduler_harness import (
    FAST_LEASE,
    PATIENCE_S,
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


async def create_pods(client: Client, prefix: str, n: int, cpu: int) -> None:
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with sem:
            await client.pods.Create(pod(f"{prefix}{i}", cpu=cpu, memory=1 << 20))

    await asyncio.gather(*(one(i) for i in range(n)))


async def holder(client: Client) -> str:
    lease = await client.leases.Get(
        meta_pb2.ObjectKey(namespace=FAST_LEASE.namespace, name=FAST_LEASE.lease_name)
    )
    return str(lease.spec.holder_identity)


async def test_only_the_leader_binds_and_no_node_is_overcommitted(
    client: Client, controller: ControllerRunner
) -> None:
    specs = [HollowNodeSpec(f"n{i}", cpu_millis=1000, memory_bytes=8 << 30) for i in range(10)]
    async with (
        hollow_fleet(client, specs, heartbeat_s=5.0, mark_running=False),
        running_scheduler(controller.address, "a", leader_elect=True) as (a, _),
        running_scheduler(controller.address, "b", leader_elect=True) as (b, _),
    ):
        # 60 pods of 200m on 10 x 1000m: exactly 50 fit.
        await create_pods(client, "p", 60, 200)

        async def fifty() -> bool:
            return await bound_count(client) == 50

        await eventually(fifty, what="50 pods bound", timeout=60.0)
        leader, standby = (a, b) if a.leading.is_set() else (b, a)
        assert not standby.leading.is_set()
        assert standby.scheduler.scheduled == 0
        assert await holder(client) == leader.identity
        usage = await usage_by_node(client)
        assert all(cpu <= 1000 for cpu, _, _ in usage.values()), usage
        assert sum(n for _, _, n in usage.values()) == 50
        await asyncio.sleep(0.3)
        assert await bound_count(client) == 50


async def test_two_active_schedulers_without_leader_election_never_overcommit(
    client: Client, controller: ControllerRunner
) -> None:
    """No leader election, two active schedulers on the same nodes, each sure from its own
    cache that its pods fit: `a` places the pods named for it, `b` the others (as two
    profiles or two teams' schedulers would), 40 pods for 24 slots. Only the controller's
    capacity-aware bind (the nodes' binding sequences in etcd) stands between them and
    overcommit: no node's bound requests may exceed its allocatable, no pod be bound twice."""
    specs = [HollowNodeSpec(f"n{i}", cpu_millis=1000, memory_bytes=1 << 30, pods=6) for i in range(8)]
    seen: dict[str, set[str]] = {}  # pod uid -> every node the watch ever showed it bound to
    watch = client.pods.Watch(meta_pb2.WatchOptions(send_initial=True))

    async def record() -> None:
        async for ev in watch:
            if ev.type != meta_pb2.BOOKMARK and ev.object.spec.node_name:
                seen.setdefault(ev.object.metadata.uid, set()).add(ev.object.spec.node_name)

    recorder = asyncio.create_task(record())
    try:
        async with hollow_fleet(client, specs, heartbeat_s=5.0, mark_running=False):
            names = ("sched-a", "sched-b")
            cfg = {n: SchedulerConfig(scheduler_name=n, leader_election=FAST_LEASE) for n in names}
            async with (
                running_scheduler(controller.address, "a", cfg=cfg["sched-a"]) as (a, _),
                running_scheduler(controller.address, "b", cfg=cfg["sched-b"]) as (b, _),
            ):
                await asyncio.gather(a.leading.wait(), b.leading.wait())
                # 8 x 1000m / 300m: 3 fit per node, 24 of 40 (memory, 3 x 300Mi per 1Gi,
                # agrees). All 40 appear at one revision, so each scheduler decides its 20 at
                # once, seeing room for 24, before any bind of the other can reach it.
                pods = [pod(f"p{i}", cpu=300, memory=300 << 20) for i in range(40)]
                for i, p in enumerate(pods):
                    p.spec.scheduler_name = names[i % 2]
                await create_in_one_transaction(controller, pods)

                async def placed() -> bool:
                    return await bound_count(client) >= 24

                await eventually(placed, what="24 pods bound", timeout=60.0)

                async def counted() -> bool:
                    return a.scheduler.scheduled + b.scheduler.scheduled >= 24

                await eventually(counted, what="both schedulers' answers", timeout=60.0)
                await asyncio.sleep(0.5)  # a late overcommitting bind would show now
                assert a.scheduler.scheduled + b.scheduler.scheduled == 24
                usage = await usage_by_node(client)
                assert all(cpu <= 1000 and mem <= 1 << 30 and n <= 6 for cpu, mem, n in usage.values()), usage
                assert sum(n for _, _, n in usage.values()) == 24
                failed = sum(x.metrics.binds.labels("failed")._value.get() for x in (a, b))
                assert failed > 0  # the race happened: some binds were refused
        assert len(seen) == 24 and all(len(nodes) == 1 for nodes in seen.values()), seen
    finally:
        recorder.cancel()
        await asyncio.gather(recorder, return_exceptions=True)


async def test_standby_takes_over_when_the_leader_dies(client: Client, controller: ControllerRunner) -> None:
    specs = [HollowNodeSpec(f"n{i}", cpu_millis=100_000, pods=500) for i in range(5)]
    async with hollow_fleet(client, specs, heartbeat_s=5.0, mark_running=False):
        async with running_scheduler(controller.address, "a", leader_elect=True, release_on_exit=False) as (
            a,
            a_task,
        ):
            await asyncio.wait_for(a.leading.wait(), PATIENCE_S)
            async with running_scheduler(controller.address, "b", leader_elect=True) as (b, _):
                await create_pods(client, "first-", 20, 10)

                async def first_bound() -> bool:
                    return await bound_count(client) == 20

                await eventually(first_bound, what="first pods bound by the leader", timeout=60.0)
                # The List may show the binds before the leader has read its BindBatch answer.
                await eventually(
                    lambda: _true(a.scheduler.scheduled == 20), what="the leader's count", timeout=60.0
                )
                assert not b.leading.is_set()
                # The leader dies without releasing its lease (a crash, not a shutdown).
                a_task.cancel()
                await asyncio.gather(a_task, return_exceptions=True)
                await create_pods(client, "second-", 20, 10)
                await asyncio.wait_for(b.leading.wait(), PATIENCE_S)

                async def all_bound() -> bool:
                    return await bound_count(client) == 40

                await eventually(all_bound, what="second pods bound by the new leader", timeout=60.0)
                await eventually(
                    lambda: _true(b.scheduler.scheduled == 20), what="the new leader's count", timeout=60.0
                )
                assert await holder(client) == b.identity
                names = [p.metadata.name for p in await all_pods(client) if p.spec.node_name]
                assert len(names) == len(set(names)) == 40


async def test_clean_shutdown_hands_the_lease_over(client: Client, controller: ControllerRunner) -> None:
    async with hollow_fleet(client, [HollowNodeSpec("n0")], heartbeat_s=5.0, mark_running=False):
        async with running_scheduler(controller.address, "a", leader_elect=True) as (a, a_task):
            await asyncio.wait_for(a.leading.wait(), PATIENCE_S)
            async with running_scheduler(controller.address, "b", leader_elect=True) as (b, _):
                a_task.cancel()
                await asyncio.gather(a_task, return_exceptions=True)
                # Released, not left to expire (b may already have taken it).
                assert await holder(client) in ("", "b")
                await asyncio.wait_for(b.leading.wait(), PATIENCE_S)
                assert await holder(client) == "b"


async def _true(v: bool) -> bool:
    return v


async def create_in_one_transaction(controller: ControllerRunner, pods: list[pod_pb2.Pod]) -> None:
    """Create `pods` as PodService.Create would, all at one etcd revision."""
    ctl = controller.controller
    assert ctl is not None
    puts = []
    for p in pods:
        p.spec.restart_policy = "Always"
        p.status.phase = "Pending"
        ctl.pods.res.prepare_new(p)
        puts.append(Put(PODS.key(p.metadata.namespace, p.metadata.name), encode(p)))
    res = await ctl.store.txn([], puts)
    assert res.succeeded
