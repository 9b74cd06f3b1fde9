"""Leader election through a Lease (coordination.k8s.io semantics), for every
component that must act alone: the scheduler and the autoscaler.

    candidate ──Get──► free or expired? ──CAS Update/Create──► leader ──renew every retry period──┐
        ▲                    │ no                                 │   failed for renew_deadline   │
        └──── retry period ──┘                                    └──────────► lost ◄─────────────┘

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

What losing means is the caller's: the scheduler exits (`keep` raises
LeadershipLost), the autoscaler inside the controller stops planning until it
leads again (`run`).
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from cowpod.api.times import to_timestamp
from cowpod.clock import Clock
from cowpod.errors import rpc_code, rpc_details
from cowpod.v1 import lease_pb2, meta_pb2

log = logging.getLogger(__name__)


class LeadershipLost(Exception):
    pass


class LeaderElector:
    def __init__(
        self,
        leases: Any,
        key: meta_pb2.ObjectKey,
        identity: str,
        clock: Clock,
        *,
        lease_duration_s: float,
        renew_deadline_s: float,
        retry_period_s: float,
        who: str = "leader election",
        sole_if_unimplemented: bool = False,
    ) -> None:
        """`leases`: a LeaseService stub (Get, Create, Update). `who` prefixes the logs.
        With `sole_if_unimplemented`, a controller without a LeaseService means we are
        the only candidate, and we lead."""
        self._leases = leases
        self._key = key
        self.identity = identity
        self._clock = clock
        self.lease_duration_s = lease_duration_s
        self.renew_deadline_s = renew_deadline_s
        self.retry_period_s = retry_period_s
        self._who = who
        self._sole_if_unimplemented = sole_if_unimplemented
        self._unimplemented = False
        self._observed_rv = -1
        self._observed_at = 0.0
        self._renewed_at: float | None = None
        self._lease: lease_pb2.Lease | None = None

    def is_leader(self) -> bool:
        """True while our last successful renewal is within the renew deadline."""
        if self._unimplemented:
            return True
        return (
            self._renewed_at is not None
            and self._clock.monotonic() - self._renewed_at < self.renew_deadline_s
        )

    def _spec(self, prev: lease_pb2.LeaseSpec | None) -> lease_pb2.LeaseSpec:
        now = self._clock.now()
        taking_over = prev is None or prev.holder_identity != self.identity
        return lease_pb2.LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=max(1, round(self.lease_duration_s)),
            acquire_time=to_timestamp(now) if taking_over or prev is None else prev.acquire_time,
            renew_time=to_timestamp(now),
            lease_transitions=(prev.lease_transitions + (1 if taking_over else 0)) if prev else 0,
        )

    def _timeout(self, now: float) -> float:
        """How long one RPC may take: a leader has until its renew deadline (never less than a
        retry period); a candidate loses nothing by waiting, so it gets the renew deadline."""
        if self._renewed_at is None:
            return self.renew_deadline_s
        left = self._renewed_at + self.renew_deadline_s - now
        return max(left, self.retry_period_s)

    async def try_acquire_or_renew(self) -> bool:
        """One round: returns True if we hold the lease afterwards."""
        if self._unimplemented:
            return True
        now = self._clock.monotonic()  # a renewal counts from before we asked: conservative
        timeout = self._timeout(now)
        try:
            lease = await self._leases.Get(self._key, timeout=timeout)
        except grpc.RpcError as err:
            code = rpc_code(err)
            if code == grpc.StatusCode.UNIMPLEMENTED and self._sole_if_unimplemented:
                log.warning("%s: LeaseService not implemented; acting as the only candidate", self._who)
                self._unimplemented = True
                return True
            if code != grpc.StatusCode.NOT_FOUND:
                log.warning("%s: get lease: %s", self._who, rpc_details(err))
                return False
            fresh = lease_pb2.Lease(
                api_version="coordination.cowpod.io/v1",
                kind="Lease",
                metadata=meta_pb2.ObjectMeta(name=self._key.name, namespace=self._key.namespace),
                spec=self._spec(None),
            )
            try:
                self._lease = await self._leases.Create(fresh, timeout=timeout)
            except grpc.RpcError:
                return False
            log.info("%s: %s leads (lease %s/%s, was nobody)",
                     self._who, self.identity, self._key.namespace, self._key.name)
            self._renewed_at = now
            return True
        if lease.metadata.resource_version != self._observed_rv:
            # A change is dated when we *saw* it (after the Get answered), never earlier: the
            # holder's write may have landed just before the answer, and dating it from before
            # the request would let us call its lease expired early.
            self._observed_rv = lease.metadata.resource_version
            self._observed_at = self._clock.monotonic()
        holder = lease.spec.holder_identity
        duration = lease.spec.lease_duration_seconds or self.lease_duration_s
        if holder and holder != self.identity and now - self._observed_at < duration:
            self._renewed_at = None  # someone else holds a live lease: we do not lead
            return False
        update = lease_pb2.Lease()
        update.CopyFrom(lease)
        update.spec.CopyFrom(self._spec(lease.spec))
        try:
            self._lease = await self._leases.Update(update, timeout=timeout)
        except grpc.RpcError as err:
            if rpc_code(err) != grpc.StatusCode.ABORTED:
                log.warning("%s: update lease: %s", self._who, rpc_details(err))
            return False
        if holder != self.identity:
            log.info("%s: %s leads (lease %s/%s, was %s)",
                     self._who, self.identity, self._key.namespace, self._key.name, holder or "nobody")
        self._observed_rv = self._lease.metadata.resource_version
        self._observed_at = self._clock.monotonic()
        self._renewed_at = now
        return True

    async def acquire(self) -> None:
        """Return once we lead."""
        while not await self.try_acquire_or_renew():
            await self._clock.sleep(self.retry_period_s)
        log.info("%s: %s is the leader", self._who, self.identity)

    async def keep(self) -> None:
        """Renew until we cannot; then raise LeadershipLost."""
        while True:
            await self._clock.sleep(self.retry_period_s)
            if await self.try_acquire_or_renew():
                continue
            if not self.is_leader():
                self._renewed_at = None
                raise LeadershipLost(f"{self.identity} could not renew the lease within the renew deadline")

    async def run(self) -> None:
        """Acquire and renew for ever; `is_leader` says where we stand."""
        was = False
        while True:
            await self.try_acquire_or_renew()
            now = self.is_leader()
            if was and not now:
                log.warning("%s: %s lost the lease; not acting until it leads again",
                            self._who, self.identity)
            was = now
            await self._clock.sleep(self.retry_period_s)

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
                await self._leases.Update(update, timeout=timeout)
                log.info("%s: %s released the lease", self._who, self.identity)
                return
            except grpc.RpcError as err:
                if rpc_code(err) != grpc.StatusCode.ABORTED:
                    log.info("%s: release: %s", self._who, rpc_details(err))
                    return
            try:
                lease = await self._leases.Get(self._key, timeout=timeout)
            except grpc.RpcError as err:
                log.info("%s: release: re-read: %s", self._who, rpc_details(err))
                return
