"""One QEMU process: its command line, its sockets, and starting it.

A VM's directory holds everything about its process:

    <vm dir>/qmp.sock     QMP (bound by the provider, handed to QEMU as fd=N)
    <vm dir>/guest.sock   the guest channel, virtio-serial port org.cowpod.guest (idem)
    <vm dir>/console.log  the guest's serial console
    <vm dir>/qemu.log     QEMU's own stdout/stderr
    <vm dir>/qemu.pid     the process id

The provider binds both unix sockets itself and passes the listening fds to
QEMU, so they exist before QEMU starts (connecting never races its start-up)
and keep working for a restarted controller, which dials the same paths.

QEMU runs in its own session so it outlives the controller that started it:
a VM is not stopped by restarting the control plane.

RAM is always a `memory-backend-file`:
- `share=on` on a file the VM owns (a cold boot): it can become a snapshot
  with x-ignore-shared, the file itself being the RAM image;
- `share=off` on a snapshot's frozen file (an instant clone): MAP_PRIVATE,
  pages are shared with every other clone until written.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

# The guest channel's port name and the agent's port inside the guest (contract with the guest init).
CHANNEL = "org.cowpod.guest"
AGENT_PORT = 7071
DISK_DEVICE = "disk0"


@dataclass(frozen=True)
class MachineSpec:
    """Everything a QEMU command line is built from; two processes with equal
    specs (but for dirs, ports and RAM sharing) can migrate into each other."""

    vm_dir: pathlib.Path
    memory_mb: int
    cpus: int
    kernel: pathlib.Path
    initrd: pathlib.Path | None
    cmdline: str
    ram_path: pathlib.Path
    ram_shared: bool
    host_port: int
    accel: str = "tcg"
    machine: str = "q35"
    disk: pathlib.Path | None = None
    # Start paused, waiting for `migrate-incoming` (a restore).
    incoming: bool = False
    extra_args: tuple[str, ...] = ()


def argv(spec: MachineSpec, binary: str, qmp_fd: int, guest_fd: int) -> list[str]:
    d = spec.vm_dir
    # The kernel and initrd are read at start-up only; on a restore the migrated RAM
    # replaces what they loaded, but the command line must still match the source's.
    out = [
        binary, "-name", f"cowpod-{d.name}", "-nodefaults", "-no-user-config", "-display", "none",
        "-accel", spec.accel, "-machine", f"{spec.machine},memory-backend=ram0",
        "-m", f"{spec.memory_mb}M", "-smp", str(spec.cpus),
        "-object", (f"memory-backend-file,id=ram0,size={spec.memory_mb}M,mem-path={spec.ram_path},"
                    f"share={'on' if spec.ram_shared else 'off'}"),
        "-kernel", str(spec.kernel), "-append", spec.cmdline,
        "-serial", f"file:{d / 'console.log'}",
        "-chardev", f"socket,id=qmp,fd={qmp_fd},server=on,wait=off", "-mon", "chardev=qmp,mode=control",
        "-device", "virtio-serial-pci,id=vser0",
        "-chardev", f"socket,id=cg,fd={guest_fd},server=on,wait=off",
        "-device", f"virtserialport,chardev=cg,name={CHANNEL}",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{spec.host_port}-:{AGENT_PORT}",
        "-device", "virtio-net-pci,netdev=n0",
        "-device", "virtio-rng-pci",
    ]
    if spec.initrd is not None:
        out += ["-initrd", str(spec.initrd)]
    if spec.disk is not None:
        out += ["-drive", f"file={spec.disk},if=none,id={DISK_DEVICE},format=qcow2,cache=unsafe",
                "-device", f"virtio-blk-pci,drive={DISK_DEVICE}"]
    if spec.incoming:
        out += ["-incoming", "defer"]
    return out + list(spec.extra_args)


def _listen(path: pathlib.Path) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(4)
    s.set_inheritable(True)
    return s


def launch(spec: MachineSpec, binary: str) -> int:
    """Start QEMU for `spec`; returns its pid (also written to qemu.pid).

    Blocks only for fork/exec: QEMU's start-up is observed over QMP."""
    d = spec.vm_dir
    d.mkdir(parents=True, exist_ok=True)
    qmp, guest = _listen(d / "qmp.sock"), _listen(d / "guest.sock")
    try:
        with open(d / "qemu.log", "ab") as log:
            proc = subprocess.Popen(
                argv(spec, binary, qmp.fileno(), guest.fileno()),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                pass_fds=(qmp.fileno(), guest.fileno()), start_new_session=True, cwd=d,
            )
    finally:
        qmp.close()
        guest.close()
    tmp = d / "qemu.pid.tmp"
    tmp.write_text(f"{proc.pid}\n")
    tmp.replace(d / "qemu.pid")
    return proc.pid


def read_pid(vm_dir: pathlib.Path) -> int:
    try:
        return int((vm_dir / "qemu.pid").read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def log_tail(vm_dir: pathlib.Path, lines: int = 1) -> str:
    """The last lines QEMU wrote (why it exited), for a FAILED VM's message."""
    try:
        text = (vm_dir / "qemu.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def cpus_for(cpu_millis: int) -> int:
    return max(1, -(-cpu_millis // 1000))


def memory_mb_for(memory_bytes: int) -> int:
    return max(64, -(-memory_bytes // (1024 * 1024)))


def qemu_args_in(pid: int) -> Sequence[str]:
    try:
        raw = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ()
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 9)


def available_mb(ram_dir: pathlib.Path) -> int:
    """What a new guest can get: the host's available memory, capped by the RAM
    directory's free space (a tmpfs is sized separately from the memory it uses)."""
    with open("/proc/meminfo") as f:
        avail = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:")) // 1024
    st = os.statvfs(ram_dir)
    return min(avail, st.f_bavail * st.f_frsize // (1024 * 1024))


def memory_problem(ram_dir: pathlib.Path, need_mb: int) -> str:
    have = available_mb(ram_dir)
    if have < need_mb:
        return (f"not enough memory for a {need_mb} MiB guest: {have} MiB available"
                f" (MemAvailable, {ram_dir} free)")
    return ""
