"""The guest side of the vsphere provider: identity from guestinfo, then the VM init.

The provider puts the guest bootstrap (hypervisor/guest.py) in the VM's
extraConfig as `guestinfo.cowpod.bootstrap`. This reads it back

- in vcsim's guest containers, from the `VMX_GUESTINFO_COWPOD_BOOTSTRAP`
  environment variable (vcsim turns every `guestinfo.x.y` key into
  `VMX_GUESTINFO_X_Y`);
- on a real VM, with open-vm-tools: `vmware-rpctool "info-get guestinfo.cowpod.bootstrap"`;

writes the join bundle where the agent's flags point, and runs the VM init
(hypervisor/vminit.py) with COWPOD_VM_NAME, COWPOD_MACHINE_ID and
COWPOD_AGENT_ARGV from it: the init supervises the agent as on every provider.

`{guest_ip}` in the agent's flags (the vsphere provider advertises
`{guest_ip}:7071` on real VMs, whose address is known only after boot) becomes
the address this guest uses to reach the controller; `{container_id}` (the
simulator's guests, whose pods nest in them with --vm-container) becomes the
id of the container this guest is.

As PID 1 (a vcsim container) it execs the init. Under systemd on a real VM
it keeps the init as its child and watches guestinfo: an instant clone
resumes its parent's running guest, and its new identity arrives in
guestinfo after the fork, so when the bootstrap changes the init is stopped
and started again with the new one (the init wipes the parent's per-VM state
when the VM name changes). A clone therefore never runs as its parent.

Standard library only.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from hypervisor.guest import BOOTSTRAP_KEY, GUEST_RUN_DIR, GuestBootstrap

GUESTINFO_KEY = f"guestinfo.{BOOTSTRAP_KEY}"
ENV_KEY = "VMX_" + GUESTINFO_KEY.upper().replace(".", "_")
WATCH_INTERVAL_S = 2.0


def log(msg: str) -> None:
    print(f"cowpod-guestinit: {msg}", file=sys.stderr, flush=True)


def read_bootstrap(env: Mapping[str, str]) -> str:
    """The bootstrap's base64 text, or "" when the VM has none (a bare template)."""
    if env.get(ENV_KEY):
        return env[ENV_KEY]
    rpctool = shutil.which("vmware-rpctool")
    if rpctool is None:
        return ""
    try:
        out = subprocess.run([rpctool, f"info-get {GUESTINFO_KEY}"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        log(f"vmware-rpctool: {err}")
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def guest_ip(controller: str) -> str:
    """The local address of the route to the controller (no packet is sent)."""
    host, _, port = controller.removeprefix("dns:///").rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((host.strip("[]") or "127.0.0.1", int(port or 7070)))
            return str(sock.getsockname()[0])
        except (OSError, ValueError):
            return "127.0.0.1"


def container_id(mountinfo: str) -> str:
    """The id of the Docker container whose mounts these are ("" outside one):
    Docker bind-mounts /etc/hostname from /var/lib/docker/containers/<id>/."""
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == "/etc/hostname" and "/containers/" in fields[3]:
            return fields[3].split("/containers/", 1)[1].split("/", 1)[0]
    return ""


def expand(argv: list[str], controller: str, mountinfo: str) -> list[str]:
    """The agent's argv with `{guest_ip}` and `{container_id}` filled in."""
    text = "\0".join(argv)
    if "{guest_ip}" in text:
        text = text.replace("{guest_ip}", guest_ip(controller))
    if "{container_id}" in text:
        text = text.replace("{container_id}", container_id(mountinfo))
    return text.split("\0")


def init_env(boot: GuestBootstrap, base: Mapping[str, str], mountinfo: str = "") -> dict[str, str]:
    """The VM init's environment for this identity."""
    argv = expand(boot.agent_argv(), boot.endpoints.controller, mountinfo)
    env = {k: v for k, v in base.items() if not k.startswith("VMX_GUESTINFO")}
    env.update({
        "COWPOD_VM_NAME": boot.node_name,
        "COWPOD_MACHINE_ID": boot.machine_id,
        "COWPOD_AGENT_ARGV": json.dumps(argv),
        "COWPOD_AGENT_START": "now",
    })
    return env


def prepare(text: str, base: Mapping[str, str]) -> dict[str, str]:
    boot = GuestBootstrap.from_b64(text)
    boot.write_join_files(pathlib.Path(GUEST_RUN_DIR))
    log(f"identity: node {boot.node_name}, machine id {boot.machine_id}")
    try:
        mountinfo = pathlib.Path("/proc/self/mountinfo").read_text()
    except OSError:
        mountinfo = ""
    return init_env(boot, base, mountinfo)


def init_argv() -> list[str]:
    return [sys.executable, "-m", "hypervisor.vminit"]


class Child(Protocol):
    def send_signal(self, sig: int) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class Supervisor:
    """The VM init as a child, started again with each new identity guestinfo shows.

    `spawn(text)` starts the init for a bootstrap ("" = none), `read()` reads
    guestinfo's bootstrap now; both are parameters so tests drive it."""

    def __init__(self, text: str, spawn: Callable[[str], Child], read: Callable[[], str]) -> None:
        self.text = text
        self._spawn = spawn
        self._read = read
        self.child = spawn(text)
        self.stopping = False

    def check(self) -> bool:
        """Re-read guestinfo; on a new bootstrap, stop the init and start it with that. True if so."""
        now = self._read()
        if not now or now == self.text:
            return False
        log("guestinfo bootstrap changed (this VM is a new clone): restarting the init")
        self.text = now
        self.child.send_signal(signal.SIGTERM)
        self.child.wait()
        self.child = self._spawn(now)
        return True

    def exited(self, code: int) -> None:
        """The init died on its own: start it again, as systemd would restart this unit."""
        log(f"the init exited ({code}); starting it again")
        self.child = self._spawn(self.text)

    def stop(self) -> None:
        self.stopping = True
        self.child.send_signal(signal.SIGTERM)


def supervise(text: str) -> int:
    """Run the init as a child (under systemd on a real VM) and watch guestinfo."""
    def spawn(t: str) -> Child:
        return subprocess.Popen(init_argv(), env=prepare(t, os.environ) if t else dict(os.environ))

    sup = Supervisor(text, spawn, lambda: read_bootstrap(os.environ))

    def on_term(signo: int, frame: object) -> None:
        sup.stop()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    while True:
        try:
            code = sup.child.wait(timeout=WATCH_INTERVAL_S)
        except subprocess.TimeoutExpired:
            sup.check()
            continue
        if sup.stopping:
            return 0
        time.sleep(1)  # no tight loop when the init cannot start at all
        sup.exited(code)


def main() -> int:
    text = read_bootstrap(os.environ)
    if not text:
        log(f"no {GUESTINFO_KEY}: starting the init without an identity")
    if os.getpid() == 1:
        env = prepare(text, os.environ) if text else dict(os.environ)
        os.execve(sys.executable, init_argv(), env)
    return supervise(text)


if __name__ == "__main__":
    sys.exit(main())
