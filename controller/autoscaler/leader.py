"""One acting autoscaler when several controllers run: a Lease, held by CAS.

    candidate ──Get──► free or stale? ──CAS Create/Update──► leader ──renew every retry period──┐
        ▲                 │ no                                                              │
        └── retry period ─┘◄──────────── renew failed for renew_deadline: stop acting ◄─────┘

Staleness is judged by local observation, as client-go does: a candidate
notes when it last saw the lease's resource_version move and takes over only
after `lease_duration` without a move, so clocks of different machines are
never compared. Every write is a compare-and-swap on resource_version, so two
candidates never both win; a leader that could not renew within
`renew_deadline` (shorter than the duration) stops acting before anyone else
may start.

Unlike the scheduler's elector, losing the lease never ends the process: the
autoscaler runs inside the controller, which must keep serving. It just stops
planning until it leads again. A controller whose LeaseService answers
UNIMPLEMENTED is taken to be the only one, and leads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from cowpod.clock import Clock
from cowpod.leases import AUTOSCALER_LEASE_NAME, SYSTEM_NAMESPACE
from cowpod.v1 import lease_pb2, meta_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str = SYSTEM_NAMESPACE
    name: str = AUTOSCALER_LEASE_NAME
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0


class LeaseApi(Protocol):
    leases: Any


def _ts(t: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(t * 1e9))
    return ts


class Elector:
    def __init__(self, api: LeaseApi, identity: str, clock: Clock, config: LeaseConfig | None = None) -> None:
        self.api = api
        self.identity = identity
        self.clock = clock
        self.config = config or LeaseConfig()
        self._observed_rv = -1
        self._observed_at = 0.0
        self._renewed_at: float | None = None
        self._lease: lease_pb2.Lease | None = None
        self._unimplemented = False

    def is_leader(self) -> bool:
        if self._unimplemented:
            return True
        return (
            self._renewed_at is not None
            and self.clock.monotonic() - self._renewed_at < self.config.renew_deadline_s
        )

    def _key(self) -> meta_pb2.ObjectKey:
        return meta_pb2.ObjectKey(namespace=self.config.namespace, name=self.config.name)

    def _spec(self, prev: lease_pb2.LeaseSpec | None) -> lease_pb2.LeaseSpec:
        now = self.clock.now()
        taking_over = prev is None or prev.holder_identity != self.identity
        return lease_pb2.LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=max(1, round(self.config.lease_duration_s)),
            acquire_time=_ts(now) if taking_over or prev is None else prev.acquire_time,
            renew_time=_ts(now),
            lease_transitions=(prev.lease_transitions + (1 if taking_over else 0)) if prev else 0,
        )

    async def try_acquire_or_renew(self) -> bool:
        """One round; True if we hold the lease afterwards."""
        if self._unimplemented:
            return True
        now = self.clock.monotonic()
        timeout = self.config.retry_period_s * 2
        try:
            lease = await self.api.leases.Get(self._key(), timeout=timeout)
        except grpc.RpcError as err:
            code = err.code() if hasattr(err, "code") else None
            if code == grpc.StatusCode.UNIMPLEMENTED:
                log.warning("autoscaler: LeaseService not implemented; acting as the only autoscaler")
                self._unimplemented = True
                return True
            if code != grpc.StatusCode.NOT_FOUND:
                return False
            fresh = lease_pb2.Lease(
                api_version="coordination.cowpod.io/v1",
                kind="Lease",
                metadata=meta_pb2.ObjectMeta(name=self.config.name, namespace=self.config.namespace),
                spec=self._spec(None),
            )
            try:
                self._lease = await self.api.leases.Create(fresh, timeout=timeout)
            except grpc.RpcError:
                return False
            self._took(now, "nobody")
            return True
        if lease.metadata.resource_version != self._observed_rv:
            self._observed_rv = lease.metadata.resource_version
            self._observed_at = now
        holder = lease.spec.holder_identity
        duration = lease.spec.lease_duration_seconds or self.config.lease_duration_s
        if holder and holder != self.identity and now - self._observed_at < duration:
            self._renewed_at = None
            return False
        update = lease_pb2.Lease()
        update.CopyFrom(lease)
        update.spec.CopyFrom(self._spec(lease.spec))
        try:
            self._lease = await self.api.leases.Update(update, timeout=timeout)
        except grpc.RpcError:
            return False
        if holder != self.identity:
            self._took(now, holder or "nobody")
        self._observed_rv = self._lease.metadata.resource_version
        self._observed_at = now
        self._renewed_at = now
        return True

    def _took(self, now: float, previous: str) -> None:
        log.info("autoscaler: %s leads (lease %s/%s, was %s)",
                 self.identity, self.config.namespace, self.config.name, previous)
        self._renewed_at = now

    async def run(self) -> None:
        """Acquire and renew for ever; `is_leader` says where we stand."""
        was = False
        while True:
            await self.try_acquire_or_renew()
            now = self.is_leader()
            if was and not now:
                log.warning("autoscaler: %s lost the lease; not acting until it leads again", self.identity)
            was = now
            await self.clock.sleep(self.config.retry_period_s)

    async def release(self) -> None:
        """Give the lease up on clean shutdown so a standby takes over at once."""
        if self._lease is None or not self.is_leader() or self._unimplemented:
            return
        update = lease_pb2.Lease()
        update.CopyFrom(self._lease)
        update.spec.holder_identity = ""
        update.spec.lease_duration_seconds = 1
        try:
            await self.api.leases.Update(update, timeout=2.0)
        except grpc.RpcError as err:
            log.info("autoscaler: releasing lease: %s", err)
        self._renewed_at = None
