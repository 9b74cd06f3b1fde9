"""What the qemu provider knows about its VMs, on disk: the source of truth after a restart.

    <data_dir>/qemu/<cluster>/<vm>/vm.json          VMRecord (written atomically)
    <data_dir>/qemu/<cluster>/<vm>/qemu.pid, *.sock, console.log, qemu.log
    <data_dir>/qemu/<cluster>/<vm>/disk-<n>.qcow2   its overlays; all but the newest are frozen
    <data_dir>/qemu/<cluster>/<vm>/snap-<n>/        a quiesce point: snapshot.json + state
    <data_dir>/qemu/<cluster>/.images/<key>/         the guest image as the VMs booted it (hard links)
    <ram_dir>/cowpod.<cluster>.<vm>.<n>.ram         RAM files (tmpfs)

A VM exists when its directory has a vm.json; whether it runs is asked of
/proc (the pid, checked against its command line). Nothing is kept only in
memory, so a restarted controller sees exactly what exists.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# What the provider last did to a VM (its QEMU process may disagree: then it died).
PHASE_CREATING = "creating"
PHASE_RUNNING = "running"
PHASE_PAUSED = "paused"
PHASE_STOPPED = "stopped"
PHASE_FAILED = "failed"


@dataclass(frozen=True)
class Snapshot:
    """A quiesce point of a VM: restore `state` over `ram` (and boot from `disk`).

    `ignore_shared`: the state leaves RAM out and `ram` is the frozen RAM image,
    mapped MAP_PRIVATE by every clone; otherwise the state carries all of RAM
    and `ram` is empty (the source's RAM was not a shared file it owned)."""

    dir: pathlib.Path
    state: pathlib.Path
    ram: pathlib.Path | None
    ignore_shared: bool
    disk: pathlib.Path | None
    memory_mb: int
    cpus: int

    def to_json(self) -> str:
        return json.dumps({
            "state": str(self.state), "ram": str(self.ram or ""), "ignore_shared": self.ignore_shared,
            "disk": str(self.disk or ""), "memory_mb": self.memory_mb, "cpus": self.cpus,
        }, indent=2)

    @staticmethod
    def load(d: pathlib.Path) -> Snapshot:
        raw: dict[str, Any] = json.loads((d / "snapshot.json").read_text())
        return Snapshot(dir=d, state=pathlib.Path(raw["state"]),
                        ram=pathlib.Path(raw["ram"]) if raw["ram"] else None,
                        ignore_shared=bool(raw["ignore_shared"]),
                        disk=pathlib.Path(raw["disk"]) if raw["disk"] else None,
                        memory_mb=int(raw["memory_mb"]), cpus=int(raw["cpus"]))

    def save(self) -> None:
        _atomic_write(self.dir / "snapshot.json", self.to_json())


@dataclass(frozen=True)
class VMRecord:
    name: str
    class_name: str
    cpu_millis: int
    memory_bytes: int
    clone_kind: str
    machine_id: str
    host_port: int
    created_at: float
    phase: str = PHASE_CREATING
    ready_at: float | None = None
    parent: str = ""
    # The snapshot dir it was restored from ("" = cold boot).
    source: str = ""
    snapped_free: bool = True
    template: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    # RAM: a file this VM owns and maps share=on, or a snapshot's file mapped share=off.
    ram: str = ""
    ram_shared: bool = True
    # The active disk overlay ("" = no disk).
    disk: str = ""
    # Its own quiesce point that children fork from ("" = none yet).
    snapshot: str = ""
    # Counter for snap-<n>, disk-<n>, RAM file names.
    generation: int = 0
    message: str = ""
    # The pinned guest image it runs (.images/<key>): a restore must boot the very
    # kernel and disk its source booted, whatever .build/qemu holds by then.
    image: str = ""
    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""
    # What the guest said when it started ({"node":..., ...}).
    guest: Mapping[str, str] = field(default_factory=dict)

    def replace(self, **changes: Any) -> VMRecord:
        return dataclasses.replace(self, **changes)


def _atomic_write(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_record(vm_dir: pathlib.Path, rec: VMRecord) -> None:
    vm_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(vm_dir / "vm.json", json.dumps(dataclasses.asdict(rec), indent=2, sort_keys=True))


def read_record(vm_dir: pathlib.Path) -> VMRecord | None:
    try:
        raw: dict[str, Any] = json.loads((vm_dir / "vm.json").read_text())
    except (OSError, ValueError):
        return None
    known = {f.name for f in dataclasses.fields(VMRecord)}
    return VMRecord(**{k: v for k, v in raw.items() if k in known})
