"""The scheduler's leader election: `cowpod.leader` on the lease its config
names. Losing the lease ends the process (`keep` raises LeadershipLost), as
kube-scheduler does."""

from __future__ import annotations

from cowpod.client import Client
from cowpod.clock import Clock
from cowpod.leader import LeaderElector as _LeaseElector
from cowpod.leader import LeadershipLost
from cowpod.v1 import meta_pb2
from scheduler.config import LeaderElectionConfig


class LeaderElector(_LeaseElector):
    def __init__(self, client: Client, cfg: LeaderElectionConfig, identity: str, clock: Clock) -> None:
        super().__init__(
            client.leases,
            meta_pb2.ObjectKey(namespace=cfg.namespace, name=cfg.lease_name),
            identity,
            clock,
            lease_duration_s=cfg.lease_duration_s,
            renew_deadline_s=cfg.renew_deadline_s,
            retry_period_s=cfg.retry_period_s,
        )


__all__ = ["LeaderElector", "LeadershipLost"]
