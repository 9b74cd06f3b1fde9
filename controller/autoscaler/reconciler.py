"""The autoscaler process part: informers, the loop, one task owner.

    pods ─┐                                                         ┌─► VMService Clone/Create/Destroy
    nodes ┼─► informers ─► observe ─► remember ─► plan ─► executor ─┼─► NodeService.Update (taint, cordon)
    vms ──┘   (wake on change; tick every scanInterval)             ├─► PodService.Delete (drain)
                                                                    └─► EventService.Create

The loop is `cowpod.reconcile.Driver` with one key (`CLUSTER`: the plan is over
the whole fleet): informer handlers mark it, the resync marks it every
`scanInterval`, `batch_window_s` after a wake-up lets a burst of pod updates be
planned once, and a pass runs only once all three informers have synced (an
empty VM list must never read as "no parents, make them") and only while this
process leads (`ready`). Inside the controller the informers read the watch
hubs in process (`watches`).

`Autoscaler.run` owns the driver and the elector and, because it runs inside
the controller, never lets a bug end the controller: it runs under
`controller.supervise.supervise` (restarted after a pause, the error logged).

VMs the executor just asked for are kept in an overlay until the VM informer
has caught up with the revision that created them, so the next pass counts
them as in flight and never makes them twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from controller.autoscaler.actions import Action
from controller.autoscaler.executor import Api, Executor, Outcome
from controller.autoscaler.fit import FitChecker, SchedulerFit
from controller.autoscaler.flags import DEFAULT_PARENT_IDLE_PAUSE_S
from controller.autoscaler.leader import Elector, LeaseConfig
from controller.autoscaler.memory import Memory, record_failure, remember
from controller.autoscaler.model import Snapshot
from controller.autoscaler.observe import UNSCHEDULABLE_REASONS, node_view, snapshot
from controller.autoscaler.plan import plan
from controller.supervise import supervise
from cowpod.clock import Clock, RealClock
from cowpod.clusterconfig import ClusterConfig
from cowpod.informer import Informer
from cowpod.reconcile import Dirty, Driver
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2, vm_pb2
from cowpod.watches import Watches

log = logging.getLogger(__name__)

NAME = "autoscaler"
# The one key: every pass plans the whole fleet.
CLUSTER = "cluster"


@dataclass(frozen=True)
class Options:
    # Wait this long after a wake-up so a burst of pod updates is planned once.
    batch_window_s: float = 0.02
    leader_elect: bool = True
    lease: LeaseConfig = field(default_factory=LeaseConfig)
    identity: str = ""
    # Pause before restarting after an unexpected error.
    restart_delay_s: float = 5.0
    # Pause a warm parent no clone was asked of for this long (0 = never). The
    # cluster config's `parentIdlePause` when it has one; `--parent-idle-pause`.
    parent_idle_pause_s: float = DEFAULT_PARENT_IDLE_PAUSE_S


def default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Observed:
    """What one pass plans from (the memory already updated with the snapshot)."""

    snapshot: Snapshot
    memory: Memory
    now: float


class Autoscaler:
    def __init__(
        self,
        api: Api,
        config: ClusterConfig,
        *,
        clock: Clock | None = None,
        fits: FitChecker | None = None,
        options: Options | None = None,
        watches: Watches | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """`watches`: where the informers read (the controller's hubs in process);
        None = over `api`."""
        self.api = api
        self.config = config
        self.clock: Clock = clock or RealClock()
        self.fits: FitChecker = fits or SchedulerFit()
        self.options = options or Options()
        self.executor = Executor(api, config, self.clock)
        self.memory = Memory()
        identity = self.options.identity or default_identity()
        self.elector = Elector(api, identity, self.clock, self.options.lease)
        self._overlay: dict[str, vm_pb2.VM] = {}
        self._ready_nodes: set[str] = set()
        w = watches or Watches.over(api)
        self.pods: Informer[pod_pb2.Pod] = Informer(
            w.pods, handler=self._on_pod, clock=self.clock, name="autoscaler-pods"
        )
        self.nodes: Informer[node_pb2.Node] = Informer(
            w.nodes, handler=self._on_node, clock=self.clock, name="autoscaler-nodes"
        )
        self.vms: Informer[vm_pb2.VM] = Informer(
            w.vms, handler=self._on_vm, clock=self.clock, name="autoscaler-vms"
        )
        self.driver: Driver[str, Observed, Action] = Driver(
            self, self.clock, name=NAME, sources=(self.pods, self.nodes, self.vms),
            resync_seconds=self.config.scan_interval_s, resync_keys=lambda: (CLUSTER,),
            batch_window=self.options.batch_window_s, registry=registry)

    @property
    def passes(self) -> int:
        """Completed passes (tests wait on it)."""
        return self.driver.passes

    # ------------------------------------------------------------- wake-ups

    async def _on_pod(self, type_: int, pod: pod_pb2.Pod) -> None:
        # New pending verdicts matter at once; pods coming and going only
        # change emptiness, which the periodic tick measures well enough.
        if type_ == meta_pb2.DELETED or pod.spec.node_name:
            return
        for c in pod.status.conditions:
            if c.type == "PodScheduled" and c.status == "False" and c.reason in UNSCHEDULABLE_REASONS:
                self.wake()
                return

    async def _on_node(self, type_: int, node: node_pb2.Node) -> None:
        name = node.metadata.name
        ready = type_ != meta_pb2.DELETED and node_view(node).ready
        if ready != (name in self._ready_nodes) or type_ != meta_pb2.MODIFIED:
            (self._ready_nodes.add if ready else self._ready_nodes.discard)(name)
            self.wake()

    async def _on_vm(self, type_: int, vm: vm_pb2.VM) -> None:
        self.wake()

    def wake(self) -> None:
        self.driver.mark(CLUSTER)

    # ------------------------------------------------------------------ run

    @property
    def synced(self) -> bool:
        return self.driver.synced

    async def run(self) -> None:
        """Run until cancelled; restart after an unexpected error."""
        delay = self.options.restart_delay_s
        try:
            await supervise("autoscaler", self._run_once, self.clock, initial_delay=delay, max_delay=delay)
        finally:
            await self.elector.release()

    async def _run_once(self) -> None:
        log.info("autoscaler: started (%d VM classes, instant clones %s)",
                 len(self.config.vm_classes), "on" if self.config.instant_clones else "off")
        async with asyncio.TaskGroup() as tg:
            if self.options.leader_elect:
                tg.create_task(self.elector.run(), name="autoscaler-elector")
            tg.create_task(self.driver.run(), name="autoscaler-driver")

    def _leading(self) -> bool:
        return not self.options.leader_elect or self.elector.is_leader()

    # ------------------------------------------------------------- one pass

    def current_vms(self) -> list[vm_pb2.VM]:
        """The informer's VMs plus those asked for that it has not seen yet."""
        seen_rv = self.vms.resource_version
        for name, vm in list(self._overlay.items()):
            if seen_rv >= vm.metadata.resource_version:
                del self._overlay[name]
        cached = {vm.metadata.name: vm for vm in self.vms.cache.values()}
        for name, vm in self._overlay.items():
            cached.setdefault(name, vm)
        return list(cached.values())

    def ready(self) -> bool:
        return self._leading()

    async def observe(self) -> Observed:
        now = self.clock.now()
        snap = snapshot(self.pods.cache.values(), self.nodes.cache.values(), self.current_vms(), now)
        self.memory = remember(self.memory, snap, self.config, now)
        return Observed(snap, self.memory, now)

    def plan(self, state: Observed, dirty: Dirty[str]) -> dict[str, list[Action]]:
        actions = plan(state.snapshot, self.config, state.memory, state.now, self.fits,
                       parent_idle_pause_s=self.options.parent_idle_pause_s)
        return {CLUSTER: actions}

    async def execute(self, key: str, actions: Sequence[Action]) -> None:
        log.debug("autoscaler: pass %d: %s", self.passes, actions)
        outcome = await self.executor.execute(actions)
        self._absorb(outcome)

    async def reconcile_once(self) -> Sequence[Action]:
        """One pass now, executed; returns its actions (tests)."""
        self.driver.mark(CLUSTER)
        return (await self.driver.sync()).get(CLUSTER, [])

    def _absorb(self, outcome: Outcome) -> None:
        for vm in outcome.created:
            self._overlay[vm.metadata.name] = vm
        now = self.clock.now()
        for c in outcome.failed_classes:
            self.memory = record_failure(self.memory, c, self.config, now)
        if outcome.created:
            # What was just made may change the plan (a parent to taint, pods to count).
            self.wake()
