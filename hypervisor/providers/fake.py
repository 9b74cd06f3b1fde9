"""An in-memory `Provider` for unit tests: the docker provider's rules, no Docker.

It keeps the same contract (tests/unit/hypervisor/test_fake_provider.py and
tests/e2e/test_provider_contract.py run the same assertions against it and
the real providers): unique identities per clone, lineage, snap-free rules,
destroy of nested "pod containers", and FAILED for a VM that dies on its own
(`crash`). Time comes from an injected clock.
"""

from __future__ import annotations

import builtins
import dataclasses
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cowpod.clock import Clock, RealClock
from cowpod.errors import AlreadyExists, FailedPrecondition, Invalid, NotFound
from hypervisor.guest import GuestBootstrap, GuestEndpoints
from hypervisor.provider import CloneKind, ProviderContext, VMInfo, VMSpecInfo, VMState
from hypervisor.settings import Fields


@dataclass
class _VM:
    info: VMInfo
    nested: set[str] = field(default_factory=set)


class FakeProvider:
    """A hypervisor that lives in a dict. `calls` records every mutating call."""

    def __init__(self, clock: Clock | None = None, *, name: str = "fake") -> None:
        self._clock = clock or RealClock()
        self._name = name
        self._vms: dict[str, _VM] = {}
        self._ips = itertools.count(2)
        self.calls: builtins.list[tuple[str, str]] = []
        # Set to make the next create fail (tests of the manager's error paths).
        self.fail_next_create: Exception | None = None
        # The guest bootstrap each VM was made with (what a real guest's init would get).
        self.guests: dict[str, GuestBootstrap] = {}

    @property
    def name(self) -> str:
        return self._name

    def _get(self, name: str) -> _VM:
        vm = self._vms.get(name)
        if vm is None:
            raise NotFound(f"vm {name!r} not found")
        return vm

    def _view(self, vm: _VM) -> VMInfo:
        kids = tuple(sorted(n for n, v in self._vms.items() if v.info.parent == vm.info.name))
        return dataclasses.replace(vm.info, children=kids)

    async def list(self) -> builtins.list[VMInfo]:
        return [self._view(v) for _, v in sorted(self._vms.items())]

    async def get(self, name: str) -> VMInfo:
        return self._view(self._get(name))

    def _make(self, spec: VMSpecInfo, guest: GuestBootstrap, kind: CloneKind, parent: str) -> VMInfo:
        if not spec.name:
            raise Invalid("metadata.name", "required")
        if spec.name in self._vms:
            raise AlreadyExists(f"vm {spec.name!r} already exists")
        if self.fail_next_create is not None:
            err, self.fail_next_create = self.fail_next_create, None
            raise err
        now = self._clock.now()
        n = next(self._ips)
        info = VMInfo(
            name=spec.name, class_name=spec.class_name, cpu_millis=spec.cpu_millis,
            memory_bytes=spec.memory_bytes, state=VMState.RUNNING, node_name=spec.name,
            ip=f"10.99.{n // 250}.{n % 250 + 2}", provider_id=f"{self._name}://{spec.name}",
            hostname=spec.name, machine_id=guest.machine_id, clone_kind=kind,
            created_at=now, ready_at=now, parent=parent,
            snapped_free=kind == CloneKind.FULL, labels={"cowpod.vm": spec.name},
        )
        self._vms[spec.name] = _VM(info)
        return info

    def guest_endpoints(self, name: str) -> GuestEndpoints:
        return GuestEndpoints(controller="fake:0", agent_listen="fake:0", agent_advertise=f"fake://{name}")

    async def full_clone(self, spec: VMSpecInfo, guest: GuestBootstrap) -> VMInfo:
        self.calls.append(("full_clone", spec.name))
        self.guests[spec.name] = guest
        self._make(spec, guest, CloneKind.FULL, "")
        return await self.get(spec.name)

    async def instant_clone(self, parent: str, child: VMSpecInfo, guest: GuestBootstrap) -> VMInfo:
        self.calls.append(("instant_clone", child.name))
        self.guests[child.name] = guest
        p = self._get(parent)
        if p.info.state not in (VMState.RUNNING, VMState.PAUSED):
            raise FailedPrecondition(f"vm {parent!r} is {p.info.state}: instant clone needs a running parent")
        if child.name == parent:
            raise Invalid("metadata.name", "a child cannot have its parent's name")
        self._make(child, guest, CloneKind.INSTANT, parent)
        return await self.get(child.name)

    def _set(self, name: str, **changes: object) -> None:
        vm = self._get(name)
        vm.info = dataclasses.replace(vm.info, **changes)  # type: ignore[arg-type]

    async def snap_free(self, name: str) -> VMInfo:
        self.calls.append(("snap_free", name))
        self._set(name, snapped_free=True)
        return await self.get(name)

    async def pause(self, name: str) -> VMInfo:
        self.calls.append(("pause", name))
        vm = self._get(name)
        if vm.info.state not in (VMState.RUNNING, VMState.PAUSED):
            raise FailedPrecondition(f"vm {name!r} is {vm.info.state}: only a running VM can be paused")
        self._set(name, state=VMState.PAUSED)
        return await self.get(name)

    async def resume(self, name: str) -> VMInfo:
        self.calls.append(("resume", name))
        vm = self._get(name)
        if vm.info.state not in (VMState.RUNNING, VMState.PAUSED):
            raise FailedPrecondition(f"vm {name!r} is {vm.info.state}: only a paused VM can be resumed")
        self._set(name, state=VMState.RUNNING)
        return await self.get(name)

    async def power_off(self, name: str) -> VMInfo:
        self.calls.append(("power_off", name))
        self._get(name).nested.clear()
        self._set(name, state=VMState.STOPPED, message="shut down")
        return await self.get(name)

    async def destroy(self, name: str, *, cascade: bool = False) -> None:
        self.calls.append(("destroy", name))
        if name not in self._vms:
            return
        blocking = [v.info.name for v in self._vms.values()
                    if v.info.parent == name and not v.info.snapped_free]
        if blocking and not cascade:
            raise FailedPrecondition(
                f"vm {name!r} has children that are not snapped free: {', '.join(sorted(blocking))}"
            )
        for kid in blocking:
            await self.destroy(kid, cascade=True)
        del self._vms[name]

    async def close(self) -> None:
        return None

    # ---- test controls ----------------------------------------------------

    def crash(self, name: str, message: str = "exited with code 137") -> None:
        """The VM dies on its own (its container exits non-zero)."""
        self._set(name, state=VMState.FAILED, message=message)

    def vanish(self, name: str) -> None:
        """The VM disappears behind cowpod's back (someone removed the container)."""
        del self._vms[name]

    def add_nested(self, name: str, container: str) -> None:
        """A pod container running on the VM's node."""
        self._get(name).nested.add(container)

    async def nested_containers(self, name: str) -> builtins.list[str]:
        return sorted(self._vms[name].nested) if name in self._vms else []


class FakePlugin:
    """For tests of the manager and the registry; no settings."""

    name = "fake"

    def parse_settings(self, raw: Mapping[str, Any], where: str) -> None:
        Fields(raw, where).done()

    async def check(self, settings: None, ctx: ProviderContext) -> None:
        return None

    def create(self, settings: None, ctx: ProviderContext) -> FakeProvider:
        return FakeProvider(ctx.clock)


PLUGIN = FakePlugin()
