"""Leader election over an in-memory Lease service with CAS, on a FakeClock."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from cowpod.clock import FakeClock
from cowpod.v1 import lease_pb2, meta_pb2
from scheduler.config import LeaderElectionConfig
from scheduler.leader import LeaderElector, LeadershipLost

CFG = LeaderElectionConfig(lease_duration_s=5, renew_deadline_s=3, retry_period_s=1)


class RpcError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=code.name)


class FakeLeases:
    """Get/Create/Update with compare-and-swap on resource_version, like the controller."""

    def __init__(self) -> None:
        self.lease: lease_pb2.Lease | None = None
        self.rev = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise RpcError(grpc.StatusCode.UNAVAILABLE)

    async def Get(self, key: meta_pb2.ObjectKey, timeout: float = 0) -> lease_pb2.Lease:
        self._check()
        if self.lease is None:
            raise RpcError(grpc.StatusCode.NOT_FOUND)
        out = lease_pb2.Lease()
        out.CopyFrom(self.lease)
        return out

    async def Create(self, lease: lease_pb2.Lease, timeout: float = 0) -> lease_pb2.Lease:
        self._check()
        if self.lease is not None:
            raise RpcError(grpc.StatusCode.ALREADY_EXISTS)
        return self._store(lease)

    async def Update(self, lease: lease_pb2.Lease, timeout: float = 0) -> lease_pb2.Lease:
        self._check()
        assert self.lease is not None
        if lease.metadata.resource_version != self.rev:
            raise RpcError(grpc.StatusCode.ABORTED)
        return self._store(lease)

    def _store(self, lease: lease_pb2.Lease) -> lease_pb2.Lease:
        self.rev += 1
        self.lease = lease_pb2.Lease()
        self.lease.CopyFrom(lease)
        self.lease.metadata.resource_version = self.rev
        return self.lease


class FakeClient:
    def __init__(self, leases: FakeLeases) -> None:
        self.leases = leases


def elector(leases: FakeLeases, name: str, clock: FakeClock) -> LeaderElector:
    client: Any = FakeClient(leases)
    return LeaderElector(client, CFG, name, clock)


async def test_one_wins_and_the_other_waits_for_expiry() -> None:
    clock, leases = FakeClock(), FakeLeases()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    assert a.is_leader() and not b.is_leader()
    # a keeps renewing: b never takes over.
    for _ in range(10):
        await clock.advance(1)
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
    # a dies. b must see no change for the lease duration before taking over.
    await clock.advance(4)
    assert not await b.try_acquire_or_renew()
    await clock.advance(1.5)
    assert await b.try_acquire_or_renew()
    assert leases.lease is not None
    assert leases.lease.spec.holder_identity == "b" and leases.lease.spec.lease_transitions == 1
    # The old leader, back from a pause, finds someone else holds it and does not lead.
    assert not await a.try_acquire_or_renew()
    assert not a.is_leader()


async def test_leader_that_cannot_renew_gives_up_before_anyone_else_may_start() -> None:
    clock, leases = FakeClock(), FakeLeases()
    a = elector(leases, "a", clock)
    assert await a.try_acquire_or_renew()
    keep = asyncio.ensure_future(a.keep())
    await asyncio.sleep(0)
    leases.down = True
    for _ in range(4):
        await clock.advance(1)
    with pytest.raises(LeadershipLost):
        await asyncio.wait_for(keep, 1)
    assert not a.is_leader()
    assert CFG.renew_deadline_s < CFG.lease_duration_s


async def test_release_lets_a_standby_in_at_once() -> None:
    clock, leases = FakeClock(), FakeLeases()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    await a.release()
    assert leases.lease is not None and leases.lease.spec.holder_identity == ""
    assert await b.try_acquire_or_renew()


class LossyLeases(FakeLeases):
    """Leases whose next Update may commit and then lose its answer (a timeout or a
    cancellation after etcd applied the write), whose Get may be slow, and which record
    the timeout each call was given."""

    def __init__(self) -> None:
        super().__init__()
        self.lose_next_answer = False
        self.during_get: Any = None  # async callable run while a Get is in flight
        self.timeouts: list[float] = []

    async def Get(self, key: meta_pb2.ObjectKey, timeout: float = 0) -> lease_pb2.Lease:
        self.timeouts.append(timeout)
        hook, self.during_get = self.during_get, None
        if hook is not None:
            await hook()
        return await super().Get(key, timeout)

    async def Update(self, lease: lease_pb2.Lease, timeout: float = 0) -> lease_pb2.Lease:
        self.timeouts.append(timeout)
        out = await super().Update(lease, timeout)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise RpcError(grpc.StatusCode.DEADLINE_EXCEEDED)
        return out


async def test_release_after_a_renewal_whose_answer_was_lost_still_frees_the_lease() -> None:
    clock, leases = FakeClock(), LossyLeases()
    a = elector(leases, "a", clock)
    assert await a.try_acquire_or_renew()
    await clock.advance(1)
    leases.lose_next_answer = True  # the shutdown cancels a renewal that etcd applied anyway
    assert not await a.try_acquire_or_renew()
    await a.release()
    assert leases.lease is not None and leases.lease.spec.holder_identity == ""


async def test_release_past_the_renew_deadline_frees_our_lease_but_never_anothers() -> None:
    clock, leases = FakeClock(), LossyLeases()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    assert await a.try_acquire_or_renew()
    await clock.advance(CFG.renew_deadline_s + 0.5)  # a stalled: no longer sure it leads
    assert not a.is_leader()
    await a.release()
    assert leases.lease is not None and leases.lease.spec.holder_identity == ""
    # Now a takes it again, stalls past expiry, b takes over; a's late release changes nothing.
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    await clock.advance(CFG.lease_duration_s + 1)
    assert await b.try_acquire_or_renew()
    await a.release()
    assert leases.lease.spec.holder_identity == "b"


async def test_a_slow_renewal_may_use_the_time_left_until_the_renew_deadline() -> None:
    clock, leases = FakeClock(), LossyLeases()
    a = elector(leases, "a", clock)
    assert await a.try_acquire_or_renew()
    await clock.advance(0.5)
    leases.timeouts.clear()
    assert await a.try_acquire_or_renew()
    # Renewed 0.5 s ago with a 3 s renew deadline: each call of this round may take 2.5 s
    # (more than two retry periods: a loaded etcd's slow write still counts).
    assert leases.timeouts == [CFG.renew_deadline_s - 0.5] * 2


async def test_a_change_is_dated_when_seen_so_a_slow_read_never_shortens_the_lease() -> None:
    clock, leases = FakeClock(), LossyLeases()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()

    async def leader_renews_while_b_reads() -> None:
        await clock.advance(3.9)
        assert await a.try_acquire_or_renew()  # a leads until 3.9 + renew deadline
        await clock.advance(0.1)

    leases.during_get = leader_renews_while_b_reads
    assert not await b.try_acquire_or_renew()  # started at 0, answered at 4 with a's renewal
    await clock.advance(1.5)  # t = 5.5: a still believes it leads
    assert a.is_leader()
    assert not await b.try_acquire_or_renew()
    await clock.advance(CFG.lease_duration_s - 1.5)  # t = 9: 5 s after b saw the renewal
    assert not a.is_leader()
    assert await b.try_acquire_or_renew()
