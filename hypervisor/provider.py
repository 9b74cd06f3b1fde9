"""The interface every hypervisor provider implements (docker, sim, later vsphere).

A provider is the "ESXi host" of cowpod: it knows how to make, clone, pause
and destroy VMs, and nothing about pods, nodes or etcd. The VM manager
(`hypervisor.manager`) drives a provider from the VM objects stored in the
controller; the provider itself is stateless towards the controller, so every
question ("which VMs exist?") is answered from the backing system (Docker's
containers and labels, the simulator's tables, vCenter's inventory).

Words (see hypervisor/README.md for the picture):

- template: the class's boot image; a *full clone* cold-boots a fresh VM from it.
- parent: a RUNNING VM that an *instant clone* forks from (disk copy-on-write,
  and where the provider can, warm memory).
- child: a VM made by instant clone; it shares its parent's snapshot until it
  is *snapped free*, after which the parent may go.
- lineage: the parent -> children relation, recorded by the provider.

Errors are the domain errors of `cowpod.errors`: `NotFound` for an unknown VM,
`AlreadyExists` for a name in use, `FailedPrecondition` for an impossible
transition (cloning a parent that is not running, destroying a parent whose
children still depend on it without `cascade`).
"""

from __future__ import annotations

import asyncio
import enum
import pathlib
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from cowpod.clock import Clock
from hypervisor.guest import GuestBootstrap, GuestEndpoints


class VMState(enum.StrEnum):
    """What the backing system says about a VM right now."""

    CREATING = "creating"
    RUNNING = "running"
    PAUSED = "paused"
    # Powered off on purpose (power_off) or shut down cleanly.
    STOPPED = "stopped"
    # Died on its own (crash, OOM kill, its container exited non-zero).
    FAILED = "failed"


class CloneKind(enum.StrEnum):
    FULL = "full"
    INSTANT = "instant"


@dataclass(frozen=True)
class VMSpecInfo:
    """What the caller asks for. `parent` is informational here: the provider
    method called (`full_clone` or `instant_clone`) decides how the VM is made."""

    name: str
    class_name: str
    cpu_millis: int
    memory_bytes: int
    # Template image override; empty = the provider's default for the class.
    image: str = ""
    parent: str = ""
    # Labels the VM's node registers with (passed to the agent).
    node_labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    # A warm parent kept for cloning: its node hosts no pods.
    template: bool = False


@dataclass(frozen=True)
class VMInfo:
    """What a provider reports about one VM. Times are epoch seconds."""

    name: str
    class_name: str
    cpu_millis: int
    memory_bytes: int
    state: VMState
    # The node the VM's agent registers; equal to `name` for every provider today.
    node_name: str
    ip: str
    # "docker://<container id>", "sim://<vm>", "vsphere://<moref>"; goes to Node.spec.provider_id.
    provider_id: str
    hostname: str
    machine_id: str
    clone_kind: CloneKind
    created_at: float
    # When the backing system reported the VM started (not when its node is Ready:
    # that is the manager's business).
    ready_at: float | None = None
    parent: str = ""
    children: Sequence[str] = ()
    # True for full clones and for instant clones that no longer need their parent.
    snapped_free: bool = True
    # Exit code or reason when state is FAILED/STOPPED.
    message: str = ""
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)


@runtime_checkable
class Provider(Protocol):
    """A hypervisor. Every method is a coroutine; blocking SDKs run off the loop.

    Methods that change a VM return its fresh `VMInfo`. `destroy` and
    `power_off` are idempotent: a VM that is already gone is not an error
    for `destroy`.
    """

    @property
    def name(self) -> str:
        """"docker", "sim", "vsphere": what VMSpec.provider names."""

    async def list(self) -> list[VMInfo]:
        """Every VM this provider manages for this cluster, in any state."""

    async def get(self, name: str) -> VMInfo:
        """One VM; raises NotFound."""

    def guest_endpoints(self, name: str) -> GuestEndpoints:
        """How VM `name`'s agent and the controller will reach each other.

        Asked by the VM manager before each clone, to build the guest bootstrap."""

    async def full_clone(self, spec: VMSpecInfo, guest: GuestBootstrap) -> VMInfo:
        """Cold-boot a new VM from the class template and hand `guest` to its init.

        AlreadyExists if the name is taken."""

    async def instant_clone(self, parent: str, child: VMSpecInfo, guest: GuestBootstrap) -> VMInfo:
        """Fork a new VM from the RUNNING (or paused) `parent`; `guest` is its new identity.

        The child gets its own name, hostname, IP and machine id (from `guest`,
        handed in after the fork) and never the parent's node name. Raises
        NotFound for an unknown parent and FailedPrecondition when the parent
        is not running."""

    async def snap_free(self, name: str) -> VMInfo:
        """Make an instant-clone child independent of its parent. Idempotent."""

    async def pause(self, name: str) -> VMInfo: ...

    async def resume(self, name: str) -> VMInfo: ...

    async def power_off(self, name: str) -> VMInfo:
        """Stop the VM (clean shutdown), keeping it to be destroyed or inspected."""

    async def destroy(self, name: str, *, cascade: bool = False) -> None:
        """Remove the VM and everything running in it (its pods' containers).

        A parent whose children are not snapped free is refused with
        FailedPrecondition unless `cascade`, which destroys those children first."""

    async def close(self) -> None:
        """Release clients and connections (not the VMs)."""


# ---- optional capabilities: small Protocols, checked with isinstance ---------------


@runtime_checkable
class PreparesParents(Protocol):
    """Quiesce a warm parent ahead of its first clone (snapshot, warm pools)."""

    async def prepare_parent(self, name: str) -> None: ...


@runtime_checkable
class CollectsGarbage(Protocol):
    """Remove leftovers of an earlier run that are not VMs (so the orphan rule misses them)."""

    async def collect_garbage(self) -> None: ...


# ---- what a provider is made from ----------------------------------------------------


class TaskOwner(Protocol):
    """Runs a provider's background work (pool refills, watchers) under the VM
    manager's supervision: cancelled when the manager stops, failures logged."""

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]: ...


@dataclass(frozen=True)
class ControllerAddress:
    """Where the controller serves on the host: `tcp` host:port, `unix` socket path ("" = none)."""

    tcp: str = "127.0.0.1:7070"
    unix: str = ""

    @property
    def port(self) -> int:
        return int(self.tcp.rsplit(":", 1)[1])


@dataclass(frozen=True)
class ProviderContext:
    """What every provider is given, whatever its settings."""

    data_dir: pathlib.Path
    cluster_id: str
    clock: Clock
    tasks: TaskOwner
    controller: ControllerAddress = field(default_factory=ControllerAddress)


S = TypeVar("S")


class ProviderPlugin(Protocol[S]):
    """A provider's entry in `hypervisor.registry`: its settings and its factory.

    `parse_settings` takes the cluster config's `provider:` section (without
    `name`) and raises `cowpod.errors.Invalid` naming `<where>.<key>` and the
    reason; an empty mapping gives the defaults that `--provider NAME` means.
    `check` is the preflight that `cowpod up` and the controller run before
    starting: it raises `FailedPrecondition` with one line naming the setting
    that is wrong (no engine, no image, wrong password, missing datastore)."""

    name: str

    def parse_settings(self, raw: Mapping[str, Any], where: str) -> S: ...

    async def check(self, settings: S, ctx: ProviderContext) -> None: ...

    def create(self, settings: S, ctx: ProviderContext) -> Provider: ...


@runtime_checkable
class SweepsLeftovers(Protocol):
    """A plugin that can find what a cluster left on its backing system after a
    crash (`cowpod down`'s safety net): `leftovers` before the VMs are
    destroyed, `sweep` afterwards (returns what it removed)."""

    async def leftovers(self, ctx: ProviderContext) -> frozenset[str]: ...

    async def sweep(self, ctx: ProviderContext, known: frozenset[str]) -> list[str]: ...
