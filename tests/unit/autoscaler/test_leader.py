"""The autoscaler's lease: one leader at a time, takeover only after the lease
lapses as seen locally, and a controller without a LeaseService leads alone."""

from __future__ import annotations

from typing import Any

import grpc

from controller.autoscaler.leader import Elector, LeaseConfig
from cowpod.clock import FakeClock
from cowpod.v1 import lease_pb2

CFG = LeaseConfig(lease_duration_s=15, renew_deadline_s=10, retry_period_s=2)


class RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._code.name


class Leases:
    """One lease with compare-and-swap on resource_version, like the controller's."""

    def __init__(self) -> None:
        self.lease: lease_pb2.Lease | None = None
        self.rv = 0

    async def Get(self, key: Any, timeout: float = 0) -> lease_pb2.Lease:
        if self.lease is None:
            raise RpcError(grpc.StatusCode.NOT_FOUND)
        out = lease_pb2.Lease()
        out.CopyFrom(self.lease)
        return out

    async def Create(self, lease: lease_pb2.Lease, timeout: float = 0) -> lease_pb2.Lease:
        if self.lease is not None:
            raise RpcError(grpc.StatusCode.ALREADY_EXISTS)
        return self._store(lease)

    async def Update(self, lease: lease_pb2.Lease, timeout: float = 0) -> lease_pb2.Lease:
        assert self.lease is not None
        if lease.metadata.resource_version != self.rv:
            raise RpcError(grpc.StatusCode.ABORTED)
        return self._store(lease)

    def _store(self, lease: lease_pb2.Lease) -> lease_pb2.Lease:
        self.rv += 1
        self.lease = lease_pb2.Lease()
        self.lease.CopyFrom(lease)
        self.lease.metadata.resource_version = self.rv
        return self.lease


class Api:
    def __init__(self, leases: Any) -> None:
        self.leases = leases


async def test_one_leads_the_other_takes_over_only_after_the_lease_lapses() -> None:
    clock, store = FakeClock(), Leases()
    a, b = Elector(Api(store), "a", clock, CFG), Elector(Api(store), "b", clock, CFG)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    assert a.is_leader() and not b.is_leader()
    # a keeps renewing: b never takes over.
    for _ in range(10):
        await clock.advance(2)
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
    # a stops (crashed). Within the lease duration b still waits; after it, b leads.
    await clock.advance(14)
    assert not await b.try_acquire_or_renew()
    await clock.advance(2)
    assert await b.try_acquire_or_renew()
    assert b.is_leader()
    assert store.lease is not None and store.lease.spec.holder_identity == "b"
    assert store.lease.spec.lease_transitions == 1
    # a comes back: it no longer leads, and its renew deadline has passed.
    assert not await a.try_acquire_or_renew()
    assert not a.is_leader()


async def test_release_lets_a_standby_take_over_at_once() -> None:
    clock, store = FakeClock(), Leases()
    a, b = Elector(Api(store), "a", clock, CFG), Elector(Api(store), "b", clock, CFG)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    await a.release()
    await clock.advance(2)
    assert await b.try_acquire_or_renew()


async def test_no_lease_service_means_the_only_autoscaler_leads() -> None:
    class Unimplemented:
        async def Get(self, key: Any, timeout: float = 0) -> None:
            raise RpcError(grpc.StatusCode.UNIMPLEMENTED)

    e = Elector(Api(Unimplemented()), "a", FakeClock(), CFG)
    assert await e.try_acquire_or_renew()
    assert e.is_leader()
