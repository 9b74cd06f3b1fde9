"""The autoscaler process part: informers, the loop, one task owner.

    pods ─┐                                                         ┌─► VMService Clone/Create/Destroy
    nodes ┼─► informers ─► observe ─► remember ─► plan ─► executor ─┼─► NodeService.Update (taint, cordon)
    vms ──┘   (wake on change; tick every scanInterval)             ├─► PodService.Delete (drain)
                                                                    └─► EventService.Create

`Autoscaler.run` owns every task (a TaskGroup: three informers, the ticker,
the elector, the loop) and, because it runs inside the controller, never lets
a bug end the controller: the group is restarted after a pause and the error
logged. A pass runs only once all three informers have synced (an empty VM
list must never read as "no parents, make them") and only while this process
leads.

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

from controller.autoscaler.actions import Action
from controller.autoscaler.executor import Api, Executor, Outcome
from controller.autoscaler.fit import FitChecker, SchedulerFit
from controller.autoscaler.flags import DEFAULT_PARENT_IDLE_PAUSE_S
from controller.autoscaler.leader import Elector, LeaseConfig
from controller.autoscaler.memory import Memory, record_failure, remember
from controller.autoscaler.observe import UNSCHEDULABLE_REASONS, node_view, snapshot
from controller.autoscaler.plan import plan
from cowpod.clock import Clock, RealClock
from cowpod.clusterconfig import ClusterConfig
from cowpod.informer import Informer
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2, vm_pb2

log = logging.getLogger(__name__)


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


class Autoscaler:
    def __init__(
        self,
        api: Api,
        config: ClusterConfig,
        *,
        clock: Clock | None = None,
        fits: FitChecker | None = None,
        options: Options | None = None,
    ) -> None:
        self.api = api
        self.config = config
        self.clock: Clock = clock or RealClock()
        self.fits: FitChecker = fits or SchedulerFit()
        self.options = options or Options()
        self.executor = Executor(api, config, self.clock)
        self.memory = Memory()
        identity = self.options.identity or default_identity()
        self.elector = Elector(api, identity, self.clock, self.options.lease)
        self.passes = 0
        self._wake = asyncio.Event()
        self._overlay: dict[str, vm_pb2.VM] = {}
        self._ready_nodes: set[str] = set()
        self.pods: Informer[pod_pb2.Pod] = Informer(
            api.pods.Watch, handler=self._on_pod, clock=self.clock, name="autoscaler-pods"
        )
        self.nodes: Informer[node_pb2.Node] = Informer(
            api.nodes.Watch, handler=self._on_node, clock=self.clock, name="autoscaler-nodes"
        )
        self.vms: Informer[vm_pb2.VM] = Informer(
            api.vms.Watch, handler=self._on_vm, clock=self.clock, name="autoscaler-vms"
        )

    # ------------------------------------------------------------- wake-ups

    async def _on_pod(self, type_: int, pod: pod_pb2.Pod) -> None:
        # New pending verdicts matter at once; pods coming and going only
        # change emptiness, which the periodic tick measures well enough.
        if type_ == meta_pb2.DELETED or pod.spec.node_name:
            return
        for c in pod.status.conditions:
            if c.type == "PodScheduled" and c.status == "False" and c.reason in UNSCHEDULABLE_REASONS:
                self._wake.set()
                return

    async def _on_node(self, type_: int, node: node_pb2.Node) -> None:
        name = node.metadata.name
        ready = type_ != meta_pb2.DELETED and node_view(node).ready
        if ready != (name in self._ready_nodes) or type_ != meta_pb2.MODIFIED:
            (self._ready_nodes.add if ready else self._ready_nodes.discard)(name)
            self._wake.set()

    async def _on_vm(self, type_: int, vm: vm_pb2.VM) -> None:
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------------ run

    @property
    def synced(self) -> bool:
        return self.pods.synced and self.nodes.synced and self.vms.synced

    async def run(self) -> None:
        """Run until cancelled; restart after an unexpected error."""
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                await self.elector.release()
                raise
            except Exception:
                log.exception("autoscaler: stopped by an unexpected error; restarting in %.0fs",
                              self.options.restart_delay_s)
            await self.clock.sleep(self.options.restart_delay_s)

    async def _run_once(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.pods.run(), name="autoscaler-pods")
            tg.create_task(self.nodes.run(), name="autoscaler-nodes")
            tg.create_task(self.vms.run(), name="autoscaler-vms")
            tg.create_task(self._tick(), name="autoscaler-tick")
            if self.options.leader_elect:
                tg.create_task(self.elector.run(), name="autoscaler-elector")
            tg.create_task(self._loop(), name="autoscaler-loop")

    async def _tick(self) -> None:
        while True:
            await self.clock.sleep(self.config.scan_interval_s)
            self._wake.set()

    def _leading(self) -> bool:
        return not self.options.leader_elect or self.elector.is_leader()

    async def _loop(self) -> None:
        log.info("autoscaler: started (%d VM classes, instant clones %s)",
                 len(self.config.vm_classes), "on" if self.config.instant_clones else "off")
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.options.batch_window_s > 0:
                await self.clock.sleep(self.options.batch_window_s)
            if not self.synced or not self._leading():
                continue
            await self.reconcile_once()

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

    async def reconcile_once(self) -> Sequence[Action]:
        now = self.clock.now()
        snap = snapshot(self.pods.cache.values(), self.nodes.cache.values(), self.current_vms(), now)
        self.memory = remember(self.memory, snap, self.config, now)
        actions = plan(snap, self.config, self.memory, now, self.fits,
                       parent_idle_pause_s=self.options.parent_idle_pause_s)
        self.passes += 1
        if actions:
            log.debug("autoscaler: pass %d: %s", self.passes, actions)
        outcome = await self.executor.execute(actions)
        self._absorb(outcome)
        return actions

    def _absorb(self, outcome: Outcome) -> None:
        for vm in outcome.created:
            self._overlay[vm.metadata.name] = vm
        now = self.clock.now()
        for c in outcome.failed_classes:
            self.memory = record_failure(self.memory, c, self.config, now)
        if outcome.created:
            # What was just made may change the plan (a parent to taint, pods to count).
            self._wake.set()
