"""`cowpod down` fences the autoscaler with its own leader lease before it
destroys VMs, so no warm parent or clone is recreated behind it."""

from __future__ import annotations

import asyncio

import pytest

from controller.autoscaler.leader import Elector
from cowpod.client import Client
from cowpod.clock import RealClock
from cowpod.local import fleet
from cowpod.v1 import lease_pb2, meta_pb2, vm_pb2

pytestmark = pytest.mark.integration


async def test_fence_takes_a_lease_an_autoscaler_holds_and_it_stands_down(client: Client) -> None:
    elector = Elector(client, "controller-a", RealClock())
    assert await elector.try_acquire_or_renew() and elector.is_leader()
    await fleet.fence_autoscaler(client)
    lease = await client.leases.Get(fleet.AUTOSCALER_LEASE)
    assert lease.spec.holder_identity == fleet.FENCE_HOLDER
    assert not await elector.try_acquire_or_renew()
    assert not elector.is_leader()


async def test_fence_creates_the_lease_when_no_autoscaler_ever_ran(client: Client) -> None:
    await fleet.fence_autoscaler(client)
    lease: lease_pb2.Lease = await client.leases.Get(fleet.AUTOSCALER_LEASE)
    assert lease.spec.holder_identity == fleet.FENCE_HOLDER and lease.spec.lease_duration_seconds >= 600
    late = Elector(client, "controller-b", RealClock())
    assert not await late.try_acquire_or_renew()


async def test_destroy_all_vms_also_destroys_vms_that_appear_meanwhile(client: Client) -> None:
    def vm(name: str) -> vm_pb2.VM:
        return fleet.vm_object(name, cpu_millis=500, memory_bytes=1 << 28, provider="docker")

    async def marked(name: str) -> bool:
        got = await client.vms.Get(meta_pb2.ObjectKey(name=name))
        return got.metadata.HasField("deletion_timestamp")

    await client.vms.Create(vm("early"))
    # No VM manager runs here: Destroy only marks VMs, nothing finalizes them,
    # so the call keeps looping until its timeout, as it would while VMs go.
    first_pass = asyncio.Event()
    down = asyncio.create_task(
        fleet.destroy_all_vms(client, RealClock(), timeout=3.0, report=lambda _: first_pass.set())
    )
    await first_pass.wait()
    assert await marked("early")
    await client.vms.Create(vm("late"))  # a clone that was in flight when `down` began
    with pytest.raises(fleet.FleetError, match="late"):
        await down
    assert await marked("late")
