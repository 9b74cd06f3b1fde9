"""The real qemu guest (deploy/qemu/, Debian + dockerd + the agent) booted under TCG.

One cold boot, driven over the guest channel exactly as the qemu provider
drives it: the guest says `warm` with no identity, takes a bootstrap, starts
its agent (which dials the controller's address through the user-mode NAT and
serves on the forwarded port), refuses a second identity, and powers off
cleanly when asked. The QEMU command line is written here, not taken from the
provider, so a guest regression shows up here and not as a provider failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from hypervisor.guest import GuestBootstrap, GuestEndpoints, node_labels
from hypervisor.testing import ROOT, build_images

pytestmark = pytest.mark.e2e

IMAGE_DIR = ROOT / ".build" / "qemu"
BOOT_TIMEOUT = 240.0
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.fixture(scope="module")
def image() -> dict[str, Any]:
    for binary, package in (("qemu-system-x86_64", "qemu-system-x86"), ("qemu-img", "qemu-utils"),
                            ("mkfs.ext4", "e2fsprogs")):
        if shutil.which(binary) is None:
            msg = f"{binary} not found: apt-get install {package}"
            pytest.fail(msg) if os.environ.get("CI") else pytest.skip(msg)
    build_images("qemu")
    meta: dict[str, Any] = json.loads((IMAGE_DIR / "image.json").read_text())
    return meta


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Guest:
    dir: pathlib.Path
    proc: subprocess.Popen[bytes]
    agent_port: int
    started: float

    @property
    def console(self) -> str:
        return (self.dir / "console.log").read_text(errors="replace")

    def connect(self, timeout: float) -> socket.socket:
        deadline = time.monotonic() + timeout
        while True:
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(str(self.dir / "guest.sock"))
                return s
            except OSError:
                s.close()
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.1)


@pytest.fixture
def guest(image: dict[str, Any]) -> Iterator[Guest]:
    """One cold-booting guest on its own overlay; the QEMU process and every file go afterwards."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="cpg-", dir="/tmp"))  # short: a unix socket lives here
    overlay = d / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                    "-b", str(IMAGE_DIR / image["rootfs"]), str(overlay)], check=True)
    port = free_port()
    argv = [
        "qemu-system-x86_64", "-name", f"cowpod-test-{d.name}", "-nodefaults", "-no-user-config",
        "-display", "none", "-no-reboot", "-accel", "tcg", "-machine", "q35", "-m", "1024", "-smp", "1",
        "-kernel", str(IMAGE_DIR / image["kernel"]), "-initrd", str(IMAGE_DIR / image["initrd"]),
        "-append", image["cmdline"],
        "-serial", f"file:{d / 'console.log'}",
        "-drive", f"file={overlay},if=virtio,format=qcow2",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:{image['agent_port']}",
        "-device", "virtio-net-pci,netdev=n0",
        "-device", "virtio-serial-pci",
        "-chardev", f"socket,id=cg,path={d / 'guest.sock'},server=on,wait=off",
        "-device", f"virtserialport,chardev=cg,name={image['channel']}",
        "-device", "virtio-rng-pci",
    ]
    with open(d / "qemu.err", "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    g = Guest(dir=d, proc=proc, agent_port=port, started=time.monotonic())
    try:
        yield g
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        shutil.rmtree(d, ignore_errors=True)


class Lines:
    """Newline-delimited JSON over the channel socket, with a deadline per read."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def send(self, msg: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(msg).encode() + b"\n")

    def next(self, timeout: float, skip: str = "") -> dict[str, Any]:
        """The next message, skipping events named `skip` (the repeated "warm")."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                msg: dict[str, Any] = json.loads(line)
                if not skip or msg.get("event") != skip:
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no message in {timeout:.0f}s")
            self.sock.settimeout(left)
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the guest channel closed")
            self.buf += chunk


def make_bootstrap(name: str, controller_port: int, agent_port: int) -> GuestBootstrap:
    return GuestBootstrap(
        node_name=name, hostname=name, machine_id=uuid.uuid4().hex,
        labels=node_labels(name, "small", False, {}),
        endpoints=GuestEndpoints(controller=f"10.0.2.2:{controller_port}", agent_listen="0.0.0.0:7071",
                                 agent_advertise=f"127.0.0.1:{agent_port}"),
        issued_at=time.time(),
    )


@pytest.mark.timeout(900)  # a fresh machine builds the image first (debootstrap, apt)
def test_guest_boots_warm_takes_its_identity_and_powers_off(guest: Guest) -> None:
    # A stand-in controller on the host's loopback: the guest reaches it as 10.0.2.2.
    controller = socket.socket()
    controller.bind(("127.0.0.1", 0))
    controller.listen(4)
    with controller, contextlib.closing(guest.connect(30)) as sock:
        ch = Lines(sock)
        try:
            warm = ch.next(BOOT_TIMEOUT)
        except (TimeoutError, ConnectionError) as err:
            pytest.fail(f"no warm from the guest ({err}); console:\n{guest.console[-3000:]}")
        assert warm == {"event": "warm"}, guest.console[-3000:]
        boot_s = time.monotonic() - guest.started
        print(f"cold boot -> warm: {boot_s:.1f}s (TCG)")
        assert "cowpod-guest: warm in" in guest.console
        # Nothing identity-like was made before the bootstrap: the snapshot point.
        assert "bootstrap" not in guest.console

        b = make_bootstrap("qg-" + uuid.uuid4().hex[:6], controller.getsockname()[1], guest.agent_port)
        ch.send({"bootstrap": b.to_b64(), "now": time.time()})
        started = ch.next(30, skip="warm")
        assert started == {"event": "started", "node": b.node_name, "machine_id": b.machine_id}, started

        # The agent dials the controller (gRPC: the HTTP/2 preface) through the NAT ...
        controller.settimeout(90)
        conn, _ = controller.accept()
        with conn:
            conn.settimeout(30)
            assert conn.recv(len(HTTP2_PREFACE), socket.MSG_WAITALL) == HTTP2_PREFACE
        # ... and serves on the forwarded port (its gRPC server answers with a SETTINGS frame).
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", guest.agent_port), timeout=10) as agent:
                    agent.sendall(HTTP2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                    frame = agent.recv(9)
                    if len(frame) == 9 and frame[3] == 0x04:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no agent on the port; console:\n{guest.console[-3000:]}"
            time.sleep(1)
        assert f"--node-name {b.node_name}" in guest.console

        # The same bootstrap again is answered the same; another identity is refused.
        ch.send({"bootstrap": b.to_b64(), "now": time.time()})
        assert ch.next(30)["event"] == "started"
        other = make_bootstrap("qg-other", 1, guest.agent_port)
        ch.send({"bootstrap": other.to_b64(), "now": time.time()})
        refused = ch.next(30)
        assert refused["event"] == "error" and b.node_name in refused["message"], refused

        ch.send({"poweroff": True})
        assert guest.proc.wait(timeout=90) == 0
    log = guest.console
    assert "cowpod-guest: stopping dockerd" in log and "cowpod-guest: powering off" in log, log[-3000:]
