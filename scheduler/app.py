"""One scheduler process's tasks, wired together (used by `main` and by tests).

    informers (nodes, pending pods, assigned pods) ──synced──► [leader election] ──► schedule loop
                                                                                   binders (N)
                                                                                   status writer
                                                                                   preemption writes
    metrics/healthz server (if asked)

Everything runs in one TaskGroup: if any task fails, all stop. Losing the
lease raises `LeadershipLost` out of `run`, and the process exits, as
kube-scheduler does: its replacement starts from a fresh cache.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from cowpod.client import Client
from cowpod.clock import Clock
from cowpod.informer import Informer
from cowpod.metrics_http import serve_metrics
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2
from scheduler.config import SchedulerConfig, build_profile
from scheduler.leader import LeaderElector, LeadershipLost
from scheduler.metrics import Metrics
from scheduler.plugins import PluginContext
from scheduler.scheduler import Scheduler

log = logging.getLogger(__name__)


class SchedulerApp:
    def __init__(
        self,
        client: Client,
        cfg: SchedulerConfig,
        *,
        clock: Clock,
        identity: str,
        leader_elect: bool = False,
        metrics_listen: str = "",
        release_on_exit: bool = True,
    ) -> None:
        self.cfg = cfg
        self.identity = identity
        self.metrics = Metrics()
        self.elector = LeaderElector(client, cfg.leader_election, identity, clock) if leader_elect else None
        self.scheduler = Scheduler(
            cfg,
            build_profile(cfg, PluginContext(client=client)),
            client=client,
            clock=clock,
            metrics=self.metrics,
            is_leader=self.elector.is_leader if self.elector else (lambda: True),
        )
        self._client = client
        self._clock = clock
        self._metrics_listen = metrics_listen
        self._release = release_on_exit
        self._synced = [asyncio.Event() for _ in range(3)]
        self.leading = asyncio.Event()

    def synced(self) -> bool:
        return all(e.is_set() for e in self._synced)

    def _on_synced(self, i: int) -> Callable[[], Awaitable[None]]:
        async def cb() -> None:
            self._synced[i].set()

        return cb

    def informers(self) -> list[tuple[str, Informer[Any]]]:
        c, s = self._client, self.scheduler
        nodes: Informer[node_pb2.Node] = Informer(
            c.nodes.Watch, handler=s.on_node, clock=self._clock, name="nodes", on_synced=self._on_synced(0)
        )
        pending: Informer[pod_pb2.Pod] = Informer(
            c.pods.Watch,
            handler=s.on_pending_pod,
            clock=self._clock,
            name="pods-pending",
            on_synced=self._on_synced(1),
            list_options=meta_pb2.ListOptions(field_selector="spec.nodeName="),
        )
        assigned: Informer[pod_pb2.Pod] = Informer(
            c.pods.Watch,
            handler=s.on_assigned_pod,
            clock=self._clock,
            name="pods-assigned",
            on_synced=self._on_synced(2),
            list_options=meta_pb2.ListOptions(field_selector="spec.nodeName!="),
        )
        return [("nodes", nodes), ("pods-pending", pending), ("pods-assigned", assigned)]

    async def run(self) -> None:
        sched = self.scheduler
        try:
            async with asyncio.TaskGroup() as tg:
                for name, inf in self.informers():
                    tg.create_task(inf.run(), name=f"informer-{name}")
                if self._metrics_listen:
                    host, _, port = self._metrics_listen.rpartition(":")
                    served = serve_metrics(
                        self.metrics.render, host or "127.0.0.1", int(port), healthy=self.synced,
                        name="scheduler metrics",
                    )
                    tg.create_task(served, name="metrics")
                for e in self._synced:
                    await e.wait()
                log.info(
                    "%s: caches synced: %d nodes, %d assigned pods, %d pending",
                    self.identity,
                    sched.cache.n,
                    sched.cache.pod_count(),
                    len(sched.queue),
                )
                if self.elector is not None:
                    await self.elector.acquire()
                    tg.create_task(self.elector.keep(), name="leader-renew")
                self.metrics.is_leader.set(1)
                self.leading.set()
                tg.create_task(sched.run_scheduling(), name="schedule")
                for i in range(max(1, self.cfg.max_binds_in_flight)):
                    tg.create_task(sched.run_binder(), name=f"binder-{i}")
                tg.create_task(sched.run_status_writer(), name="status-writer")
                tg.create_task(sched.run_preemption(), name="preemption")
        except* LeadershipLost as eg:
            raise eg.exceptions[0] from None
        finally:
            self.metrics.is_leader.set(0)
            if self.elector is not None and self._release:
                await self.elector.release()
