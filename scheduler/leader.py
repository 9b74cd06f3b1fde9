"""Leader election through a Lease (coordination.k8s.io semantics).

    candidate ──Get──► free or expired? ──CAS Update/Create──► leader ──renew every retry period──┐
        ▲                    │ no                                 │   failed for renew_deadline   │
        └──── retry period ──┘                                    └──────► lost (process exits) ◄─┘

Expiry is judged by *local observation*, as client-go does: a candidate
remembers when it last saw the lease's resource_version change, and takes
over only when it has seen no change for `lease_duration`. Clocks of
different machines never get compared. Every write is a compare-and-swap on
resource_version, so two candidates never both win; a leader that cannot
renew within `renew_deadline` (< lease_duration) stops acting before anyone
else may start. On clean shutdown the leader releases the lease so a standby
takes over at once.

Under load (a busy machine, a slow etcd fsync) one RPC can take longer than a
retry period. A renewal is therefore given the time left until the renew
deadline, not a fixed short timeout: a slow renewal that lands in time keeps
the lease, as in client-go, where the whole renew loop is bounded by the renew
deadline. A write whose answer was lost (timed out or cancelled after etcd
committed it) leaves us holding a newer revision than we know; the next round
or `release` re-reads the lease and carries on from what it shows.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from cowpod.client import Client
from cowpod.clock import Clock
from cowpod.v1 import lease_pb2, meta_pb2
from scheduler.config import LeaderElectionConfig

log = logging.getLogger(__name__)


class LeadershipLost(Exception):
    pass


def _ts(t: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(t * 1e9))
    return ts


class LeaderElector:
    def __init__(self, client: Client, cfg: LeaderElectionConfig, identity: str, clock: Clock) -> None:
        self._client = client
        self._cfg = cfg
        self.identity = identity
        self._clock = clock
        self._observed_rv = -1
        self._observed_at = 0.0
        self._renewed_at: float | None = None
        self._lease: lease_pb2.Lease | None = None

    def is_leader(self) -> bool:
        """True while our last successful renewal is within the renew deadline."""
        return (
            self._renewed_at is not None
            and self._clock.monotonic() - self._renewed_at < self._cfg.renew_deadline_s
        )

    def _key(self) -> meta_pb2.ObjectKey:
        return meta_pb2.ObjectKey(namespace=self._cfg.namespace, name=self._cfg.lease_name)

    def _spec(self, prev: lease_pb2.LeaseSpec | None) -> lease_pb2.LeaseSpec:
        now = self._clock.now()
        taking_over = prev is None or prev.holder_identity != self.identity
        return lease_pb2.LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=max(1, round(self._cfg.lease_duration_s)),
            acquire_time=_ts(now) if taking_over or prev is None else prev.acquire_time,
            renew_time=_ts(now),
            lease_transitions=(prev.lease_transitions + (1 if taking_over else 0)) if prev else 0,
        )

    def _timeout(self, now: float) -> float:
        """How long one RPC may take: a leader has until its renew deadline (never less than a
        retry period); a candidate loses nothing by waiting, so it gets the renew deadline."""
        if self._renewed_at is None:
            return self._cfg.renew_deadline_s
        left = self._renewed_at + self._cfg.renew_deadline_s - now
        return max(left, self._cfg.retry_period_s)

    async def try_acquire_or_renew(self) -> bool:
        """One round: returns True if we hold the lease afterwards."""
        now = self._clock.monotonic()  # a renewal counts from before we asked: conservative
        timeout = self._timeout(now)
        try:
            lease = await self._client.leases.Get(self._key(), timeout=timeout)
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                log.warning("leader election: get lease: %s", err.details())
                return False
            fresh = lease_pb2.Lease(
                api_version="coordination.cowpod.io/v1",
                kind="Lease",
                metadata=meta_pb2.ObjectMeta(name=self._cfg.lease_name, namespace=self._cfg.namespace),
                spec=self._spec(None),
            )
            try:
                self._lease = await self._client.leases.Create(fresh, timeout=timeout)
            except grpc.aio.AioRpcError:
                return False
            self._renewed_at = now
            return True
        if lease.metadata.resource_version != self._observed_rv:
            # A change is dated when we *saw* it (after the Get answered), never earlier: the
            # holder's write may have landed just before the answer, and dating it from before
            # the request would let us call its lease expired early.
            self._observed_rv = lease.metadata.resource_version
            self._observed_at = self._clock.monotonic()
        holder = lease.spec.holder_identity
        duration = lease.spec.lease_duration_seconds or self._cfg.lease_duration_s
        if holder and holder != self.identity and now - self._observed_at < duration:
            self._renewed_at = None  # someone else holds a live lease: we do not lead
            return False
        update = lease_pb2.Lease()
        update.CopyFrom(lease)
        update.spec.CopyFrom(self._spec(lease.spec))
        try:
            self._lease = await self._client.leases.Update(update, timeout=timeout)
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.ABORTED:
                log.warning("leader election: update lease: %s", err.details())
            return False
        if holder != self.identity:
            log.info("leader election: %s took the lease from %r", self.identity, holder or "nobody")
        self._observed_rv = self._lease.metadata.resource_version
        self._observed_at = self._clock.monotonic()
        self._renewed_at = now
        return True

    async def acquire(self) -> None:
        """Return once we lead."""
        while not await self.try_acquire_or_renew():
            await self._clock.sleep(self._cfg.retry_period_s)
        log.info("leader election: %s is the leader", self.identity)

    async def keep(self) -> None:
        """Renew until we cannot; then raise LeadershipLost."""
        while True:
            await self._clock.sleep(self._cfg.retry_period_s)
            if await self.try_acquire_or_renew():
                continue
            if not self.is_leader():
                self._renewed_at = None
                raise LeadershipLost(f"{self.identity} could not renew the lease within the renew deadline")

    async def release(self, timeout: float = 5.0) -> None:
        """Give the lease up (clean shutdown) so a standby need not wait for expiry.

        Tried whenever our write was the last we know of, even if the renew deadline has
        passed: the update is a compare-and-swap, so it can never clobber a lease someone else
        took. When it is refused as stale (a renewal cancelled by the shutdown may still have
        committed), re-read: if the lease still names us, release that revision instead."""
        lease, self._lease, self._renewed_at = self._lease, None, None
        for _ in range(3):
            if lease is None or lease.spec.holder_identity != self.identity:
                return
            update = lease_pb2.Lease()
            update.CopyFrom(lease)
            update.spec.holder_identity = ""
            update.spec.lease_duration_seconds = 1
            try:
                await self._client.leases.Update(update, timeout=timeout)
                log.info("leader election: %s released the lease", self.identity)
                return
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.ABORTED:
                    log.info("leader election: release: %s", err.details())
                    return
            try:
                lease = await self._client.leases.Get(self._key(), timeout=timeout)
            except grpc.aio.AioRpcError as err:
                log.info("leader election: release: re-read: %s", err.details())
                return
