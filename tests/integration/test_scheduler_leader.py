"""Two schedulers on one controller: leader election, fail-over, no overcommit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agent.hollow import HollowNodeSpec
from controller.testing import ControllerRunner
from cowpod.client import Client
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import meta_pb2
from tests.integration.scheduler_harness import (
    FAST_LEASE,
    all_pods,
    bound_count,
    fast_controller,
    hollow_fleet,
    pod,
    running_scheduler,
    usage_by_node,
    wait_for,
)

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
    return lease.spec.holder_identity


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

        await wait_for(fifty, what="50 pods bound")
        leader, standby = (a, b) if a.leading.is_set() else (b, a)
        assert not standby.leading.is_set()
        assert standby.scheduler.scheduled == 0
        assert await holder(client) == leader.identity
        usage = await usage_by_node(client)
        assert all(cpu <= 1000 for cpu, _, _ in usage.values()), usage
        assert sum(n for _, _, n in usage.values()) == 50
        await asyncio.sleep(0.3)
        assert await bound_count(client) == 50


async def test_standby_takes_over_when_the_leader_dies(client: Client, controller: ControllerRunner) -> None:
    specs = [HollowNodeSpec(f"n{i}", cpu_millis=100_000, pods=500) for i in range(5)]
    async with hollow_fleet(client, specs, heartbeat_s=5.0, mark_running=False):
        async with running_scheduler(controller.address, "a", leader_elect=True, release_on_exit=False) as (
            a,
            a_task,
        ):
            await a.leading.wait()
            async with running_scheduler(controller.address, "b", leader_elect=True) as (b, _):
                await create_pods(client, "first-", 20, 10)

                async def first_bound() -> bool:
                    return await bound_count(client) == 20

                await wait_for(first_bound, what="first pods bound by the leader")
                assert a.scheduler.scheduled == 20 and not b.leading.is_set()
                # The leader dies without releasing its lease (a crash, not a shutdown).
                a_task.cancel()
                await asyncio.gather(a_task, return_exceptions=True)
                await create_pods(client, "second-", 20, 10)
                await asyncio.wait_for(b.leading.wait(), FAST_LEASE.lease_duration_s * 5)

                async def all_bound() -> bool:
                    return await bound_count(client) == 40

                await wait_for(all_bound, what="second pods bound by the new leader")
                assert b.scheduler.scheduled == 20
                assert await holder(client) == b.identity
                names = [p.metadata.name for p in await all_pods(client) if p.spec.node_name]
                assert len(names) == len(set(names)) == 40


async def test_clean_shutdown_hands_the_lease_over(client: Client, controller: ControllerRunner) -> None:
    async with hollow_fleet(client, [HollowNodeSpec("n0")], heartbeat_s=5.0, mark_running=False):
        async with running_scheduler(controller.address, "a", leader_elect=True) as (a, a_task):
            await a.leading.wait()
            async with running_scheduler(controller.address, "b", leader_elect=True) as (b, _):
                a_task.cancel()
                await asyncio.gather(a_task, return_exceptions=True)
                assert await holder(client) == ""  # released, not left to expire
                await asyncio.wait_for(b.leading.wait(), FAST_LEASE.lease_duration_s * 5)
                assert await holder(client) == "b"
