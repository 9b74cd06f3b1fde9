"""PID 1 of a qemu-provider guest: a machine with no systemd, made ready to be forked.

The kernel runs `/sbin/cowpod-init` (deploy/qemu/), which runs this module. The
guest is built to be snapshotted *warm* and cloned many times, so its life has
two halves, split by the moment it learns who it is:

    boot (no identity)                              after the bootstrap (one per clone)
    ──────────────────────────────────────────      ─────────────────────────────────────
    mount proc/sys/dev/cgroup v1, load modules       step the clock to the host's `now`
    lo + eth0 (user-mode NAT 10.0.2.15/24)           reseed the RNG from the bootstrap
    dockerd (it starts containerd) and wait          hostname, /etc/machine-id, join files
    docker load the baked pod images, once           fork the agent from this warm process
    import the agent's modules                       supervise it (hypervisor.vminit.Init)
    → {"event":"warm"} every second, then block      → {"event":"started","node":...}
      reading the channel: the host may snapshot
      the VM here and restore it many times

Everything before the bootstrap is shared by every clone of a snapshot, so
nothing identity-like (hostname, machine id, keys, random state handed to a
process) may be made before it.

A VM that already is a node can be forked too (its first clone quiesces it):
its clone resumes as the parent — the same agent, pod containers, node key and
hostname in memory and on disk — and then receives a bootstrap naming another
node. As cloud-init does on a new instance-id, the guest then drops everything
per-node the parent left (`GuestInit.forget_node`: the agent killed outright so
it says nothing more as the parent, the parent's pod containers and volumes in
this dockerd, the agent's state, the node's key and certificate, the join
files) and takes the new bootstrap exactly as a first one. The parent itself
is never sent another node's bootstrap (the provider restores it without one),
and the same bootstrap again is answered `started` again. The agent is *forked* from this process, which
imported its modules during boot: a clone's agent starts without reading or
compiling a file, which under TCG is the difference between a second and tens.

The channel is the virtio-serial port `org.cowpod.guest`, newline-delimited
JSON both ways (guest → host: warm, started, error; host → guest: bootstrap,
and `{"poweroff": true}` for a clean shutdown; deploy/qemu/README.md). Without a connected host the
port reads EOF and writes would block, so it is polled, never read blindly; a
poll or a sleep survives the VM being migrated into a new QEMU process.

Signals are blocked and drained with sigtimedwait, as in hypervisor.vminit,
whose `Init` supervises the agent; children get an empty signal mask. SIGTERM,
SIGINT (Ctrl-Alt-Del, e.g. QMP send-key) or the poweroff message stop the
agent, then dockerd, then everything else, and power the machine off.

Standard library only until the agent's modules are imported on purpose.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import dataclasses
import fcntl
import http.client
import importlib
import json
import os
import pathlib
import select
import shutil
import signal
import socket
import struct
import sys
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cowpod.api.labels import VM_LABEL
from hypervisor.guest import GUEST_RUN_DIR, GuestBootstrap
from hypervisor.vminit import PER_VM_STATE, SIGNALS, STATE_DIR, Init, InitConfig, adopt_identity

PORT_NAME = "org.cowpod.guest"
PORT_DIR = "/dev/virtio-ports"
IMAGES_DIR = pathlib.Path("/var/lib/cowpod/images")
LOG_DIR = pathlib.Path("/var/log/cowpod")
DOCKER_SOCKET = "/run/docker.sock"
GUEST_IP = "10.0.2.15/24"
GATEWAY = "10.0.2.2"
ENV = {
    "PATH": "/opt/cowpod/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "PYTHONUNBUFFERED": "1",
}
# Loaded at boot: devices (no udev to load them by modalias) and what dockerd
# needs at once; netfilter's others are loaded on demand through modprobe.
MODULES = (
    "virtio_console",
    "virtio_net",
    "virtio_rng",
    "virtio_balloon",
    "overlay",
    "bridge",
    "br_netfilter",
    "veth",
    "nf_nat",
    "xt_conntrack",
    "xt_MASQUERADE",
    "xt_addrtype",
)
# The agent's modules, imported before warm so a fork of this process starts warm;
# the argv[0] that means "the agent", and its entry point (agent.main.run).
PRELOAD = ("agent.main", "agent.warmup")
AGENT_COMMAND = "cowpod-agent"
DOCKERD_TIMEOUT = 180.0
STOP_GRACE = 8.0
DOCKERD_GRACE = 20.0
# The label the agent puts on every container and volume it makes (agent/labels.py
# NODE; not imported: this module stays free of the agent until preload_agent).
NODE_LABEL = "cowpod.node"
# Under STATE_DIR, what belongs to one node: vminit's per-VM state (the agent's
# node-local state, the remembered VM name) and the node's key and certificates
# (cowpod/auth/flags.py DEFAULT_CERT_DIR, the agent's --cert-dir: a clone must
# not keep its parent's private key).
PER_NODE_STATE: tuple[str, ...] = (*PER_VM_STATE, "pki")
DOCKER_API_TIMEOUT = 120.0

# linux/random.h, linux/reboot.h, sys/mount.h
RNDADDENTROPY = 0x40085203
RNDRESEEDCRNG = 0x5207
LINUX_REBOOT_CMD_POWER_OFF = 0x4321FEDC
LINUX_REBOOT_CMD_CAD_OFF = 0
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_RDONLY, MS_REMOUNT = 2, 4, 8, 1, 32

_libc = ctypes.CDLL(None, use_errno=True)


def log(msg: str) -> None:
    """The host's serial log is how an operator sees a guest; one prefix to grep."""
    print(f"cowpod-guest: {msg}", file=sys.stderr, flush=True)


# ---- the channel ---------------------------------------------------------------


def split_lines(buf: bytes) -> tuple[list[dict[str, Any]], bytes]:
    """Complete JSON-object lines out of `buf`, and what is left of a line not yet ended.

    A host that disconnected mid-line leaves a fragment the next host's first
    line is glued to; the protocol's objects are flat, so such a line is read
    from its last `{"`."""
    *lines, rest = buf.split(b"\n")
    out: list[dict[str, Any]] = []
    for raw in lines:
        if not raw.strip():
            continue
        try:
            msg = json.loads(raw)
        except ValueError:
            try:
                msg = json.loads(raw[raw.rfind(b'{"') :])
            except ValueError:
                log(f"channel: ignoring a line that is not JSON: {raw[:80]!r}")
                continue
        if isinstance(msg, dict):
            out.append(msg)
        else:
            log(f"channel: ignoring a line that is not an object: {raw[:80]!r}")
    return out, rest


class Channel:
    """The guest's end of the virtio-serial port, non-blocking.

    A port whose host end is not connected reads EOF and would block a writer,
    so every write is try-once (the protocol repeats what matters) and waiting
    is poll with a timeout."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = b""

    @staticmethod
    def open(path: str) -> Channel:
        return Channel(os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC))

    def send(self, msg: Mapping[str, Any]) -> bool:
        """Write one line; False when no host is connected to take it."""
        data = json.dumps(msg, separators=(",", ":")).encode() + b"\n"
        deadline = time.monotonic() + 2.0
        while data:
            try:
                n = os.write(self.fd, data)
            except (BlockingIOError, BrokenPipeError):
                n = 0
            except OSError as err:
                log(f"channel: write failed: {err}")
                return False
            if n == len(data):
                return True
            if n == 0 and (time.monotonic() > deadline or not self._host_connected()):
                # Half a line must not stay behind: the host would glue the next one to it.
                return False
            data = data[n:]
            if n == 0:
                time.sleep(0.01)
        return True

    def _host_connected(self) -> bool:
        p = select.poll()
        p.register(self.fd, select.POLLOUT)
        return not any(ev & select.POLLHUP for _, ev in p.poll(0))

    def wait(self, timeout: float) -> list[dict[str, Any]]:
        """Messages that arrive within `timeout` seconds (the first batch; maybe none)."""
        deadline = time.monotonic() + timeout
        p = select.poll()
        p.register(self.fd, select.POLLIN)
        while True:
            left = deadline - time.monotonic()
            events = p.poll(max(0, int(left * 1000)))
            hup = any(ev & select.POLLHUP for _, ev in events)
            if any(ev & select.POLLIN for _, ev in events):
                msgs, eof = self._read()
                if msgs:
                    return msgs
                hup = hup or eof
            if time.monotonic() >= deadline:
                return []
            if hup:
                # No host: the port polls readable (EOF) at once. Sleep a little;
                # a host connecting raises no event we could wait for.
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _read(self) -> tuple[list[dict[str, Any]], bool]:
        """Complete messages read so far, and whether the port said EOF (no host)."""
        eof = False
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError as err:
                log(f"channel: read failed: {err}")
                eof = True
                break
            if not chunk:
                # "No host" — which the port also says while a host that just
                # connected is already sending (its data can overtake the open
                # notice), so nothing read is dropped here; split_lines copes
                # with a line a departed host left unfinished.
                eof = True
                break
            self._buf += chunk
        msgs, self._buf = split_lines(self._buf)
        return msgs, eof


def find_port(name: str = PORT_NAME, sys_root: str = "/sys", dev_root: str = "/dev") -> str | None:
    """The port's device by its name in sysfs (no udev makes /dev/virtio-ports/ links)."""
    base = pathlib.Path(sys_root) / "class" / "virtio-ports"
    if not base.is_dir():
        return None
    for port in sorted(base.iterdir()):
        try:
            if (port / "name").read_text().strip() == name:
                return f"{dev_root}/{port.name}"
        except OSError:
            continue
    return None


# ---- the machine ----------------------------------------------------------------


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    os.makedirs(target, exist_ok=True)
    _check(
        _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode() or None),
        f"mount {fstype} on {target}",
    )


def mounted(target: str) -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == target for line in f)
    except OSError:
        return False


def cgroup_v1_hierarchies(proc_cgroups: str) -> list[str]:
    """The v1 hierarchies to mount, grouped as systemd and Docker expect (cpu,cpuacct and
    net_cls,net_prio share one), from /proc/cgroups' enabled controllers."""
    enabled = []
    for line in proc_cgroups.splitlines():
        fields = line.split()
        if len(fields) == 4 and not line.startswith("#") and fields[3] == "1":
            enabled.append(fields[0])
    groups = [("cpu", "cpuacct"), ("net_cls", "net_prio")]
    out: list[str] = []
    seen: set[str] = set()
    for name in enabled:
        if name in seen:
            continue
        group = next((g for g in groups if name in g), (name,))
        members = [m for m in group if m in enabled]
        seen.update(members)
        out.append(",".join(members))
    return out


def mount_filesystems() -> None:
    nosuid_nodev = MS_NOSUID | MS_NODEV
    for src, target, fstype, flags, data in (
        ("proc", "/proc", "proc", nosuid_nodev | MS_NOEXEC, ""),
        ("sysfs", "/sys", "sysfs", nosuid_nodev | MS_NOEXEC, ""),
        ("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"),
        ("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=666"),
        ("tmpfs", "/dev/shm", "tmpfs", nosuid_nodev, "mode=1777"),
        ("tmpfs", "/run", "tmpfs", nosuid_nodev, "mode=0755"),
        ("tmpfs", "/sys/fs/cgroup", "tmpfs", nosuid_nodev | MS_NOEXEC, "mode=0755"),
    ):
        if not mounted(target):
            mount(src, target, fstype, flags, data)
    for h in cgroup_v1_hierarchies(pathlib.Path("/proc/cgroups").read_text()):
        target = f"/sys/fs/cgroup/{h}"
        if not mounted(target):
            mount("cgroup", target, "cgroup", nosuid_nodev | MS_NOEXEC, h)
        if "," in h:
            for member in h.split(","):
                link = pathlib.Path(f"/sys/fs/cgroup/{member}")
                if not link.exists():
                    link.symlink_to(h)
    for d in ("/run/lock", "/run/docker", GUEST_RUN_DIR, str(LOG_DIR)):
        os.makedirs(d, exist_ok=True)


def run(argv: Sequence[str], *, log_file: str | None = None, quiet: bool = False) -> int:
    """A command with an empty signal mask (PID 1 blocks its own), output to the console or a file."""
    actions: list[tuple[Any, ...]] = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)]
    if log_file or quiet:
        out = log_file or "/dev/null"
        actions += [
            (os.POSIX_SPAWN_OPEN, 1, out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
    try:
        pid = os.posix_spawnp(argv[0], list(argv), dict(os.environ), file_actions=actions, setsigmask=())
    except OSError as err:
        log(f"cannot run {argv[0]}: {err}")
        return 127
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def load_modules(names: Iterable[str]) -> None:
    names = list(names)
    if run(["modprobe", "-a", *names]) != 0:
        log(f"some modules did not load (of {', '.join(names)})")


def make_port_link(name: str = PORT_NAME, timeout: float = 10.0) -> str:
    """/dev/virtio-ports/<name> -> /dev/vportNpM, as udev would; returns the device."""
    deadline = time.monotonic() + timeout
    while (dev := find_port(name)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"no virtio-serial port named {name} (is -device virtserialport,name={name} given?)"
            )
        time.sleep(0.05)
    os.makedirs(PORT_DIR, exist_ok=True)
    link = pathlib.Path(PORT_DIR) / name
    if not link.is_symlink():
        link.symlink_to(dev)
    return str(link)


def bring_up_network(ifname: str = "eth0", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pathlib.Path(f"/sys/class/net/{ifname}").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {ifname} (is a virtio-net device given?)")
        time.sleep(0.05)
    for argv in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "link", "set", ifname, "up"],
        ["ip", "addr", "add", GUEST_IP, "dev", ifname],
        ["ip", "route", "add", "default", "via", GATEWAY],
    ):
        if run(argv) != 0:
            raise RuntimeError(f"{' '.join(argv)} failed")


def docker_ping(sock: str = DOCKER_SOCKET, timeout: float = 2.0) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(sock)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status = s.recv(64)
    except OSError:
        return False
    return status.startswith(b"HTTP/1.") and b" 200 " in status


class Dockerd:
    """dockerd as a child of PID 1, restarted with back-off if it dies."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.backoff = 1.0
        self.next_start = 0.0

    def start(self) -> None:
        argv = ["dockerd", "--config-file", "/etc/docker/daemon.json"]
        actions: list[tuple[Any, ...]] = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (
                os.POSIX_SPAWN_OPEN,
                1,
                str(LOG_DIR / "dockerd.log"),
                os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                0o644,
            ),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        self.pid = os.posix_spawnp(
            argv[0], argv, dict(os.environ), file_actions=actions, setsigmask=(), setsid=True
        )
        log(f"started dockerd (pid {self.pid}; log {LOG_DIR / 'dockerd.log'})")

    def wait_ready(self, timeout: float = DOCKERD_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not docker_ping():
            self.poll(time.monotonic())
            if self.pid is None:
                raise RuntimeError(f"dockerd exited during boot (see {LOG_DIR / 'dockerd.log'})")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"dockerd did not answer in {timeout:.0f}s (see {LOG_DIR / 'dockerd.log'})"
                )
            time.sleep(0.2)

    def poll(self, now: float) -> None:
        """Notice that dockerd died (before PID 1's catch-all reap takes its status)."""
        if self.pid is None:
            return
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0  # reaped by the catch-all already
        if pid == 0:
            return
        log(f"dockerd exited ({os.waitstatus_to_exitcode(status)}); restarting in {self.backoff:.0f}s")
        self.pid = None
        self.next_start = now + self.backoff
        self.backoff = min(self.backoff * 2, 30.0)

    def maybe_restart(self, now: float, stopping: bool) -> None:
        if self.pid is None and not stopping and now >= self.next_start and self.next_start > 0:
            try:
                self.start()
            except OSError as err:
                log(f"cannot start dockerd: {err}")
                self.next_start = now + self.backoff

    def stop(self, grace: float = DOCKERD_GRACE) -> None:
        if self.pid is None:
            return
        log("stopping dockerd")
        _kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            pid, _ = _waitpid_nohang(self.pid)
            if pid != 0:
                self.pid = None
                return
            time.sleep(0.1)
        _kill(self.pid, signal.SIGKILL)
        _waitpid_nohang(self.pid)
        self.pid = None


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("docker", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def docker_load(tar: pathlib.Path, sock: str = DOCKER_SOCKET, timeout: float = 600.0) -> None:
    """`docker load` through the engine's API: the guest carries no docker CLI (45 MB)."""
    conn = _UnixHTTPConnection(sock, timeout)
    try:
        with tar.open("rb") as f:
            conn.request(
                "POST",
                "/images/load?quiet=1",
                body=f,
                headers={"Content-Type": "application/x-tar", "Content-Length": str(tar.stat().st_size)},
            )
            resp = conn.getresponse()
            body = resp.read()
    finally:
        conn.close()
    # A stream of JSON objects; a failure is a status or an "error" in it.
    if resp.status != 200 or b'"error"' in body:
        raise RuntimeError(f"docker load {tar}: {resp.status} {body[-300:].decode(errors='replace')}")


def load_images(images_dir: pathlib.Path = IMAGES_DIR) -> None:
    """Load each baked tar once per disk: the parent does it before its snapshot,
    so clones never do."""
    for tar in sorted(images_dir.glob("*.tar")):
        done = tar.with_suffix(".loaded")
        if done.exists():
            continue
        t0 = time.monotonic()
        docker_load(tar)
        done.touch()
        log(f"loaded {tar.name} in {time.monotonic() - t0:.1f}s")


class Engine(Protocol):
    """The pod containers and volumes of the guest's dockerd (a fake in tests)."""

    def containers(self, label: str) -> list[str]: ...
    def remove_container(self, cid: str) -> None: ...
    def volumes(self, label: str) -> list[str]: ...
    def remove_volume(self, name: str) -> None: ...


class DockerEngine:
    """Just enough of the engine's API to remove a node's objects (no docker CLI here)."""

    def __init__(self, sock: str = DOCKER_SOCKET, timeout: float = DOCKER_API_TIMEOUT) -> None:
        self.sock = sock
        self.timeout = timeout

    def _call(self, method: str, path: str, ok: tuple[int, ...] = (200,)) -> Any:
        conn = _UnixHTTPConnection(self.sock, self.timeout)
        try:
            conn.request(method, path, headers={"Host": "docker"})
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if resp.status not in ok:
            why = body[-300:].decode(errors="replace")
            raise RuntimeError(f"docker {method} {path}: {resp.status} {why}")
        return json.loads(body) if body and resp.status == 200 else None

    @staticmethod
    def _filters(label: str) -> str:
        return urllib.parse.quote(json.dumps({"label": [label]}))

    def containers(self, label: str) -> list[str]:
        found = self._call("GET", f"/containers/json?all=1&filters={self._filters(label)}")
        return [str(c["Id"]) for c in found or []]

    def remove_container(self, cid: str) -> None:
        # 404: gone meanwhile (e.g. removed with its pod's sandbox).
        self._call("DELETE", f"/containers/{urllib.parse.quote(cid)}?force=1&v=1", ok=(204, 404))

    def volumes(self, label: str) -> list[str]:
        found = self._call("GET", f"/volumes?filters={self._filters(label)}") or {}
        return [str(v["Name"]) for v in found.get("Volumes") or []]

    def remove_volume(self, name: str) -> None:
        self._call("DELETE", f"/volumes/{urllib.parse.quote(name)}?force=1", ok=(204, 404))


def preload_agent(modules: Sequence[str] = PRELOAD) -> Callable[[list[str]], object] | None:
    """Import the agent into this process and run its warm-up; the entry point, or
    None when that failed (the agent is then exec'd cold, which still works)."""
    try:
        for name in modules:
            importlib.import_module(name)
        warmup = importlib.import_module("agent.warmup")
        warmup.run([])
        entry: Callable[[list[str]], object] = importlib.import_module("agent.main").run
        return entry
    except Exception:
        log("cannot preload the agent; it will start cold:\n" + traceback.format_exc())
        return None


def flush_to_disk() -> None:
    """What is written before a snapshot is on the disk image the clones share."""
    os.sync()


class Machine(Protocol):
    """What the bootstrap changes outside this process (a fake in tests)."""

    def set_clock(self, epoch: float) -> None: ...
    def reseed(self, entropy: bytes) -> None: ...
    def set_hostname(self, name: str) -> None: ...


class RealMachine:
    def set_clock(self, epoch: float) -> None:
        time.clock_settime(time.CLOCK_REALTIME, epoch)

    def reseed(self, entropy: bytes) -> None:
        fd = os.open("/dev/urandom", os.O_WRONLY)
        try:
            os.write(fd, entropy)  # mixed in even if the ioctls below are refused
            try:
                fcntl.ioctl(fd, RNDADDENTROPY, struct.pack("ii", len(entropy) * 8, len(entropy)) + entropy)
                fcntl.ioctl(fd, RNDRESEEDCRNG)
            except OSError as err:
                log(f"RNG ioctl refused ({err}); entropy mixed in uncredited")
        finally:
            os.close(fd)

    def set_hostname(self, name: str) -> None:
        socket.sethostname(name)
        pathlib.Path("/etc/hostname").write_text(name + "\n")
        hosts = pathlib.Path("/etc/hosts")
        lines = (
            [ln for ln in hosts.read_text().splitlines() if not ln.startswith("127.0.1.1")]
            if hosts.exists()
            else ["127.0.0.1\tlocalhost"]
        )
        hosts.write_text("\n".join([*lines, f"127.0.1.1\t{name}"]) + "\n")


# ---- PID 1 ------------------------------------------------------------------------


@dataclass
class Boot:
    """What the boot half found; `error` set means the guest cannot become a node."""

    agent_entry: Callable[[list[str]], object] | None = None
    error: str = ""


class GuestInit(Init):
    """vminit's supervision (start with back-off, reap, stop), fed by the channel
    instead of the environment, and forking a warm agent instead of exec'ing one."""

    def __init__(
        self,
        channel: Channel,
        machine: Machine,
        boot: Boot,
        *,
        root: pathlib.Path = pathlib.Path("/"),
        dockerd: Dockerd | None = None,
        run_dir: pathlib.Path = pathlib.Path(GUEST_RUN_DIR),
        engine: Engine | None = None,
    ) -> None:
        super().__init__(
            InitConfig(
                vm_name="", machine_id="", agent_argv=(), start_now=False, stop_grace=STOP_GRACE, root=root
            )
        )
        self.channel = channel
        self.machine = machine
        self.boot = boot
        self.dockerd = dockerd
        self.run_dir = run_dir
        self.engine: Engine = engine or DockerEngine()
        self.bootstrap: GuestBootstrap | None = None
        # The node this guest was forked from, when it was (said in `started`).
        self.previous = ""
        # A node whose leftovers (pods, state, key) are not all removed yet: set from
        # the moment a clone starts forgetting its parent until that is done, so a
        # failed removal is retried by the host's next bootstrap.
        self.forgetting = ""

    # ---- the protocol ----

    def handle(self, msg: Mapping[str, Any], now: float) -> None:
        if "bootstrap" in msg:
            self.channel.send(self.take_bootstrap(msg, now))
        elif msg.get("poweroff"):
            log("poweroff requested by the host")
            self.stopping = True
        else:
            log(f"channel: ignoring {sorted(msg)!r}")

    def take_bootstrap(self, msg: Mapping[str, Any], now: float) -> dict[str, Any]:
        """Become the node the bootstrap names; the reply for the host."""
        if self.boot.error:
            return {"event": "error", "message": self.boot.error}
        try:
            b = GuestBootstrap.from_b64(str(msg["bootstrap"]))
        except (ValueError, binascii.Error, UnicodeDecodeError) as err:
            return {"event": "error", "message": f"bad bootstrap: {err}"}
        if self.bootstrap is not None and b.node_name == self.bootstrap.node_name:
            # A host that reconnects may say it again.
            return self.started()
        previous = ""
        if self.bootstrap is not None or self.forgetting:
            # Another node's name after this guest had one: it is a restored clone
            # of an identified VM (the parent is never sent another's bootstrap).
            previous = self.forgetting or (self.bootstrap.node_name if self.bootstrap else "")
            try:
                removed = self.forget_node()
            except (OSError, RuntimeError, ValueError) as err:
                log(f"cannot forget node {previous}: {err}")
                return {"event": "error", "message": f"cannot remove what node {previous!r} left: {err}"}
            log(f"clone of node {previous}: removed {removed}; becoming {b.node_name}")
        try:
            if isinstance(msg.get("now"), (int, float)):
                self.machine.set_clock(float(msg["now"]))
            self.machine.reseed(base64.b64decode(b.entropy) if b.entropy else os.urandom(32))
            self.machine.set_hostname(b.hostname or b.node_name)
            self.cfg = dataclasses.replace(
                self.cfg,
                vm_name=b.labels.get(VM_LABEL, b.node_name),
                machine_id=b.machine_id,
                agent_argv=tuple(b.agent_argv(str(self.run_dir))),
            )
            adopt_identity(self.cfg)
            b.write_join_files(self.run_dir)
        except (OSError, ValueError, binascii.Error) as err:
            log(f"bootstrap failed: {err}")
            return {"event": "error", "message": f"cannot take the bootstrap: {err}"}
        self.bootstrap = b
        self.previous = previous
        log(f"bootstrap: node {b.node_name}, hostname {b.hostname or b.node_name}")
        self.wanted = True
        self.next_start = now
        self.maybe_start(now)
        if self.agent_pid is None:
            return {"event": "error", "message": "the agent did not start (see the serial log); retrying"}
        return self.started()

    def started(self) -> dict[str, Any]:
        assert self.bootstrap is not None
        b = self.bootstrap
        reply = {"event": "started", "node": b.node_name, "machine_id": b.machine_id}
        if self.previous:
            # For the host's record and the operator: this node was forked from that one.
            reply["previous"] = self.previous
        return reply

    def forget_node(self) -> str:
        """Remove everything per-node a cloned parent left; what was removed, for the log.

        Order matters: the agent first and with SIGKILL (its session, i.e. anything it
        started, too), because whatever it would still say — a heartbeat, a pod's
        status, a graceful SIGTERM's last words — it says as the parent's node, with
        the parent's certificate. Then the parent's pod containers (they run here:
        the clone resumed them) and volumes, found by the label the agent puts on
        all it makes; the new agent would never see them (it lists its own node's
        label) and they would run on, unaccounted for. Then the files: the agent's
        state, the node's key and certificates, the join bundle. Hostname and
        machine id are rewritten by the bootstrap that follows. Raises when dockerd
        cannot be told; `forgetting` stays set so the next bootstrap tries again."""
        if self.bootstrap is not None:
            self.forgetting = self.bootstrap.node_name
        self.bootstrap = None
        self.previous = ""
        self.kill_agent()
        containers = self.engine.containers(NODE_LABEL)
        for cid in containers:
            self.engine.remove_container(cid)
        volumes = self.engine.volumes(NODE_LABEL)
        for name in volumes:
            self.engine.remove_volume(name)
        state = self.cfg.root / STATE_DIR.relative_to("/")
        for entry in PER_NODE_STATE:
            _remove(state / entry)
        if self.run_dir.is_dir():
            for leftover in self.run_dir.iterdir():
                _remove(leftover)
        self.forgetting = ""
        return f"{len(containers)} container(s), {len(volumes)} volume(s)"

    def kill_agent(self) -> None:
        """SIGKILL the agent and its session (spawn made it a session leader) and reap it."""
        pid, self.agent_pid = self.agent_pid, None
        self.wanted = False
        self.backoff = 1.0
        if pid is None:
            return
        log(f"killing the previous node's agent (pid {pid})")
        _kill(-pid, signal.SIGKILL)
        _kill(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass

    # ---- supervision ----

    def spawn(self, argv: Sequence[str]) -> int:
        entry = self.boot.agent_entry
        if entry is None or os.path.basename(argv[0]) != AGENT_COMMAND:
            return super().spawn(argv)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid != 0:
            return pid
        code = 1
        try:
            os.setsid()
            for s in SIGNALS:
                signal.signal(s, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            _set_process_name(AGENT_COMMAND)
            sys.argv = list(argv)
            entry(list(argv[1:]))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)

    def on_signal(self, signo: int, now: float) -> None:
        if signo in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
            # SIGINT is also Ctrl-Alt-Del (e.g. QMP send-key): the host asking for a shutdown.
            log(f"{signal.Signals(signo).name}: shutting down")
        super().on_signal(signo, now)

    def reap(self, now: float) -> None:
        if self.dockerd is not None:
            self.dockerd.poll(now)
        super().reap(now)

    def loop(self) -> None:
        """Until stopped: warm (or the boot error) every second until the host speaks,
        then the channel, signals and the agent's supervision."""
        next_say = 0.0
        heard = False
        while not self.stopping:
            now = time.monotonic()
            self.maybe_start(now)
            if self.dockerd is not None:
                self.dockerd.maybe_restart(now, self.stopping)
            if not heard and now >= next_say:
                say: dict[str, Any] = {"event": "warm"}
                if self.boot.error:
                    say = {"event": "error", "message": self.boot.error}
                self.channel.send(say)
                next_say = now + 1.0
            timeout = 1.0 if heard else max(0.0, next_say - now)
            if self.wanted and self.agent_pid is None:
                timeout = max(0.05, min(timeout, self.next_start - now))
            for msg in self.channel.wait(timeout):
                heard = True
                self.handle(msg, time.monotonic())
            while (info := signal.sigtimedwait(SIGNALS, 0)) is not None:
                self.on_signal(info.si_signo, time.monotonic())
            self.reap(time.monotonic())

    def shutdown(self) -> None:
        """The agent (vminit's grace and reaping), then dockerd, which stops the pods."""
        dockerd, self.dockerd = self.dockerd, None
        if self.agent_pid is not None:
            log(f"stopping agent (pid {self.agent_pid})")
            _kill(self.agent_pid, signal.SIGTERM)
        deadline = time.monotonic() + self.cfg.stop_grace
        while self.agent_pid is not None and time.monotonic() < deadline:
            signal.sigtimedwait({signal.SIGCHLD}, 0.2)
            if dockerd is not None:
                dockerd.poll(time.monotonic())
            super().reap(time.monotonic())
        if self.agent_pid is not None:
            _kill(self.agent_pid, signal.SIGKILL)
        if dockerd is not None:
            dockerd.stop()
        super().shutdown()


def _set_process_name(name: str) -> None:
    try:
        _libc.prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME: what ps and top show
    except (AttributeError, OSError):
        pass


def _kill(pid: int, signo: int) -> None:
    try:
        os.kill(pid, signo)
    except (ProcessLookupError, PermissionError):
        pass


def _remove(path: pathlib.Path) -> None:
    """A file, link or directory tree, if it is there (a link is removed, never followed)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _waitpid_nohang(pid: int) -> tuple[int, int]:
    try:
        return os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return pid, 0


def boot(dockerd: Dockerd) -> Boot:
    """The identity-free half, up to "warm"; a failure is reported, never fatal:
    PID 1 must stay up to say what went wrong."""
    t0 = time.monotonic()
    result = Boot()
    try:
        load_modules(MODULES)
        bring_up_network()
        log(f"network up: {GUEST_IP} via {GATEWAY} ({time.monotonic() - t0:.1f}s)")
        dockerd.start()
        dockerd.wait_ready()
        log(f"dockerd answers ({time.monotonic() - t0:.1f}s)")
        load_images()
    except (OSError, RuntimeError) as err:
        result.error = str(err)
        log(f"boot failed: {err}")
        return result
    result.agent_entry = preload_agent()
    flush_to_disk()
    log(
        f"warm in {time.monotonic() - t0:.1f}s after init started "
        f"({time.clock_gettime(time.CLOCK_BOOTTIME):.1f}s since the kernel started; {memory_in_use()})"
    )
    return result


def memory_in_use(meminfo: str = "/proc/meminfo") -> str:
    """For the warm line: what a VM size must leave room for beyond the pods."""
    try:
        fields = {
            k: int(v.split()[0])
            for k, v in (line.split(":", 1) for line in pathlib.Path(meminfo).read_text().splitlines())
        }
        used = fields["MemTotal"] - fields["MemAvailable"]
        return f"{used // 1024} MiB of {fields['MemTotal'] // 1024} MiB in use"
    except (OSError, ValueError, KeyError):
        return "memory unknown"


def poweroff() -> None:
    os.sync()
    try:
        mount("", "/", "", MS_REMOUNT | MS_RDONLY)
    except OSError as err:
        log(f"cannot remount / read-only: {err}")
    log("powering off")
    _libc.reboot(LINUX_REBOOT_CMD_POWER_OFF)
    # Only if reboot() was refused: PID 1 must not exit (the kernel would panic).
    while True:
        time.sleep(3600)


def main() -> int:
    os.environ.update(ENV)
    os.umask(0o022)
    if os.getpid() != 1:
        log("not PID 1: this is a guest's init, run by the kernel (init=/sbin/cowpod-init)")
        return 2
    log(f"init started ({time.clock_gettime(time.CLOCK_BOOTTIME):.1f}s since the kernel started)")
    try:
        mount_filesystems()
    except OSError as err:
        log(f"cannot mount the basics: {err}")
    # Ctrl-Alt-Del (QMP send-key) becomes SIGINT to PID 1: a clean shutdown.
    _libc.reboot(LINUX_REBOOT_CMD_CAD_OFF)
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    # Blocked signals are taken by sigtimedwait; installing a handler (never
    # called) is what makes the kernel deliver them to PID 1 at all.
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
        signal.signal(s, _never_called)
    dockerd = Dockerd()
    port = ""
    try:
        load_modules(["virtio_console"])
        port = make_port_link()
    except RuntimeError as err:
        log(str(err))
    result = boot(dockerd)
    if not port:
        log("no channel to the host: idling until powered off")
        while signal.sigtimedwait({signal.SIGTERM, signal.SIGINT}, 3600) is None:
            pass
        poweroff()
    init = GuestInit(Channel.open(port), RealMachine(), result, dockerd=dockerd)
    try:
        init.loop()
    except Exception:
        log("init failed:\n" + traceback.format_exc())
    init.shutdown()
    poweroff()
    return 0


def _never_called(signo: int, frame: object) -> None:
    return None


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BaseException:
        traceback.print_exc()
        if os.getpid() == 1:
            poweroff()
        raise
