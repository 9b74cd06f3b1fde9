"""The vsphere `Provider`: cowpod's VM operations as vSphere API calls.

    full clone     CloneVM_Task of the template (the class's `image`, else the
                   `template` setting) into the configured folder, pool and
                   datastore; a linked clone (createNewChildDiskBacking from its
                   current snapshot) when the template has one; then PowerOnVM_Task
    instant clone  InstantClone_Task of the running parent, with the child's
                   identity in the spec's extraConfig (guestinfo.cowpod.*). A
                   server without it (vSphere < 6.7: MethodNotFound/NotSupported)
                   gets a linked clone from a snapshot of the parent instead; that
                   is logged once and said in each such VM's message
    pause/resume   SuspendVM_Task / PowerOnVM_Task
    snap free      PromoteDisks_Task (unlink), or where the server lacks it a
                   RelocateVM_Task with moveAllDiskBackingsAndDisallowSharing
    power off      PowerOffVM_Task; destroy: power off, then Destroy_Task
    list / get     the VMs in the configured folder whose extraConfig carries
                   guestinfo.cowpod.cluster = this cluster's id

Everything cowpod knows about a VM lives in its extraConfig (the `guestinfo.`
keys below), so a restarted controller sees exactly what vCenter has. They
are `guestinfo.` keys because those are the ones vSphere lets any VM carry,
and the guest may read them. Every value is a single word: vcsim hands
guestinfo to its guest containers as `--env KEY=value` on a shell line.

A task's fault becomes a `TaskFault` (a FailedPrecondition) whose text names
the fault (InsufficientResourcesFault, ...): the manager marks the VM Failed
with it. DuplicateName becomes AlreadyExists.
"""

from __future__ import annotations

import builtins
import logging
import math
import random
import re
import socket
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cowpod.errors import AlreadyExists, FailedPrecondition, Invalid, NotFound
from hypervisor.guest import GuestBootstrap, GuestEndpoints
from hypervisor.provider import CloneKind, ProviderContext, VMInfo, VMSpecInfo, VMState
from hypervisor.providers.vsphere.client import VC, Session, TaskFault, vim, vmodl
from hypervisor.providers.vsphere.settings import VSphereSettings

log = logging.getLogger(__name__)

PREFIX = "guestinfo.cowpod."
K_CLUSTER = PREFIX + "cluster"
K_VM = PREFIX + "vm"
K_CLASS = PREFIX + "class"
K_CPU = PREFIX + "cpu-millis"
K_MEMORY = PREFIX + "memory-bytes"
K_PARENT = PREFIX + "parent"
K_KIND = PREFIX + "clone-kind"
K_MACHINE_ID = PREFIX + "machine-id"
K_TEMPLATE = PREFIX + "template"
K_CREATED = PREFIX + "created"
K_SNAPPED = PREFIX + "snapped-free"
# "linked": an instant clone that the server could only make as a linked clone.
K_FALLBACK = PREFIX + "fallback"
K_BOOTSTRAP = "guestinfo." + "cowpod.bootstrap"
# guestNetwork host: the loopback address this VM's agent serves on (its "IP").
K_IP = PREFIX + "ip"
# Keys of the source VM carried into every clone's config: vcsim's CloneVM_Task
# copies no extraConfig from the source, and RUN.container is what makes its
# VM run a guest. Real vCenter copies the source's config anyway.
CARRIED_KEYS = ("RUN.container",)
# The snapshot cowpod takes of a parent for linked-clone children.
PARENT_SNAPSHOT = "cowpod-clone-base"

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_WORD_RE = re.compile(r"^[A-Za-z0-9._:/+=-]*$")
_VM_PROPS = ("name", "config.extraConfig", "runtime.powerState", "guest.ipAddress",
             "summary.runtime.bootTime")
_UNSUPPORTED = (vmodl.fault.MethodNotFound, vmodl.fault.NotSupported)
_FALLBACK_NOTE = "the server has no InstantClone_Task: made as a linked clone of a snapshot of the parent"


@dataclass(frozen=True)
class _VMRecord:
    ref: Any
    name: str
    extra: Mapping[str, str]
    power: str
    ip: str
    boot_time: float | None


@dataclass(frozen=True)
class _Place:
    """Where cowpod's VMs go: resolved once per provider."""

    datacenter: Any
    folder: Any
    pool: Any
    datastore: Any
    network: Any


class VSphereProvider:
    """The `Provider` for vCenter/ESXi (see the module docstring)."""

    def __init__(self, settings: VSphereSettings, ctx: ProviderContext, session: Session) -> None:
        self.settings = settings
        self.ctx = ctx
        self.session = session
        self._place: _Place | None = None
        self._place_lock = threading.Lock()
        # None: not known yet; False once the server faulted InstantClone_Task.
        self.instant_clone_supported: bool | None = None
        # guestNetwork host: VM -> the loopback address its agent was given.
        self._loopback: dict[str, str] = {}

    @property
    def name(self) -> str:
        return "vsphere"

    # ---- inventory (worker threads) ---------------------------------------------

    def place_sync(self, vc: VC) -> _Place:
        """The datacenter, folder, pool, datastore and network the settings name;
        FailedPrecondition naming the setting whose object is missing."""
        with self._place_lock:
            if self._place is None:
                self._place = resolve_place(vc, self.settings)
            p = self._place
        return _Place(*(vc.bind(o) if o is not None else None for o in
                        (p.datacenter, p.folder, p.pool, p.datastore, p.network)))

    def _records_sync(self, vc: VC, root: Any, recursive: bool) -> builtins.list[_VMRecord]:
        view = vc.content.viewManager.CreateContainerView(root, [vim.VirtualMachine], recursive)
        try:
            return [_record(obj) for obj in _retrieve(vc, view, vim.VirtualMachine, _VM_PROPS)]
        finally:
            view.DestroyView()

    def _ours_sync(self, vc: VC) -> builtins.list[_VMRecord]:
        folder = self.place_sync(vc).folder
        return [r for r in self._records_sync(vc, folder, False)
                if r.extra.get(K_CLUSTER) == self.ctx.cluster_id]

    def _find_sync(self, vc: VC, name: str) -> _VMRecord:
        for r in self._ours_sync(vc):
            if r.name == name:
                return r
        raise NotFound(f"vm {name!r} not found")

    def _template_sync(self, vc: VC, name: str) -> _VMRecord:
        """A template anywhere in the datacenter's VM folders (not only ours)."""
        dc = self.place_sync(vc).datacenter
        # Names first (a datacenter may hold thousands of VMs), then the one's properties.
        ref = _find_child(vc, dc.vmFolder, vim.VirtualMachine, name)
        if ref is None:
            raise FailedPrecondition(
                f"template VM {name!r} not found in datacenter {self.settings.datacenter!r}")
        pc = vmodl.query.PropertyCollector
        spec = pc.FilterSpec(objectSet=[pc.ObjectSpec(obj=ref)],
                             propSet=[pc.PropertySpec(type=vim.VirtualMachine, pathSet=list(_VM_PROPS))])
        result = vc.content.propertyCollector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
        return _record(result.objects[0])

    def _info(self, r: _VMRecord, children: Sequence[str]) -> VMInfo:
        e = r.extra
        kind = CloneKind(e.get(K_KIND) or CloneKind.FULL)
        state = {
            "poweredOn": VMState.RUNNING,
            "suspended": VMState.PAUSED,
            "poweredOff": VMState.STOPPED,
        }.get(r.power, VMState.FAILED)
        message = "powered off" if state == VMState.STOPPED else ""
        if e.get(K_FALLBACK) == "linked":
            message = f"{message}; {_FALLBACK_NOTE}" if message else _FALLBACK_NOTE
        created = _float(e.get(K_CREATED)) or 0.0
        ip = e.get(K_IP) or r.ip
        return VMInfo(
            name=r.name,
            class_name=e.get(K_CLASS, ""),
            cpu_millis=int(_float(e.get(K_CPU)) or 0),
            memory_bytes=int(_float(e.get(K_MEMORY)) or 0),
            state=state,
            node_name=r.name,
            ip=ip,
            provider_id=f"vsphere://{r.ref._moId}",
            hostname=r.name,
            machine_id=e.get(K_MACHINE_ID, ""),
            clone_kind=kind,
            created_at=created,
            ready_at=r.boot_time if state == VMState.RUNNING else None,
            parent=e.get(K_PARENT, ""),
            children=tuple(sorted(children)),
            snapped_free=kind == CloneKind.FULL or e.get(K_SNAPPED) == "1",
            message=message,
            labels={k.removeprefix(PREFIX): v for k, v in e.items()
                    if k.startswith(PREFIX) and k != K_BOOTSTRAP},
        )

    def _list_sync(self, vc: VC) -> builtins.list[VMInfo]:
        recs = self._ours_sync(vc)
        kids: dict[str, builtins.list[str]] = {}
        for r in recs:
            if r.extra.get(K_PARENT):
                kids.setdefault(r.extra[K_PARENT], []).append(r.name)
        return sorted((self._info(r, kids.get(r.name, [])) for r in recs), key=lambda i: i.name)

    def _get_sync(self, vc: VC, name: str) -> VMInfo:
        for info in self._list_sync(vc):
            if info.name == name:
                return info
        raise NotFound(f"vm {name!r} not found")

    # ---- Provider: reads ---------------------------------------------------------

    async def list(self) -> builtins.list[VMInfo]:
        return await self.session.run(self._list_sync)

    async def get(self, name: str) -> VMInfo:
        return await self.session.run(lambda vc: self._get_sync(vc, name))

    def guest_endpoints(self, name: str) -> GuestEndpoints:
        s = self.settings
        if s.guest_network == "host":
            # The guests share this host's network namespace: each VM gets its
            # own address in 127.0.0.0/8 (all loopback on Linux), so VMs have
            # distinct IPs and their agents the same port, as on real VMs.
            ip = self._loopback.get(name) or _free_loopback(s.agent_port, set(self._loopback.values()))
            self._loopback[name] = ip
            # The guest is a container on this host's engine, as a docker-provider
            # VM is: its pods nest in it (its cgroup, its network), so they
            # freeze with it and the simulator knows which pods are its own.
            return GuestEndpoints(controller=self.ctx.controller.tcp, agent_listen=f"{ip}:{s.agent_port}",
                                  agent_advertise=f"{ip}:{s.agent_port}",
                                  agent_args=("--vm-container", "{container_id}"))
        # The guest init puts the VM's own address in place of {guest_ip}: it is
        # known only once the VM has booted (docs/vsphere.md).
        return GuestEndpoints(controller=s.controller_address, agent_listen=f"0.0.0.0:{s.agent_port}",
                              agent_advertise=f"{{guest_ip}}:{s.agent_port}")

    # ---- Provider: clones --------------------------------------------------------

    def _markers(self, spec: VMSpecInfo, kind: CloneKind, parent: str, guest: GuestBootstrap,
                 fallback: str = "") -> dict[str, str]:
        values = {
            K_CLUSTER: self.ctx.cluster_id,
            K_VM: spec.name,
            K_CLASS: spec.class_name,
            K_CPU: str(spec.cpu_millis),
            K_MEMORY: str(spec.memory_bytes),
            K_PARENT: parent,
            K_KIND: kind.value,
            K_MACHINE_ID: guest.machine_id or uuid.uuid4().hex,
            K_TEMPLATE: "1" if spec.template else "",
            K_CREATED: f"{self.ctx.clock.now():.3f}",
            K_SNAPPED: "1" if kind == CloneKind.FULL else "0",
            K_FALLBACK: fallback,
            K_BOOTSTRAP: guest.to_b64(),
            K_IP: self._loopback.get(spec.name, "") if self.settings.guest_network == "host" else "",
        }
        for key, value in values.items():
            if not _WORD_RE.match(value):
                raise Invalid(key.removeprefix(PREFIX),
                              f"{value!r} must be one word (letters, digits, ._:/+=-)")
        return values

    def _config(self, source: _VMRecord, values: Mapping[str, str], spec: VMSpecInfo | None) -> Any:
        config = vim.vm.ConfigSpec(extraConfig=_extra_config(source, values))
        if spec is not None:
            config.numCPUs = max(1, math.ceil(spec.cpu_millis / 1000))
            config.memoryMB = max(4, math.ceil(spec.memory_bytes / 2**20))
        return config

    def _relocate(self, place: _Place, linked: bool) -> Any:
        loc = vim.vm.RelocateSpec(pool=place.pool, folder=place.folder)
        if place.datastore is not None:
            loc.datastore = place.datastore
        if linked:
            loc.diskMoveType = "createNewChildDiskBacking"
        return loc

    async def _clone(self, what: str, source: _VMRecord, name: str, config: Any, snapshot: Any,
                     *, network: bool = False) -> None:
        """CloneVM_Task of `source` (linked when `snapshot`), then PowerOnVM_Task.
        `network`: move the clone's first NIC to the configured network."""
        def start(vc: VC) -> Any:
            place = self.place_sync(vc)
            if network and place.network is not None:
                config.deviceChange = _nic_to(vc, vc.bind(source.ref), vc.bind(place.network))
            spec = vim.vm.CloneSpec(location=self._relocate(place, snapshot is not None),
                                    config=config, powerOn=False, template=False)
            if snapshot is not None:
                spec.snapshot = vc.bind(snapshot)
            return vc.bind(source.ref).CloneVM_Task(folder=place.folder, name=name, spec=spec)

        vm = await self._task(what, start)
        await self._task(f"power on {name}", lambda vc: vc.bind(vm).PowerOnVM_Task())

    async def _task(self, what: str, start: Any) -> Any:
        try:
            return await self.session.start_task(what, start)
        except TaskFault as err:
            if isinstance(err.fault, vim.fault.DuplicateName):
                raise AlreadyExists(f"{what}: a VM with that name already exists") from None
            raise

    async def _refuse_taken(self, name: str) -> None:
        if not _NAME_RE.match(name):
            raise Invalid("metadata.name", f"{name!r} must be a DNS-1123 label (a-z, 0-9, '-', <= 63)")
        try:
            await self.get(name)
        except NotFound:
            return
        raise AlreadyExists(f"vm {name!r} already exists")

    async def full_clone(self, spec: VMSpecInfo, guest: GuestBootstrap) -> VMInfo:
        await self._refuse_taken(spec.name)
        template = spec.image or self.settings.template
        if not template:
            raise FailedPrecondition(
                f"vm class {spec.class_name!r} names no template: set its image (the template VM's name)"
                " or provider.template")
        src = await self.session.run(lambda vc: self._template_sync(vc, template))
        snapshot = await self.session.run(lambda vc: _current_snapshot(vc, vc.bind(src.ref)))
        values = self._markers(spec, CloneKind.FULL, "", guest)
        await self._clone(f"clone {template} to {spec.name}", src, spec.name,
                          self._config(src, values, spec), snapshot, network=True)
        log.info("full clone %s from template %s (%s)", spec.name, template,
                 "linked" if snapshot is not None else "full copy")
        return await self.get(spec.name)

    async def instant_clone(self, parent: str, child: VMSpecInfo, guest: GuestBootstrap) -> VMInfo:
        if child.name == parent:
            raise Invalid("metadata.name", "a child cannot have its parent's name")
        await self._refuse_taken(child.name)
        src = await self.session.run(lambda vc: self._find_sync(vc, parent))
        if src.power not in ("poweredOn", "suspended"):
            raise FailedPrecondition(f"vm {parent!r} is {src.power}: instant clone needs a running parent")
        if src.power == "suspended" and self.instant_clone_supported is not False:
            # A paused (quiesced) parent: InstantClone_Task needs it powered on,
            # so it runs for the length of the call and is suspended again.
            await self._task(f"power on {parent}", lambda vc: vc.bind(src.ref).PowerOnVM_Task())
            try:
                return await self._instant_clone(src, child, guest)
            finally:
                await self._task(f"suspend {parent}", lambda vc: vc.bind(src.ref).SuspendVM_Task())
        return await self._instant_clone(src, child, guest)

    async def _instant_clone(self, src: _VMRecord, child: VMSpecInfo, guest: GuestBootstrap) -> VMInfo:
        parent = src.name
        if self.instant_clone_supported is not False:
            values = self._markers(child, CloneKind.INSTANT, parent, guest)
            extra = _extra_config(src, values)

            def start(vc: VC) -> Any:
                place = self.place_sync(vc)
                spec = vim.vm.InstantCloneSpec(name=child.name, location=self._relocate(place, False),
                                               config=extra)
                return vc.bind(src.ref).InstantClone_Task(spec=spec)

            try:
                await self._task(f"instant clone {parent} to {child.name}", start)
            except TaskFault as err:
                if not isinstance(err.fault, _UNSUPPORTED):
                    raise
                self.instant_clone_supported = False
                log.warning("vCenter %s has no InstantClone_Task (%s): instant clones are made as"
                            " linked clones of a snapshot of their parent from now on",
                            self.settings.host, err)
            else:
                self.instant_clone_supported = True
                log.info("instant clone %s from %s (InstantClone_Task)", child.name, parent)
                return await self.get(child.name)
        # The fallback: a linked clone of the parent's snapshot (taken once).
        snapshot = await self._parent_snapshot(src)
        values = self._markers(child, CloneKind.INSTANT, parent, guest, fallback="linked")
        await self._clone(f"linked clone {parent} to {child.name}", src, child.name,
                          self._config(src, values, None), snapshot)
        log.info("instant clone %s from %s as a linked clone of snapshot %s",
                 child.name, parent, PARENT_SNAPSHOT)
        return await self.get(child.name)

    async def _parent_snapshot(self, src: _VMRecord) -> Any:
        found = await self.session.run(lambda vc: _named_snapshot(vc, vc.bind(src.ref), PARENT_SNAPSHOT))
        if found is not None:
            return found
        return await self._task(
            f"snapshot {src.name}",
            lambda vc: vc.bind(src.ref).CreateSnapshot_Task(
                name=PARENT_SNAPSHOT, description="the base cowpod's linked-clone children share",
                memory=False, quiesce=False),
        )

    # ---- Provider: lifecycle -----------------------------------------------------

    async def _record(self, name: str) -> _VMRecord:
        return await self.session.run(lambda vc: self._find_sync(vc, name))

    async def snap_free(self, name: str) -> VMInfo:
        r = await self._record(name)
        if r.extra.get(K_KIND) != CloneKind.INSTANT or r.extra.get(K_SNAPPED) == "1":
            return await self.get(name)
        try:
            await self._task(f"promote disks of {name}",
                             lambda vc: vc.bind(r.ref).PromoteDisks_Task(unlink=True))
        except TaskFault as err:
            # Missing (vcsim), or refused for a running VM: relocating onto its own
            # datastore with its own copy of every disk does the same while it runs.
            if not isinstance(err.fault, (*_UNSUPPORTED, vim.fault.InvalidPowerState)):
                raise
            spec = vim.vm.RelocateSpec(diskMoveType="moveAllDiskBackingsAndDisallowSharing")
            await self._task(f"relocate {name} off its parent's disks",
                             lambda vc: vc.bind(r.ref).RelocateVM_Task(spec=spec))
        await self._set_extra(name, r, {K_SNAPPED: "1"})
        log.info("snapped %s free of %s", name, r.extra.get(K_PARENT, ""))
        return await self.get(name)

    async def _set_extra(self, name: str, r: _VMRecord, values: Mapping[str, str]) -> None:
        config = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=k, value=v)
                                                for k, v in values.items()])
        await self._task(f"reconfigure {name}", lambda vc: vc.bind(r.ref).ReconfigVM_Task(spec=config))

    async def pause(self, name: str) -> VMInfo:
        r = await self._record(name)
        if r.power == "poweredOn":
            await self._task(f"suspend {name}", lambda vc: vc.bind(r.ref).SuspendVM_Task())
        elif r.power != "suspended":
            raise FailedPrecondition(f"vm {name!r} is {r.power}: only a running VM can be paused")
        return await self.get(name)

    async def resume(self, name: str) -> VMInfo:
        r = await self._record(name)
        if r.power == "suspended":
            await self._task(f"power on {name}", lambda vc: vc.bind(r.ref).PowerOnVM_Task())
        elif r.power != "poweredOn":
            raise FailedPrecondition(f"vm {name!r} is {r.power}: only a paused VM can be resumed")
        return await self.get(name)

    async def power_off(self, name: str) -> VMInfo:
        r = await self._record(name)
        if r.power != "poweredOff":
            await self._task(f"power off {name}", lambda vc: vc.bind(r.ref).PowerOffVM_Task())
        return await self.get(name)

    async def destroy(self, name: str, *, cascade: bool = False) -> None:
        vms = {i.name: i for i in await self.list()}
        info = vms.get(name)
        if info is None:
            return
        blocking = [k for k in info.children if k in vms and not vms[k].snapped_free]
        if blocking and not cascade:
            raise FailedPrecondition(
                f"vm {name!r} has children that are not snapped free: {', '.join(sorted(blocking))}"
                " (snap them free first, or destroy with cascade)")
        for kid in blocking:
            await self.destroy(kid, cascade=True)
        try:
            r = await self._record(name)
        except NotFound:
            return
        if r.power != "poweredOff":
            await self._task(f"power off {name}", lambda vc: vc.bind(r.ref).PowerOffVM_Task())
        try:
            await self._task(f"destroy {name}", lambda vc: vc.bind(r.ref).Destroy_Task())
        except TaskFault as err:
            if not isinstance(err.fault, vmodl.fault.ManagedObjectNotFound):
                raise
        self._loopback.pop(name, None)
        log.info("destroyed vm %s", name)

    async def close(self) -> None:
        await self.session.close()


# ---- helpers (worker threads) -------------------------------------------------------


def _retrieve(vc: VC, view: Any, kind: Any, paths: Sequence[str]) -> builtins.list[Any]:
    """RetrievePropertiesEx over a container view, every page."""
    pc = vc.content.propertyCollector
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(
            obj=view, skip=True,
            selectSet=[vmodl.query.PropertyCollector.TraversalSpec(name="view", path="view", skip=False,
                                                                    type=vim.view.ContainerView)])],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(type=kind, pathSet=list(paths))],
    )
    out: builtins.list[Any] = []
    result = pc.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions())
    while result is not None:
        out.extend(result.objects or [])
        if not result.token:
            break
        result = pc.ContinueRetrievePropertiesEx(result.token)
    return out


def _extra_config(source: _VMRecord, values: Mapping[str, str]) -> builtins.list[Any]:
    """The clone's extraConfig: the source's carried keys, then cowpod's."""
    extra = [vim.option.OptionValue(key=k, value=source.extra[k]) for k in CARRIED_KEYS if k in source.extra]
    return extra + [vim.option.OptionValue(key=k, value=v) for k, v in values.items()]


def _record(obj: Any) -> _VMRecord:
    props = {p.name: p.val for p in obj.propSet or []}
    extra = {str(o.key): str(o.value) for o in props.get("config.extraConfig") or []}
    boot = props.get("summary.runtime.bootTime")
    return _VMRecord(
        ref=obj.obj, name=str(props.get("name", "")), extra=extra,
        power=str(props.get("runtime.powerState", "")), ip=str(props.get("guest.ipAddress") or ""),
        boot_time=boot.timestamp() if boot is not None else None,
    )


def _snapshot_info(vc: VC, vm: Any) -> Any:
    """The VM's `snapshot` property, or None. Read through RetrievePropertiesEx:
    vcsim 0.24's single-property fetch crashes on a VM that has none."""
    pc = vc.content.propertyCollector
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=vm)],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(type=vim.VirtualMachine, pathSet=["snapshot"])],
    )
    result = pc.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions())
    for obj in (result.objects if result is not None else None) or []:
        for prop in obj.propSet or []:
            return prop.val
    return None


def _current_snapshot(vc: VC, vm: Any) -> Any:
    snap = _snapshot_info(vc, vm)
    return snap.currentSnapshot if snap is not None else None


def _named_snapshot(vc: VC, vm: Any, name: str) -> Any:
    snap = _snapshot_info(vc, vm)
    todo = list(snap.rootSnapshotList) if snap is not None else []
    while todo:
        node = todo.pop()
        if node.name == name:
            return node.snapshot
        todo.extend(node.childSnapshotList or [])
    return None


def _nic_to(vc: VC, vm: Any, network: Any) -> list[Any]:
    """A deviceChange moving `vm`'s first NIC to `network` (none if it has no NIC).

    Children of a parent keep its NIC: the parent already is on the network."""
    pc = vc.content.propertyCollector
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=vm)],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(type=vim.VirtualMachine,
                                                            pathSet=["config.hardware.device"])],
    )
    result = pc.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions())
    devices = [d for o in (result.objects if result is not None else []) or []
               for p in o.propSet or [] for d in p.val or []]
    nic = next((d for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)), None)
    if nic is None:
        return []
    if isinstance(network, vim.dvs.DistributedVirtualPortgroup):
        nic.backing = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
            port=vim.dvs.PortConnection(portgroupKey=network.key,
                                        switchUuid=network.config.distributedVirtualSwitch.uuid))
    else:
        nic.backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(network=network,
                                                                           deviceName=network.name)
    return [vim.vm.device.VirtualDeviceSpec(operation="edit", device=nic)]


def _find_child(vc: VC, root: Any, kind: Any, name: str) -> Any:
    view = vc.content.viewManager.CreateContainerView(root, [kind], True)
    try:
        for obj in _retrieve(vc, view, kind, ("name",)):
            if obj.propSet and obj.propSet[0].val == name:
                return obj.obj
    finally:
        view.DestroyView()
    return None


def resolve_place(vc: VC, s: VSphereSettings) -> _Place:
    """Find every object the settings name; FailedPrecondition with `provider.<key>` for a missing one."""
    where = "provider"
    dc = _find_child(vc, vc.content.rootFolder, vim.Datacenter, s.datacenter)
    if dc is None:
        raise FailedPrecondition(f"{where}.datacenter: no datacenter {s.datacenter!r} on {s.host}")
    in_dc = f"datacenter {s.datacenter!r}"
    folder = dc.vmFolder
    for part in [p for p in s.folder.split("/") if p]:
        nxt = next((c for c in folder.childEntity if isinstance(c, vim.Folder) and c.name == part), None)
        if nxt is None:
            raise FailedPrecondition(f"{where}.folder: no VM folder {s.folder!r} in {in_dc}")
        folder = nxt
    if s.cluster:
        cluster = _find_child(vc, dc.hostFolder, vim.ComputeResource, s.cluster)
        if cluster is None:
            raise FailedPrecondition(f"{where}.cluster: no cluster {s.cluster!r} in {in_dc}")
        pool = cluster.resourcePool
    else:
        pool = _find_child(vc, dc.hostFolder, vim.ResourcePool, s.resource_pool.rsplit("/", 1)[-1])
        if pool is None:
            raise FailedPrecondition(
                f"{where}.resourcePool: no resource pool {s.resource_pool!r} in {in_dc}")
    datastore = None
    if s.datastore:
        datastore = next((d for d in dc.datastore if d.name == s.datastore), None)
        if datastore is None:
            raise FailedPrecondition(f"{where}.datastore: no datastore {s.datastore!r} in {in_dc}")
    network = None
    if s.network:
        network = next((n for n in dc.network if n.name == s.network), None)
        if network is None:
            raise FailedPrecondition(f"{where}.network: no network {s.network!r} in {in_dc}")
    return _Place(dc, folder, pool, datastore, network)


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _free_loopback(port: int, taken: set[str]) -> str:
    """An address in 127.0.0.0/8 where `port` is free (and that we did not hand out)."""
    rng = random.SystemRandom()
    for _ in range(100):
        ip = f"127.{rng.randint(100, 199)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        if ip in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((ip, port))
            except OSError:
                continue
        return ip
    raise FailedPrecondition(f"no loopback address with port {port} free for the VM's agent")
