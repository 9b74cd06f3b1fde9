"""The real qemu guest (deploy/qemu/, Debian + dockerd + the agent) booted under TCG.

One cold boot, driven over the guest channel exactly as the qemu provider
drives it: the guest says `warm` with no identity, takes a bootstrap, starts
its agent, which registers with a real controller through the user-mode NAT;
a pod bound to that node runs in the guest's Docker from the baked image and
its logs come back through the forwarded agent port; the guest refuses a
second identity and powers off cleanly when asked. The QEMU command line is written here, not taken from the
provider, so a guest regression shows up here and not as a provider failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import re
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

import grpc
import pytest

from agent.testing import create_and_bind, make_pod, phase_is, wait_pod
from controller.testing import ControllerRunner
from cowpod.client import Client
from cowpod.v1 import agent_pb2_grpc, meta_pb2, pod_pb2
from hypervisor.guest import GuestBootstrap, GuestEndpoints, node_labels
from hypervisor.testing import ROOT, build_images
from tests.polling import eventually

pytestmark = pytest.mark.e2e

IMAGE_DIR = ROOT / ".build" / "qemu"
BOOT_TIMEOUT = 240.0


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
        return _connect(self.dir / "guest.sock", timeout, self.proc)


def _connect(path: pathlib.Path, timeout: float, proc: subprocess.Popen[bytes]) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(str(path))
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.05)


@dataclass
class Lab:
    """QEMU processes on one host directory; `close` removes every process and file it made."""

    root: pathlib.Path
    image: dict[str, Any]
    guests: list[Guest]
    ram_files: list[pathlib.Path]

    def launch(self, name: str, backing: pathlib.Path, *, ram: pathlib.Path | None = None,
               share: bool = True, incoming: bool = False) -> Guest:
        """A VM on a fresh overlay over `backing`; with `ram`, its memory is that file
        (shared: a snapshot's source; private: a clone mapping it copy-on-write)."""
        d = self.root / name
        d.mkdir()
        overlay = d / "disk.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(backing),
                        str(overlay)], check=True)
        port = free_port()
        image = self.image
        machine = "q35"
        memory: list[str] = []
        if ram is not None:
            machine += ",memory-backend=ram0"
            share_opt = "on" if share else "off"
            memory = ["-object", f"memory-backend-file,id=ram0,size=1024M,mem-path={ram},share={share_opt}",
                      "-qmp", f"unix:{d / 'qmp.sock'},server=on,wait=off"]
            if ram not in self.ram_files:
                self.ram_files.append(ram)
        argv = [
            "qemu-system-x86_64", "-name", f"cowpod-test-{d.name}", "-nodefaults", "-no-user-config",
            "-display", "none", "-no-reboot", "-accel", "tcg", "-machine", machine, "-m", "1024M",
            "-smp", "1", *memory,
            "-kernel", str(IMAGE_DIR / image["kernel"]), "-initrd", str(IMAGE_DIR / image["initrd"]),
            "-append", image["cmdline"],
            "-serial", f"file:{d / 'console.log'}",
            "-drive", f"file={overlay},if=none,id=d0,format=qcow2", "-device", "virtio-blk-pci,drive=d0",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:{image['agent_port']}",
            "-device", "virtio-net-pci,netdev=n0",
            "-device", "virtio-serial-pci",
            "-chardev", f"socket,id=cg,path={d / 'guest.sock'},server=on,wait=off",
            "-device", f"virtserialport,chardev=cg,name={image['channel']}",
            "-device", "virtio-rng-pci",
        ]
        if incoming:
            argv += ["-incoming", "defer"]
        with open(d / "qemu.err", "wb") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        g = Guest(dir=d, proc=proc, agent_port=port, started=time.monotonic())
        self.guests.append(g)
        return g

    def close(self) -> None:
        for g in self.guests:
            if g.proc.poll() is None:
                g.proc.send_signal(signal.SIGKILL)
            g.proc.wait(timeout=30)
        for f in self.ram_files:
            f.unlink(missing_ok=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def lab(image: dict[str, Any]) -> Iterator[Lab]:
    # Short: unix sockets live under it.
    root = pathlib.Path(tempfile.mkdtemp(prefix="cpg-", dir="/tmp"))
    lab = Lab(root=root, image=image, guests=[], ram_files=[])
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def guest(lab: Lab) -> Guest:
    """One cold-booting guest on its own overlay."""
    return lab.launch("vm", IMAGE_DIR / lab.image["rootfs"])


class QMP:
    """Just enough of QEMU's monitor protocol for a snapshot and a restore (events skipped)."""

    def __init__(self, guest: Guest) -> None:
        self.sock = _connect(guest.dir / "qmp.sock", 30, guest.proc)
        self.sock.settimeout(60)
        self.file = self.sock.makefile("rwb")
        self.file.readline()  # the greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name: str, **arguments: Any) -> Any:
        self.file.write(json.dumps({"execute": name, "arguments": arguments}).encode() + b"\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "error" in reply:
                raise RuntimeError(f"QMP {name}: {reply['error']}")
            if "return" in reply:
                return reply["return"]

    def wait_migration(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while (status := self.cmd("query-migrate").get("status")) != "completed":
            assert status != "failed" and time.monotonic() < deadline, status
            time.sleep(0.01)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


IGNORE_SHARED = [{"capability": "x-ignore-shared", "state": True}]


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
async def test_guest_boots_warm_becomes_a_node_runs_a_pod_and_powers_off(
    guest: Guest, controller: ControllerRunner, client: Client
) -> None:
    sock = await asyncio.to_thread(guest.connect, 30)
    with contextlib.closing(sock):
        ch = Lines(sock)
        try:
            # Blocking reads off the loop: the controller runs in this test's event loop.
            warm = await asyncio.to_thread(ch.next, BOOT_TIMEOUT)
        except (TimeoutError, ConnectionError) as err:
            pytest.fail(f"no warm from the guest ({err}); console:\n{guest.console[-3000:]}")
        assert warm == {"event": "warm"}, guest.console[-3000:]
        print(f"cold boot -> warm: {time.monotonic() - guest.started:.1f}s (TCG)")
        assert "cowpod-guest: warm in" in guest.console
        # Nothing identity-like before the bootstrap: this is the snapshot point.
        assert "bootstrap" not in guest.console

        # The guest reaches the host's loopback (the controller) as 10.0.2.2.
        name = "qg-" + uuid.uuid4().hex[:6]
        b = make_bootstrap(name, int(controller.address.rsplit(":", 1)[1]), guest.agent_port)
        t0 = time.monotonic()
        ch.send({"bootstrap": b.to_b64(), "now": time.time()})
        started = await asyncio.to_thread(ch.next, 30, "warm")
        assert started == {"event": "started", "node": name, "machine_id": b.machine_id}, started

        async def ready() -> bool:
            try:
                node = await client.nodes.Get(meta_pb2.ObjectKey(name=name))
            except grpc.aio.AioRpcError:
                return False
            return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)

        await eventually(
            ready, timeout=120, interval=0.5, what=f"node {name} Ready",
            explain=lambda: f"console:\n{guest.console[-3000:]}",
        )
        print(f"bootstrap -> node Ready: {time.monotonic() - t0:.1f}s")

        # A pod runs in the guest's Docker, from the image baked into the disk.
        pod = make_pod("hello", ("main", "echo hello from the guest; sleep 1000"))
        await create_and_bind(client, pod, name)
        try:
            await wait_pod(client, "hello", phase_is("Running"), timeout=180)
        except TimeoutError:
            pytest.fail(f"pod never Running; console:\n{guest.console[-3000:]}")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{guest.agent_port}") as agent:
            stub = agent_pb2_grpc.AgentServiceStub(agent)
            key = meta_pb2.ObjectKey(namespace="default", name="hello")
            chunks = [c.data async for c in stub.Logs(pod_pb2.LogsRequest(pod=key))]
        assert b"hello from the guest" in b"".join(chunks)

        # The same bootstrap again is answered the same. Another node's is what a
        # clone of this node is sent: the guest drops this node (its agent, the pod's
        # containers) and becomes the other.
        ch.send({"bootstrap": b.to_b64(), "now": time.time()})
        assert (await asyncio.to_thread(ch.next, 30))["event"] == "started"
        other = make_bootstrap("qg-other", 1, guest.agent_port)
        ch.send({"bootstrap": other.to_b64(), "now": time.time()})
        again = await asyncio.to_thread(ch.next, 60)
        assert again == {"event": "started", "node": "qg-other", "machine_id": other.machine_id,
                         "previous": name}, guest.console[-3000:]
        removed = re.search(rf"clone of node {name}: removed (\d+) container", guest.console)
        assert removed is not None and int(removed.group(1)) >= 2, guest.console[-3000:]  # sandbox + main

        ch.send({"poweroff": True})
        assert await asyncio.to_thread(guest.proc.wait, 90) == 0
    log = guest.console
    assert "cowpod-guest: stopping dockerd" in log and "cowpod-guest: powering off" in log, log[-3000:]


def agent_serves(port: int, timeout: float) -> bool:
    """The agent's gRPC server on the forwarded port answers an HTTP/2 preface with SETTINGS."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
                frame = s.recv(9)
                if len(frame) == 9 and frame[3] == 0x04:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


@pytest.mark.timeout(900)
def test_instant_clones_of_the_warm_guest_each_take_their_own_identity(lab: Lab) -> None:
    """The guest side of Fargo: its init, blocked on the channel in the snapshot,
    wakes in each clone's new QEMU process and becomes that clone's node."""
    ram = pathlib.Path("/dev/shm") / f"cowpod-test-{lab.root.name}.ram"
    parent = lab.launch("parent", IMAGE_DIR / lab.image["rootfs"], ram=ram, share=True)
    with contextlib.closing(parent.connect(30)) as sock:
        assert Lines(sock).next(BOOT_TIMEOUT) == {"event": "warm"}, parent.console[-3000:]
    # Snapshot: device state to a file; the RAM file, no longer written, is the rest.
    state = lab.root / "state"
    qmp = QMP(parent)
    qmp.cmd("stop")
    qmp.cmd("migrate-set-capabilities", capabilities=IGNORE_SHARED)
    qmp.cmd("migrate", uri=f"exec:cat > {state}")
    qmp.wait_migration()
    qmp.cmd("quit")
    qmp.close()
    parent.proc.wait(timeout=30)

    clones = []
    for name in ("qc-1", "qc-2"):
        t0 = time.monotonic()
        g = lab.launch(name, parent.dir / "disk.qcow2", ram=ram, share=False, incoming=True)
        q = QMP(g)
        q.cmd("migrate-set-capabilities", capabilities=IGNORE_SHARED)
        q.cmd("migrate-incoming", uri=f"exec:cat {state}")
        q.wait_migration()
        q.cmd("cont")
        q.close()
        sock = g.connect(10)
        ch = Lines(sock)
        b = make_bootstrap(name, 1, g.agent_port)
        ch.send({"bootstrap": b.to_b64(), "now": time.time()})
        try:
            started = ch.next(30, skip="warm")
        except TimeoutError:
            pytest.fail(f"{name}: no reply to its bootstrap; console:\n{g.console[-3000:]}")
        sock.close()
        assert started == {"event": "started", "node": name, "machine_id": b.machine_id}, g.console[-2000:]
        print(f"{name}: QEMU start -> started {time.monotonic() - t0:.2f}s", end="; ")
        assert agent_serves(g.agent_port, 60), g.console[-2000:]
        print(f"agent serving {time.monotonic() - t0:.2f}s")
        clones.append(g)
    # Both alive at once, each its own node; the boot ran once, in the parent.
    for g in clones:
        assert g.proc.poll() is None
        assert f"bootstrap: node {g.dir.name}," in g.console
        assert "dockerd answers" not in g.console
