"""The qemu provider: a VM is one QEMU process; an instant clone forks its parent's memory.

How VM concepts map onto QEMU (docs/qemu.md has the long version):

- VM            one `qemu-system-x86_64` process in its own session, with its own
                user-mode NAT (the guest is 10.0.2.15, the host 10.0.2.2) and the
                agent's port 7071 forwarded to 127.0.0.1:<host port>.
- full clone    a cold boot of the class image (kernel, initrd, a qcow2 overlay on
                rootfs.qcow2) with RAM in a file it owns (`share=on`); the guest
                reports `warm`, the provider sends its bootstrap, the guest `started`.
- quiesce       `stop`, freeze the disk (`blockdev-snapshot-sync`), migrate the
                device state with x-ignore-shared into snap-<n>/state (~ms, KB); the
                RAM file, renamed, is the snapshot. The file must never change again,
                so the VM comes back as a clone of its own snapshot (a new process,
                one restore of downtime). ONCE per parent, as Fargo quiesces once.
                A template parent is quiesced while it is warm and has no identity;
                any other running VM (a node) at its first clone, and it gets no
                bootstrap again: it resumes as itself.
- instant clone a new process with the snapshot's RAM mapped `share=off` (MAP_PRIVATE:
                copy-on-write against the parent and every sibling), an overlay on
                the frozen disk, `-incoming defer`, `migrate-incoming`, `cont`, then
                the child's bootstrap over its own channel. A child of a node resumes
                as that node; its guest drops it (agent, pods, key) on the bootstrap.
- lineage       vm.json's `parent` and `source` (the snapshot it was restored from).
- snap free     `block-stream` the child's overlay (or `qemu-img rebase` when it is
                not running): it then needs nothing of its parent on disk, and its
                RAM mapping keeps the snapshot's pages alive after the parent's file
                is unlinked.
- destroy       SIGKILL the process, delete its directory (overlays, snapshots) and
                the RAM files it owns.

A VM whose RAM is itself a private mapping (an instant clone) can still be a
parent: its snapshot then carries all of RAM in the state file and its
children each load it into a RAM file of their own (no sharing: clone a
template for that).

The records on disk (store.py) and /proc are the only truth, so a restarted
controller re-attaches to running QEMU processes (their QMP sockets are where
they were) and reports dead ones as FAILED.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import hashlib
import logging
import os
import pathlib
import re
import shutil
import socket
import uuid
from collections.abc import Iterator

from cowpod.errors import AlreadyExists, FailedPrecondition, Invalid, NotFound
from cowpod.pki import CONTROLLER_SERVER_NAME
from hypervisor.guest import GuestBootstrap, GuestEndpoints
from hypervisor.provider import CloneKind, ProviderContext, VMInfo, VMSpecInfo, VMState
from hypervisor.providers.qemu import accel, disks
from hypervisor.providers.qemu.channel import Channel
from hypervisor.providers.qemu.machine import (
    AGENT_PORT,
    DISK_DEVICE,
    MachineSpec,
    cpus_for,
    kill,
    launch,
    log_tail,
    memory_mb_for,
    memory_problem,
    read_pid,
)
from hypervisor.providers.qemu.qmp import Monitor, MonitorError, pid_alive, wait_exit
from hypervisor.providers.qemu.settings import GuestImage, QemuSettings
from hypervisor.providers.qemu.store import (
    PHASE_CREATING,
    PHASE_FAILED,
    PHASE_PAUSED,
    PHASE_RUNNING,
    PHASE_STOPPED,
    Snapshot,
    VMRecord,
    read_record,
    write_record,
)

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_MIB = 1024 * 1024
# Seconds a guest gets to power off on ACPI before QEMU is told to quit.
POWERDOWN_GRACE_S = 10.0


def free_port() -> int:
    """A loopback port nobody listens on now (QEMU binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class QemuProvider:
    def __init__(self, settings: QemuSettings, ctx: ProviderContext, *,
                 powerdown_grace_s: float = POWERDOWN_GRACE_S) -> None:
        self.settings = settings
        self._ctx = ctx
        self.root = (ctx.data_dir / "qemu" / ctx.cluster_id).resolve()
        self._grace = powerdown_grace_s
        self._monitors: dict[str, Monitor] = {}
        self._channels: dict[str, Channel] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._ports: dict[str, int] = {}
        # VMs between their old process and its replacement (a parent coming back as a
        # clone of its own snapshot): not failed, whatever /proc says for that moment.
        self._replacing: set[str] = set()
        self.accel: str = ""

    @property
    def name(self) -> str:
        return "qemu"

    # ---- records and their state -------------------------------------------------

    def vm_dir(self, name: str) -> pathlib.Path:
        return self.root / name

    def _ram_file(self, name: str, gen: int) -> pathlib.Path:
        return self.settings.ram_dir / f"cowpod.{self._ctx.cluster_id}.{name}.{gen}.ram"

    def _ram_glob(self, name: str = "*") -> Iterator[pathlib.Path]:
        return self.settings.ram_dir.glob(f"cowpod.{self._ctx.cluster_id}.{name}.*.ram")

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _vm_dirs(self) -> builtins.list[pathlib.Path]:
        if not self.root.is_dir():
            return []
        return [d for d in sorted(self.root.iterdir()) if d.is_dir() and not d.name.startswith(".")]

    def _records(self) -> builtins.list[VMRecord]:
        recs = (read_record(d) for d in self._vm_dirs())
        return [r for r in recs if r is not None]

    def _record(self, name: str) -> VMRecord:
        rec = read_record(self.vm_dir(name)) if _NAME_RE.match(name) else None
        if rec is None:
            raise NotFound(f"vm {name!r} not found")
        return rec

    def _save(self, rec: VMRecord) -> VMRecord:
        write_record(self.vm_dir(rec.name), rec)
        return rec

    def pid(self, name: str) -> int:
        """The VM's QEMU pid, 0 when it is not running (for tests and the bench)."""
        d = self.vm_dir(name)
        pid = read_pid(d)
        return pid if pid_alive(pid, str(d)) else 0

    def _state(self, rec: VMRecord) -> tuple[VMState, str]:
        alive = self.pid(rec.name) > 0
        if rec.phase == PHASE_STOPPED:
            return VMState.STOPPED, rec.message or "powered off"
        if rec.phase == PHASE_FAILED:
            return VMState.FAILED, rec.message
        if not alive and rec.name not in self._replacing:
            why = log_tail(self.vm_dir(rec.name))
            return VMState.FAILED, f"qemu exited: {why}" if why else "qemu process is gone"
        return {PHASE_CREATING: VMState.CREATING, PHASE_PAUSED: VMState.PAUSED}.get(
            rec.phase, VMState.RUNNING), rec.message

    def _info(self, rec: VMRecord, children: builtins.list[str]) -> VMInfo:
        state, message = self._state(rec)
        return VMInfo(
            name=rec.name, class_name=rec.class_name, cpu_millis=rec.cpu_millis,
            memory_bytes=rec.memory_bytes, state=state, node_name=rec.name,
            # Every guest is 10.0.2.15 inside its own NAT; what tells VMs apart, and
            # where the controller reaches the agent, is the forwarded host port.
            ip=f"127.0.0.1:{rec.host_port}", provider_id=f"qemu://{self._ctx.cluster_id}/{rec.name}",
            hostname=rec.name, machine_id=rec.machine_id, clone_kind=CloneKind(rec.clone_kind),
            created_at=rec.created_at, ready_at=rec.ready_at, parent=rec.parent,
            children=tuple(sorted(children)), snapped_free=rec.snapped_free, message=message,
            labels=dict(rec.labels),
        )

    async def list(self) -> builtins.list[VMInfo]:
        recs = self._records()
        kids: dict[str, builtins.list[str]] = {}
        for r in recs:
            if r.parent:
                kids.setdefault(r.parent, []).append(r.name)
        return [self._info(r, kids.get(r.name, [])) for r in recs]

    async def get(self, name: str) -> VMInfo:
        rec = self._record(name)
        return self._info(rec, [r.name for r in self._records() if r.parent == name])

    def guest_endpoints(self, name: str) -> GuestEndpoints:
        rec = read_record(self.vm_dir(name)) if _NAME_RE.match(name) else None
        port = rec.host_port if rec is not None else self._ports.setdefault(name, free_port())
        return GuestEndpoints(
            controller=f"10.0.2.2:{self._ctx.controller.port}",
            agent_listen=f"0.0.0.0:{AGENT_PORT}",
            agent_advertise=f"127.0.0.1:{port}",
            tls_server_name=CONTROLLER_SERVER_NAME,
        )

    # ---- processes -----------------------------------------------------------------

    def image(self) -> GuestImage:
        """The image dir's guest as it is now (read each time: it may be rebuilt)."""
        try:
            return GuestImage.load(self.settings.image_dir)
        except (OSError, ValueError) as err:
            raise FailedPrecondition(
                f"qemu guest image: {err} (build it: deploy/qemu/build-image.sh)") from err

    def _pin(self, img: GuestImage) -> tuple[pathlib.Path, GuestImage]:
        """Hard links to the image's files under .images/<key>, made once per image version.

        A rebuild replaces .build/qemu's files (new inodes), while every disk
        chain and every restore of a VM must read the very files it booted:
        reading a new ext4 image under an old guest's page cache reads garbage."""
        files = [p for p in (img.kernel, img.initrd, img.rootfs) if p is not None]
        stamp = "|".join(f"{p.name}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
                         for p, st in ((p, p.stat()) for p in files))
        key = hashlib.sha256(stamp.encode()).hexdigest()[:16]
        pinned = self.root / ".images" / key
        if not pinned.is_dir():
            tmp = self.root / ".images" / f".{key}.{uuid.uuid4().hex[:6]}"
            tmp.mkdir(parents=True)
            for p in files:
                try:
                    os.link(p, tmp / p.name)
                except OSError:  # another filesystem: a copy, once per image version
                    shutil.copy2(p, tmp / p.name)
            try:
                tmp.rename(pinned)
            except OSError:  # made meanwhile by a concurrent create
                shutil.rmtree(tmp, ignore_errors=True)

        def at(p: pathlib.Path | None) -> pathlib.Path | None:
            return pinned / p.name if p is not None else None

        kernel = at(img.kernel)
        assert kernel is not None
        return pinned, dataclasses.replace(img, kernel=kernel, initrd=at(img.initrd), rootfs=at(img.rootfs))

    def _unpin_unused(self) -> builtins.list[str]:
        images = self.root / ".images"
        if not images.is_dir():
            return []
        used = {r.image for r in self._records()}
        gone = [d for d in images.iterdir() if str(d) not in used]
        for d in gone:
            shutil.rmtree(d, ignore_errors=True)
        with contextlib.suppress(OSError):
            images.rmdir()  # when nothing is pinned any more
        return [str(d) for d in gone]

    async def _accel(self, kernel: pathlib.Path) -> str:
        if not self.accel:
            self.accel = await accel.resolve(self.settings.accel, self.settings.qemu, kernel)
        return self.accel

    async def _machine(self, rec: VMRecord, *, incoming: bool, memory_mb: int, cpus: int) -> MachineSpec:
        kernel = pathlib.Path(rec.kernel)
        accel = await self._accel(kernel)
        if accel == "tcg" and self.settings.tcg_cache_mb:
            accel += f",tb-size={self.settings.tcg_cache_mb}"
        return MachineSpec(
            vm_dir=self.vm_dir(rec.name), memory_mb=memory_mb, cpus=cpus, kernel=kernel,
            initrd=pathlib.Path(rec.initrd) if rec.initrd else None, cmdline=rec.cmdline,
            ram_path=pathlib.Path(rec.ram),
            ram_shared=rec.ram_shared, host_port=rec.host_port, accel=accel,
            machine=self.settings.machine, disk=pathlib.Path(rec.disk) if rec.disk else None,
            incoming=incoming, extra_args=self.settings.extra_args,
        )

    async def _start(self, spec: MachineSpec, name: str) -> Monitor:
        await self._drop_connections(name)
        launch(spec, self.settings.qemu)
        mon = await Monitor.connect(name, spec.vm_dir / "qmp.sock")
        self._monitors[name] = mon
        return mon

    async def _monitor(self, name: str) -> Monitor:
        """The VM's QMP connection; a re-attach after a restart dials its socket again."""
        mon = self._monitors.get(name)
        if mon is None:
            mon = await Monitor.connect(name, self.vm_dir(name) / "qmp.sock")
            self._monitors[name] = mon
        return mon

    async def _drop_connections(self, name: str) -> None:
        ch = self._channels.pop(name, None)
        if ch is not None:
            await ch.close()
        mon = self._monitors.pop(name, None)
        if mon is not None:
            await mon.close()

    async def _end_process(self, name: str, *, grace: float = 0.0) -> None:
        """Stop the VM's QEMU: ACPI power-off for `grace` seconds, then quit, then SIGKILL."""
        pid = self.pid(name)
        if pid and grace > 0:
            with contextlib.suppress(MonitorError):
                mon = await self._monitor(name)
                await mon.execute("system_powerdown")
                await mon.until_event(("SHUTDOWN",), grace)
        if pid and self.pid(name):
            with contextlib.suppress(MonitorError):
                await (await self._monitor(name)).execute("quit")
        await self._drop_connections(name)
        if pid and not await wait_exit(pid, timeout=10.0):
            kill(pid)
            await wait_exit(pid)

    async def _restore(self, rec: VMRecord, snap: Snapshot, *, resume: bool) -> VMRecord:
        """Start `rec`'s process from `snap` (its RAM/disk fields already point where they must)."""
        mon = await self._start(await self._machine(rec, incoming=True, memory_mb=snap.memory_mb,
                                                    cpus=snap.cpus), rec.name)
        await mon.load_state(snap.state, ignore_shared=snap.ignore_shared)
        # Connected before the guest runs again, so it finds its host end open.
        self._channels[rec.name] = await Channel.open(rec.name, self.vm_dir(rec.name))
        if resume:
            await mon.execute("cont")
        return rec

    async def _bootstrap(self, rec: VMRecord, guest: GuestBootstrap) -> VMRecord:
        ch = self._channels.get(rec.name) or await Channel.open(rec.name, self.vm_dir(rec.name))
        self._channels[rec.name] = ch
        await ch.send_bootstrap(guest)
        started = await ch.until("started", self.settings.start_timeout_s)
        now = self._ctx.clock.now()
        info = {k: str(v) for k, v in started.items() if k != "event"}
        return self._save(rec.replace(phase=PHASE_RUNNING, ready_at=now, guest=info))

    async def _fail(self, name: str, err: BaseException) -> None:
        """A create that went wrong: the process goes, the record stays FAILED (destroy removes it)."""
        with contextlib.suppress(Exception):
            await self._end_process(name)
        rec = read_record(self.vm_dir(name))
        if rec is not None:
            self._save(rec.replace(phase=PHASE_FAILED, message=str(err) or type(err).__name__))

    # ---- create --------------------------------------------------------------------

    def _check_new(self, spec: VMSpecInfo) -> None:
        if not _NAME_RE.match(spec.name):
            raise Invalid("metadata.name", f"{spec.name!r} must be a DNS-1123 label (a-z, 0-9, '-', <= 63)")
        if spec.cpu_millis <= 0:
            raise Invalid("spec.cpuMillis", "must be positive")
        if self.vm_dir(spec.name).exists():
            raise AlreadyExists(f"vm {spec.name!r} already exists")

    def _new_record(self, spec: VMSpecInfo, kind: CloneKind, **kw: object) -> VMRecord:
        port = self._ports.pop(spec.name, 0) or free_port()
        rec = VMRecord(
            name=spec.name, class_name=spec.class_name, cpu_millis=spec.cpu_millis,
            memory_bytes=spec.memory_bytes, clone_kind=str(kind), machine_id=uuid.uuid4().hex,
            host_port=port, created_at=self._ctx.clock.now(), template=spec.template,
            labels=dict(spec.node_labels), **kw,  # type: ignore[arg-type]
        )
        self.vm_dir(spec.name).mkdir(parents=True, exist_ok=False)
        return self._save(rec)

    async def full_clone(self, spec: VMSpecInfo, guest: GuestBootstrap) -> VMInfo:
        async with self._lock(spec.name):
            self._check_new(spec)
            img = self.image()
            mem = memory_mb_for(spec.memory_bytes)
            if mem < img.min_memory_mb:
                raise Invalid("spec.memoryBytes", f"the guest image needs at least {img.min_memory_mb} MiB")
            problem = memory_problem(self.settings.ram_dir, mem)
            if problem:
                raise FailedPrecondition(f"vm {spec.name!r}: {problem}")
            d = self.vm_dir(spec.name)
            pinned, img = await asyncio.to_thread(self._pin, img)
            try:
                rec = self._new_record(spec, CloneKind.FULL, ram=str(self._ram_file(spec.name, 0)),
                                       ram_shared=True, disk=str(d / "disk-0.qcow2") if img.rootfs else "",
                                       image=str(pinned), kernel=str(img.kernel),
                                       initrd=str(img.initrd or ""), cmdline=img.cmdline)
            except FileExistsError:
                raise AlreadyExists(f"vm {spec.name!r} already exists") from None
            try:
                if img.rootfs is not None:
                    await disks.overlay(self.settings.qemu_img, img.rootfs, d / "disk-0.qcow2")
                m = await self._machine(rec, incoming=False, memory_mb=mem, cpus=cpus_for(spec.cpu_millis))
                await self._start(m, rec.name)
                ch = await Channel.open(rec.name, d)
                self._channels[rec.name] = ch
                await ch.until("warm", self.settings.boot_timeout_s)
                if spec.template:
                    # Quiesced while warm and nameless: every child forks from here.
                    rec = await self._quiesce(rec)
                rec = await self._bootstrap(rec, guest)
            except BaseException as err:
                await self._fail(spec.name, err)
                raise
            log.info("qemu: booted vm %s (%s)", spec.name, self.accel)
            return await self.get(spec.name)

    async def _quiesce(self, rec: VMRecord) -> VMRecord:
        """Make `rec`'s snapshot (see the module docstring); returns its new record."""
        name, d = rec.name, self.vm_dir(rec.name)
        resume = rec.phase != PHASE_PAUSED
        gen = rec.generation + 1
        sdir = d / f"snap-{gen}"
        sdir.mkdir()
        mon = await self._monitor(name)
        await mon.execute("stop")
        frozen: pathlib.Path | None = None
        new_disk = ""
        if rec.disk:
            frozen, new_disk = pathlib.Path(rec.disk), str(d / f"disk-{gen}.qcow2")
            await mon.freeze_disk(DISK_DEVICE, pathlib.Path(new_disk))
        args = dict(memory_mb=memory_mb_for(rec.memory_bytes), cpus=cpus_for(rec.cpu_millis))
        reply = await mon.execute("query-memory-size-summary")
        args["memory_mb"] = int(reply["base-memory"]) // _MIB
        args["cpus"] = len(await mon.execute("query-cpus-fast"))
        await mon.save_state(sdir / "state", ignore_shared=rec.ram_shared)
        if not rec.ram_shared:
            # Private RAM: the state file holds it all, and this process may go on.
            snap = Snapshot(dir=sdir, state=sdir / "state", ram=None, ignore_shared=False, disk=frozen,
                            **args)
            snap.save()
            if resume:
                await mon.execute("cont")
            return self._save(rec.replace(snapshot=str(sdir), generation=gen, disk=new_disk))
        # The RAM file becomes the snapshot (a rename on the same tmpfs: no copy).
        ram = self._ram_file(name, gen)
        os.rename(rec.ram, ram)
        snap = Snapshot(dir=sdir, state=sdir / "state", ram=ram, ignore_shared=True, disk=frozen, **args)
        snap.save()
        # This process maps the file shared and would write it: it goes, and the VM
        # comes back as a clone of its own snapshot.
        self._replacing.add(name)
        try:
            await self._end_process(name)
            rec = self._save(rec.replace(snapshot=str(sdir), generation=gen, disk=new_disk, ram=str(ram),
                                         ram_shared=False))
            return await self._restore(rec, snap, resume=resume)
        finally:
            self._replacing.discard(name)

    async def _snapshot_of(self, parent: str) -> Snapshot:
        """The parent's quiesce point, made on first use; the parent must run (or be paused)."""
        async with self._lock(parent):
            rec = self._record(parent)
            state, _ = self._state(rec)
            if state not in (VMState.RUNNING, VMState.PAUSED):
                raise FailedPrecondition(f"vm {parent!r} is {state}: instant clone needs a running parent")
            if not rec.snapshot:
                rec = await self._quiesce(rec)
            return Snapshot.load(pathlib.Path(rec.snapshot))

    async def prepare_parent(self, name: str) -> None:
        await self._snapshot_of(name)

    async def instant_clone(self, parent: str, child: VMSpecInfo, guest: GuestBootstrap) -> VMInfo:
        if child.name == parent:
            raise Invalid("metadata.name", "a child cannot have its parent's name")
        prec = self._record(parent)
        self._check_new(child)
        snap = await self._snapshot_of(parent)
        async with self._lock(child.name):
            d = self.vm_dir(child.name)
            if snap.ignore_shared:
                ram, shared = str(snap.ram), False
            else:
                ram, shared = str(self._ram_file(child.name, 0)), True
            try:
                rec = self._new_record(
                    child, CloneKind.INSTANT, parent=parent, source=str(snap.dir), snapped_free=False,
                    ram=ram, ram_shared=shared, disk=str(d / "disk-0.qcow2") if snap.disk else "",
                    image=prec.image, kernel=prec.kernel, initrd=prec.initrd, cmdline=prec.cmdline,
                )
            except FileExistsError:
                raise AlreadyExists(f"vm {child.name!r} already exists") from None
            # A clone has its parent's size whatever was asked: it is the parent's memory.
            rec = self._save(rec.replace(memory_bytes=snap.memory_mb * _MIB, cpu_millis=snap.cpus * 1000)
                             if (memory_mb_for(child.memory_bytes), cpus_for(child.cpu_millis))
                             != (snap.memory_mb, snap.cpus) else rec)
            try:
                if snap.disk is not None:
                    await disks.overlay(self.settings.qemu_img, snap.disk, d / "disk-0.qcow2")
                rec = await self._restore(rec, snap, resume=True)
                rec = await self._bootstrap(rec, guest)
            except BaseException as err:
                await self._fail(child.name, err)
                raise
            log.info("qemu: cloned vm %s from %s", child.name, parent)
            return await self.get(child.name)

    # ---- lifecycle ------------------------------------------------------------------

    async def snap_free(self, name: str) -> VMInfo:
        async with self._lock(name):
            rec = self._record(name)
            if not rec.snapped_free:
                if rec.disk:
                    if self.pid(name):
                        await (await self._monitor(name)).stream_disk(DISK_DEVICE)
                    else:
                        await disks.flatten(self.settings.qemu_img, pathlib.Path(rec.disk))
                # RAM needs nothing: the child's private mapping keeps the snapshot's
                # pages alive even after the parent unlinks the file.
                self._save(rec.replace(snapped_free=True))
        return await self.get(name)

    async def _running(self, name: str, verb: str) -> VMRecord:
        rec = self._record(name)
        state, _ = self._state(rec)
        if state not in (VMState.RUNNING, VMState.PAUSED):
            raise FailedPrecondition(f"vm {name!r} is {state}: only a running VM can be {verb}")
        return rec

    async def pause(self, name: str) -> VMInfo:
        async with self._lock(name):
            rec = await self._running(name, "paused")
            await (await self._monitor(name)).execute("stop")
            self._save(rec.replace(phase=PHASE_PAUSED))
        return await self.get(name)

    async def resume(self, name: str) -> VMInfo:
        async with self._lock(name):
            rec = await self._running(name, "resumed")
            await (await self._monitor(name)).execute("cont")
            self._save(rec.replace(phase=PHASE_RUNNING))
        return await self.get(name)

    async def power_off(self, name: str) -> VMInfo:
        async with self._lock(name):
            rec = self._record(name)
            if self.pid(name):
                # Recorded first: the process ending from here on is intended, not a crash.
                self._save(rec.replace(phase=PHASE_STOPPED, message="powered off"))
                await self._end_process(name, grace=self._grace)
        return await self.get(name)

    async def destroy(self, name: str, *, cascade: bool = False) -> None:
        if not _NAME_RE.match(name):
            return
        async with self._lock(name):
            rec = read_record(self.vm_dir(name))
            if rec is not None:
                blocking = sorted(r.name for r in self._records() if r.parent == name and not r.snapped_free)
                if blocking and not cascade:
                    raise FailedPrecondition(
                        f"vm {name!r} has children that are not snapped free: {', '.join(blocking)}"
                        " (snap them free first, or destroy with cascade)")
                for kid in blocking:
                    await self.destroy(kid, cascade=True)
            await self._drop_connections(name)
            pid = self.pid(name)
            if pid:
                kill(pid)
                await wait_exit(pid)
            # Its own RAM files and its snapshots' (a snapped-free child's private
            # mapping keeps what it still needs after the unlink).
            for ram in self._ram_glob(name):
                ram.unlink(missing_ok=True)
            shutil.rmtree(self.vm_dir(name), ignore_errors=True)
            self._unpin_unused()
        self._locks.pop(name, None)
        if rec is not None:
            log.info("qemu: destroyed vm %s", name)

    async def collect_garbage(self) -> builtins.list[str]:
        """Remove what a killed run left that is not a VM: QEMU processes and RAM
        files of this cluster whose VM has no record, directories without a record."""
        removed: builtins.list[str] = []
        known = {r.name for r in self._records()}
        marker = f"{self.root}/"
        for proc in pathlib.Path("/proc").iterdir():  # noqa: ASYNC240 -- procfs: no disk I/O
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if marker not in cmdline or "qemu" not in cmdline.split("\0", 1)[0]:
                continue
            # Its VM: the directory its sockets and logs are in (not .images/).
            vms = {part.split("/", 1)[0] for part in cmdline.split(marker)[1:]}
            vm = next((v for v in sorted(vms) if not v.startswith(".")), "")
            if vm and vm not in known:
                kill(int(proc.name))
                await wait_exit(int(proc.name), timeout=10.0)
                removed.append(f"process {proc.name} ({vm})")
        for ram in self._ram_glob():
            vm = ram.name.split(".")[2]
            if vm not in known:
                ram.unlink(missing_ok=True)
                removed.append(str(ram))
        for d in self._vm_dirs():
            if d.name not in known:
                shutil.rmtree(d, ignore_errors=True)
                removed.append(str(d))
        return removed + self._unpin_unused()

    async def close(self) -> None:
        for name in builtins.list(self._monitors) + builtins.list(self._channels):
            await self._drop_connections(name)
