"""One acting autoscaler when several controllers run: a Lease, held by CAS.

The election is `cowpod.leader`'s, shared with the scheduler.

Unlike the scheduler's elector, losing the lease never ends the process: the
autoscaler runs inside the controller, which must keep serving. It just stops
planning until it leads again. A controller whose LeaseService answers
UNIMPLEMENTED is taken to be the only one, and leads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from cowpod.clock import Clock
from cowpod.leader import LeaderElector
from cowpod.leases import AUTOSCALER_LEASE_NAME, SYSTEM_NAMESPACE
from cowpod.v1 import meta_pb2


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str = SYSTEM_NAMESPACE
    name: str = AUTOSCALER_LEASE_NAME
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0


class LeaseApi(Protocol):
    leases: Any


class Elector(LeaderElector):
    def __init__(self, api: LeaseApi, identity: str, clock: Clock, config: LeaseConfig | None = None) -> None:
        self.config = config or LeaseConfig()
        super().__init__(
            api.leases,
            meta_pb2.ObjectKey(namespace=self.config.namespace, name=self.config.name),
            identity,
            clock,
            lease_duration_s=self.config.lease_duration_s,
            renew_deadline_s=self.config.renew_deadline_s,
            retry_period_s=self.config.retry_period_s,
            who="autoscaler",
            sole_if_unimplemented=True,
        )
