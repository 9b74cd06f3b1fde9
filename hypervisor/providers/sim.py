"""The `sim` provider: hollow VMs in a table, each with a hollow agent.

For thousands of nodes on one machine (kubemark, KWOK): a VM is a record; a
full clone or an instant clone takes a configurable time on the injected
clock and then starts a hollow agent (`agent.hollow`) that registers the VM's
node with the real controller and heartbeats it, so the scheduler, the
autoscaler and the VM manager see the same API as with real VMs. No Docker.

Rules are the docker provider's (the contract tests hold for both): unique
identity per clone, instant clones need a running (or paused) parent and stay
tied to it until snapped free, a parent with dependent children is destroyed
only with `cascade`. Pausing a VM pauses its agent's heartbeats; powering off
or destroying stops them (the node then turns NotReady as a dead VM's would).

Layering: `hypervisor` imports only `cowpod`; the agents are injected as a
`NodeAgents`, and `make_provider` (used by the VM manager for `--provider
sim`) loads `agent.hollow` by name at run time.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import importlib
import itertools
import logging
import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cowpod.clock import Clock, RealClock
from cowpod.errors import AlreadyExists, FailedPrecondition, Invalid, NotFound
from hypervisor.guest import GuestBootstrap, GuestEndpoints
from hypervisor.provider import CloneKind, ProviderContext, TaskOwner, VMInfo, VMSpecInfo, VMState
from hypervisor.settings import Fields

log = logging.getLogger(__name__)


class NodeAgents(Protocol):
    """Whatever plays the VMs' agents (hollow agents, or nothing in unit tests)."""

    async def start_node(
        self,
        name: str,
        *,
        cpu_millis: int,
        memory_bytes: int,
        labels: Mapping[str, str],
        template: bool,
        provider_id: str,
    ) -> None: ...

    def stop_node(self, name: str) -> None: ...

    def pause_node(self, name: str, paused: bool) -> None: ...

    async def run(self) -> None: ...


@dataclass(frozen=True)
class SimLatencies:
    """Seconds each operation takes on the provider's clock (defaults: a fast ESXi)."""

    full_clone: float = 2.0
    instant_clone: float = 0.2
    snap_free: float = 0.5
    pause: float = 0.05
    resume: float = 0.05
    power_off: float = 0.2
    destroy: float = 0.1


class SimProvider:
    def __init__(
        self,
        *,
        clock: Clock | None = None,
        latencies: SimLatencies | None = None,
        agents: NodeAgents | None = None,
        cluster_id: str = "default",
        tasks: TaskOwner | None = None,
    ) -> None:
        self._clock = clock or RealClock()
        # The VM manager's task owner when it made us; standalone (tests) our own loop's tasks.
        self._tasks = tasks
        self.latencies = latencies or SimLatencies()
        self._agents = agents
        self._cluster = cluster_id
        self._vms: dict[str, VMInfo] = {}
        self._ips = itertools.count(2)
        self._agents_task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return "sim"

    # ---- helpers -----------------------------------------------------------------

    def _get(self, name: str) -> VMInfo:
        vm = self._vms.get(name)
        if vm is None:
            raise NotFound(f"vm {name!r} not found")
        return vm

    def _view(self, vm: VMInfo) -> VMInfo:
        kids = tuple(sorted(n for n, v in self._vms.items() if v.parent == vm.name))
        return dataclasses.replace(vm, children=kids)

    def _set(self, name: str, **changes: Any) -> VMInfo:
        vm = dataclasses.replace(self._get(name), **changes)
        self._vms[name] = vm
        return self._view(vm)

    def _ensure_agents_running(self) -> None:
        # The provider owns exactly one background task (its agents' loops),
        # started on first use and cancelled and awaited in close().
        if self._agents is not None and self._agents_task is None:
            run = self._agents.run()
            self._agents_task = (self._tasks.spawn(run, "sim-agents") if self._tasks is not None
                                 else asyncio.get_running_loop().create_task(run, name="sim-agents"))

    async def _make(
        self, spec: VMSpecInfo, guest: GuestBootstrap, kind: CloneKind, parent: str, latency: float,
    ) -> VMInfo:
        if not spec.name:
            raise Invalid("metadata.name", "required")
        if spec.name in self._vms:
            raise AlreadyExists(f"vm {spec.name!r} already exists")
        if spec.cpu_millis <= 0 or spec.memory_bytes <= 0:
            raise Invalid("spec", "cpuMillis and memoryBytes must be positive")
        now = self._clock.now()
        n = next(self._ips)
        labels = {"cowpod.vm": spec.name, "cowpod.managed": "1", "cowpod.cluster": self._cluster}
        info = VMInfo(
            name=spec.name,
            class_name=spec.class_name,
            cpu_millis=spec.cpu_millis,
            memory_bytes=spec.memory_bytes,
            state=VMState.CREATING,
            node_name=spec.name,
            ip=f"127.77.{n // 250}.{n % 250 + 2}",
            provider_id=f"sim://{spec.name}",
            hostname=spec.name,
            machine_id=guest.machine_id,
            clone_kind=kind,
            created_at=now,
            parent=parent,
            snapped_free=kind == CloneKind.FULL,
            labels=labels,
        )
        self._vms[spec.name] = info
        await self._clock.sleep(latency)
        if spec.name not in self._vms:  # destroyed while booting
            raise NotFound(f"vm {spec.name!r} was destroyed while it was being created")
        info = self._set(spec.name, state=VMState.RUNNING, ready_at=self._clock.now())
        if self._agents is not None:
            self._ensure_agents_running()
            await self._agents.start_node(
                spec.name,
                cpu_millis=spec.cpu_millis,
                memory_bytes=spec.memory_bytes,
                labels=guest.labels,
                template=spec.template,
                provider_id=info.provider_id,
            )
        return info

    # ---- Provider ----------------------------------------------------------------

    async def list(self) -> builtins.list[VMInfo]:
        return [self._view(v) for _, v in sorted(self._vms.items())]

    async def get(self, name: str) -> VMInfo:
        return self._view(self._get(name))

    def guest_endpoints(self, name: str) -> GuestEndpoints:
        """Hollow agents live in this process: nothing is dialled, nothing listens."""
        return GuestEndpoints(controller="", agent_listen="", agent_advertise="")

    async def full_clone(self, spec: VMSpecInfo, guest: GuestBootstrap) -> VMInfo:
        return await self._make(spec, guest, CloneKind.FULL, "", self.latencies.full_clone)

    async def instant_clone(self, parent: str, child: VMSpecInfo, guest: GuestBootstrap) -> VMInfo:
        p = self._get(parent)
        if p.state not in (VMState.RUNNING, VMState.PAUSED):
            raise FailedPrecondition(f"vm {parent!r} is {p.state}: instant clone needs a running parent")
        if child.name == parent:
            raise Invalid("metadata.name", "a child cannot have its parent's name")
        return await self._make(child, guest, CloneKind.INSTANT, parent, self.latencies.instant_clone)

    async def snap_free(self, name: str) -> VMInfo:
        vm = self._get(name)
        if vm.snapped_free:
            return self._view(vm)
        await self._clock.sleep(self.latencies.snap_free)
        return self._set(name, snapped_free=True)

    async def pause(self, name: str) -> VMInfo:
        vm = self._get(name)
        if vm.state not in (VMState.RUNNING, VMState.PAUSED):
            raise FailedPrecondition(f"vm {name!r} is {vm.state}: only a running VM can be paused")
        await self._clock.sleep(self.latencies.pause)
        if self._agents is not None:
            self._agents.pause_node(name, True)
        return self._set(name, state=VMState.PAUSED)

    async def resume(self, name: str) -> VMInfo:
        vm = self._get(name)
        if vm.state not in (VMState.RUNNING, VMState.PAUSED):
            raise FailedPrecondition(f"vm {name!r} is {vm.state}: only a paused VM can be resumed")
        await self._clock.sleep(self.latencies.resume)
        if self._agents is not None:
            self._agents.pause_node(name, False)
        return self._set(name, state=VMState.RUNNING)

    async def power_off(self, name: str) -> VMInfo:
        self._get(name)
        await self._clock.sleep(self.latencies.power_off)
        if self._agents is not None:
            self._agents.stop_node(name)
        return self._set(name, state=VMState.STOPPED, message="shut down")

    async def destroy(self, name: str, *, cascade: bool = False) -> None:
        if name not in self._vms:
            return
        blocking = [v.name for v in self._vms.values() if v.parent == name and not v.snapped_free]
        if blocking and not cascade:
            raise FailedPrecondition(
                f"vm {name!r} has children that are not snapped free: {', '.join(sorted(blocking))}"
            )
        for kid in blocking:
            await self.destroy(kid, cascade=True)
        await self._clock.sleep(self.latencies.destroy)
        if self._agents is not None:
            self._agents.stop_node(name)
        self._vms.pop(name, None)

    async def close(self) -> None:
        task, self._agents_task = self._agents_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ---- test controls -----------------------------------------------------------

    def crash(self, name: str, message: str = "simulated crash") -> None:
        """The VM dies on its own; its agent stops heartbeating."""
        self._set(name, state=VMState.FAILED, message=message)
        if self._agents is not None:
            self._agents.stop_node(name)


def make_provider(
    *,
    data_dir: pathlib.Path,
    cluster_id: str,
    clock: Clock,
    controller_address: str = "",
    latencies: SimLatencies | None = None,
    tasks: TaskOwner | None = None,
) -> SimProvider:
    """The provider for `--provider sim`.

    Hollow agents need the controller's address: `controller_address`, else
    $COWPOD_SIM_CONTROLLER, else the controller's unix socket under the data
    dir (`<data_dir>/run/controller.sock`) if it exists. Without one, VMs are
    simulated but no nodes register."""
    address = controller_address or os.environ.get("COWPOD_SIM_CONTROLLER", "")
    sock = data_dir / "run" / "controller.sock"
    if not address and sock.exists():
        address = f"unix://{sock}"
    agents: NodeAgents | None = None
    if address:
        hollow = importlib.import_module("agent.hollow")
        creds = importlib.import_module("cowpod.auth.credentials")
        # A secure cluster: hollow agents talk as the controller (its certificate in <data>/pki).
        client = creds.connect(creds.settings_from_pki(address, data_dir / "pki", "controller"))
        fleet = hollow.HollowFleet(client, clock=clock)
        agents = hollow.FleetAgents(fleet)
    else:
        log.warning("sim provider: no controller address; VMs will have no nodes")
    return SimProvider(clock=clock, latencies=latencies, agents=agents, cluster_id=cluster_id, tasks=tasks)


class SimPlugin:
    """`provider: {name: sim, controller: unix:///path}`: hollow VMs, no Docker."""

    name = "sim"

    def parse_settings(self, raw: Mapping[str, Any], where: str) -> str:
        f = Fields(raw, where)
        controller = f.string("controller")
        f.done()
        return controller

    async def check(self, settings: str, ctx: ProviderContext) -> None:
        return None

    def create(self, settings: str, ctx: ProviderContext) -> SimProvider:
        return make_provider(data_dir=ctx.data_dir, cluster_id=ctx.cluster_id, clock=ctx.clock,
                             controller_address=settings, tasks=ctx.tasks)


PLUGIN = SimPlugin()
