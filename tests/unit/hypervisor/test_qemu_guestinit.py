"""The qemu guest's PID 1, without a VM: the channel, the bootstrap, the warm fork.

The channel is a socketpair standing in for the virtio-serial port (the host's
end is the test); the machine-wide effects (clock, RNG, hostname) go to a fake.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.server
import json
import os
import pathlib
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import pytest

from hypervisor.guest import GuestBootstrap, GuestEndpoints, JoinBundle, node_labels
from hypervisor.providers.qemu.guestinit import (
    NODE_LABEL,
    Boot,
    Channel,
    DockerEngine,
    GuestInit,
    cgroup_v1_hierarchies,
    find_port,
    split_lines,
)


class FakeMachine:
    def __init__(self) -> None:
        self.clock: list[float] = []
        self.entropy: list[bytes] = []
        self.hostnames: list[str] = []

    def set_clock(self, epoch: float) -> None:
        self.clock.append(epoch)

    def reseed(self, entropy: bytes) -> None:
        self.entropy.append(entropy)

    def set_hostname(self, name: str) -> None:
        self.hostnames.append(name)


class Host:
    """The host's end of the port: JSON lines, with a timeout on every read."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(5)
        self.file = sock.makefile("rwb")

    def send(self, msg: dict[str, Any]) -> None:
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()

    def next(self) -> dict[str, Any]:
        msg: dict[str, Any] = json.loads(self.file.readline())
        return msg


@pytest.fixture
def pair() -> Iterator[tuple[Channel, Host]]:
    guest, host = socket.socketpair()
    guest.setblocking(False)
    yield Channel(guest.fileno()), Host(host)
    guest.close()
    host.close()


def bootstrap(name: str = "vm-1", *, secure: bool = False) -> GuestBootstrap:
    return GuestBootstrap(
        node_name=name,
        hostname=f"{name}.cowpod",
        machine_id="cd" * 16,
        labels=node_labels(name, "small", False, {}),
        endpoints=GuestEndpoints(
            controller="10.0.2.2:7000",
            agent_listen="0.0.0.0:7071",
            agent_advertise="127.0.0.1:40001",
            tls_server_name="controller",
        ),
        join=JoinBundle("CA", "CERT", "KEY", "tok") if secure else None,
        entropy=base64.b64encode(b"\x01" * 32).decode(),
    )


class FakeEngine:
    """The guest's dockerd: objects by their labels; what was removed, in order."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, str]] = {}  # id or volume name -> labels
        self.removed: list[str] = []
        self.fail = ""

    def _labelled(self, kind: str, label: str) -> list[str]:
        if self.fail:
            raise RuntimeError(self.fail)
        key = label.split("=", 1)[0]
        return [i for i, lab in self.objects.items() if i.startswith(kind) and key in lab]

    def containers(self, label: str) -> list[str]:
        return self._labelled("c-", label)

    def remove_container(self, cid: str) -> None:
        self.removed.append(cid)
        del self.objects[cid]

    def volumes(self, label: str) -> list[str]:
        return self._labelled("v-", label)

    def remove_volume(self, name: str) -> None:
        self.removed.append(name)
        del self.objects[name]


class RecordingInit(GuestInit):
    """Records the agent's argv; the "agent" is a real `sleep` in its own session,
    so stopping it is real too."""

    live: ClassVar[list[RecordingInit]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spawned: list[list[str]] = []
        self.pids: list[int] = []
        RecordingInit.live.append(self)

    def spawn(self, argv: Sequence[str]) -> int:
        self.spawned.append(list(argv))
        pid = os.posix_spawnp("sleep", ["sleep", "600"], dict(os.environ), setsid=True)
        self.pids.append(pid)
        return pid

    def reap(self, now: float) -> None:
        pass  # the test's own children: reaped by the fixture

    def cleanup(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


@pytest.fixture(autouse=True)
def _no_agent_left() -> Iterator[None]:
    yield
    while RecordingInit.live:
        RecordingInit.live.pop().cleanup()


def make_init(
    channel: Channel,
    tmp: pathlib.Path,
    boot: Boot | None = None,
    *,
    engine: FakeEngine | None = None,
) -> tuple[RecordingInit, FakeMachine]:
    m = FakeMachine()
    init = RecordingInit(
        channel, m, boot or Boot(), root=tmp, run_dir=tmp / "run" / "cowpod", engine=engine or FakeEngine()
    )
    return init, m


# ---- pure pieces ------------------------------------------------------------------


def test_split_lines_keeps_a_partial_line_and_skips_junk() -> None:
    msgs, rest = split_lines(b'{"a": 1}\nnot json\n[1]\n\n{"b": 2}\n{"c"')
    assert msgs == [{"a": 1}, {"b": 2}]
    assert rest == b'{"c"'


def test_a_line_glued_to_what_a_departed_host_left_is_still_read() -> None:
    msgs, _ = split_lines(b'{"bootstrap": "QUJD{"bootstrap": "REVG", "now": 2.0}\n')
    assert msgs == [{"bootstrap": "REVG", "now": 2.0}]


def test_channel_keeps_data_that_arrives_with_the_no_host_eof(pair: tuple[Channel, Host]) -> None:
    # The host's first line can overtake the port's "host connected" notice: the
    # read that returns it is followed by an EOF; the line must not be dropped.
    ch, host = pair
    host.sock.sendall(b'{"bootstrap": "x", "now": 1.0}\n')
    host.sock.shutdown(socket.SHUT_WR)
    assert ch.wait(1.0) == [{"bootstrap": "x", "now": 1.0}]


def test_cgroup_hierarchies_group_like_docker_expects() -> None:
    proc_cgroups = (
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\n"
        "cpuset\t0\t1\t1\ncpu\t0\t1\t1\ncpuacct\t0\t1\t1\nblkio\t0\t1\t1\nmemory\t0\t1\t1\n"
        "devices\t0\t1\t1\nfreezer\t0\t1\t1\nnet_cls\t0\t1\t1\nperf_event\t0\t1\t1\n"
        "net_prio\t0\t1\t1\nhugetlb\t0\t1\t1\npids\t0\t1\t1\nrdma\t0\t1\t0\nmisc\t0\t1\t1\n"
    )
    assert cgroup_v1_hierarchies(proc_cgroups) == [
        "cpuset",
        "cpu,cpuacct",
        "blkio",
        "memory",
        "devices",
        "freezer",
        "net_cls,net_prio",
        "perf_event",
        "hugetlb",
        "pids",
        "misc",
    ]


def test_find_port_by_name_in_sysfs(tmp_path: pathlib.Path) -> None:
    assert find_port(sys_root=str(tmp_path)) is None
    for dev, name in (("vport1p1", "org.qemu.guest_agent.0"), ("vport1p2", "org.cowpod.guest")):
        (tmp_path / "class/virtio-ports" / dev).mkdir(parents=True)
        (tmp_path / "class/virtio-ports" / dev / "name").write_text(name + "\n")
    assert find_port(sys_root=str(tmp_path), dev_root="/dev") == "/dev/vport1p2"


# ---- the channel ------------------------------------------------------------------


def test_channel_sends_lines_and_reads_them_in_pieces(pair: tuple[Channel, Host]) -> None:
    ch, host = pair
    assert ch.send({"event": "warm"})
    assert host.next() == {"event": "warm"}
    host.sock.sendall(b'{"bootstrap": "x"')
    assert ch.wait(0.1) == []
    host.sock.sendall(b', "now": 1.5}\n')
    assert ch.wait(1.0) == [{"bootstrap": "x", "now": 1.5}]


def test_channel_waits_out_a_missing_host(pair: tuple[Channel, Host]) -> None:
    ch, host = pair
    host.file.close()
    host.sock.close()
    # EOF polls readable at once: wait must still take its time, not spin or fail.
    assert ch.wait(0.2) == []
    assert not ch.send({"event": "warm"})


# ---- the bootstrap ----------------------------------------------------------------


def test_bootstrap_makes_the_node_and_starts_its_agent(
    pair: tuple[Channel, Host], tmp_path: pathlib.Path
) -> None:
    ch, host = pair
    init, machine = make_init(ch, tmp_path)
    b = bootstrap(secure=True)
    init.handle({"bootstrap": b.to_b64(), "now": 1_800_000_000.5}, now=10.0)
    assert host.next() == {"event": "started", "node": "vm-1", "machine_id": "cd" * 16}
    assert machine.clock == [1_800_000_000.5]
    assert machine.entropy == [b"\x01" * 32]
    assert machine.hostnames == ["vm-1.cowpod"]
    assert (tmp_path / "etc/machine-id").read_text() == "cd" * 16 + "\n"
    assert (tmp_path / "run/cowpod/bootstrap-token").read_text() == "tok"
    assert init.spawned == [GuestBootstrap.from_b64(b.to_b64()).agent_argv(str(tmp_path / "run" / "cowpod"))]
    assert "--tls-server-name" in init.spawned[0]


def test_the_same_bootstrap_again_is_started_again(
    pair: tuple[Channel, Host], tmp_path: pathlib.Path
) -> None:
    ch, host = pair
    engine = FakeEngine()
    init, _ = make_init(ch, tmp_path, engine=engine)
    init.handle({"bootstrap": bootstrap().to_b64()}, now=1.0)
    assert host.next()["event"] == "started"
    engine.objects["c-pod"] = {"cowpod.node": "vm-1"}
    init.handle({"bootstrap": bootstrap().to_b64()}, now=2.0)
    assert host.next() == {"event": "started", "node": "vm-1", "machine_id": "cd" * 16}
    assert len(init.spawned) == 1 and not engine.removed
    os.kill(init.pids[0], 0)  # the agent runs on


def node_with_leftovers(
    ch: Channel, host: Host, tmp: pathlib.Path, engine: FakeEngine
) -> tuple[RecordingInit, FakeMachine]:
    """A guest that became node vm-1 (secure) and ran a pod: what its clone resumes as."""
    init, machine = make_init(ch, tmp, engine=engine)
    init.handle({"bootstrap": bootstrap(secure=True).to_b64(), "now": 1_800_000_000.0}, now=1.0)
    assert host.next()["event"] == "started"
    state = tmp / "var/lib/cowpod"
    for f in ("agent/pods/uid-1.json", "pki/vm-1.key", "pki/serving/vm-1.crt", "images/busybox.tar"):
        (state / f).parent.mkdir(parents=True, exist_ok=True)
        (state / f).write_text("x")
    engine.objects.update(
        {
            "c-sandbox": {"cowpod.managed": "1", "cowpod.node": "vm-1"},
            "c-app": {"cowpod.managed": "1", "cowpod.node": "vm-1"},
            "c-probe": {"cowpod.node": "vm-1", "cowpod.hostpath-probe": "1"},
            "v-scratch": {"cowpod.managed": "1", "cowpod.node": "vm-1"},
            "c-not-the-agents": {},
        }
    )
    return init, machine


def test_a_clone_of_a_node_forgets_the_parent_and_becomes_a_new_node(
    pair: tuple[Channel, Host], tmp_path: pathlib.Path
) -> None:
    ch, host = pair
    engine = FakeEngine()
    init, machine = node_with_leftovers(ch, host, tmp_path, engine)
    parent_agent = init.pids[0]
    child = dataclasses.replace(
        bootstrap("vm-2"), machine_id="ef" * 16, entropy=base64.b64encode(b"\x02" * 32).decode()
    )

    init.handle({"bootstrap": child.to_b64(), "now": 1_800_000_100.0}, now=2.0)

    assert host.next() == {"event": "started", "node": "vm-2", "machine_id": "ef" * 16, "previous": "vm-1"}
    # The parent's agent is gone (killed and reaped), a new one runs as vm-2.
    with pytest.raises(ProcessLookupError):
        os.kill(parent_agent, 0)
    assert init.agent_pid == init.pids[1]
    assert init.spawned[1] == GuestBootstrap.from_b64(child.to_b64()).agent_argv(
        str(tmp_path / "run" / "cowpod")
    )
    # Every object the agent made goes, containers before volumes; nothing else.
    assert sorted(engine.removed[:3]) == ["c-app", "c-probe", "c-sandbox"]
    assert engine.removed[3:] == ["v-scratch"]
    assert list(engine.objects) == ["c-not-the-agents"]
    # Per-node files gone; what every clone shares (the baked images) kept.
    state = tmp_path / "var/lib/cowpod"
    assert sorted(p.name for p in state.iterdir()) == ["images", "vm-name"]
    assert (state / "vm-name").read_text() == "vm-2\n"
    assert (tmp_path / "etc/machine-id").read_text() == "ef" * 16 + "\n"
    # An insecure bootstrap after a secure one: the parent's join bundle is not kept.
    assert not (tmp_path / "run/cowpod").exists() or not any((tmp_path / "run/cowpod").iterdir())
    assert machine.hostnames == ["vm-1.cowpod", "vm-2.cowpod"]
    assert machine.clock == [1_800_000_000.0, 1_800_000_100.0]
    assert machine.entropy == [b"\x01" * 32, b"\x02" * 32]

    # The child's own bootstrap again (a reconnecting host): the same answer, nothing redone.
    init.handle({"bootstrap": child.to_b64()}, now=3.0)
    assert host.next()["node"] == "vm-2"
    assert len(init.spawned) == 2 and len(engine.removed) == 4


def test_a_clone_whose_dockerd_does_not_answer_says_so_and_a_retry_finishes(
    pair: tuple[Channel, Host], tmp_path: pathlib.Path
) -> None:
    ch, host = pair
    engine = FakeEngine()
    init, _ = node_with_leftovers(ch, host, tmp_path, engine)
    engine.fail = "connection refused"
    init.handle({"bootstrap": bootstrap("vm-2").to_b64()}, now=2.0)
    reply = host.next()
    assert reply["event"] == "error"
    assert "vm-1" in reply["message"] and "connection refused" in reply["message"]
    # Not the parent any more, not yet the child: no agent runs.
    assert init.agent_pid is None and init.bootstrap is None
    engine.fail = ""
    init.handle({"bootstrap": bootstrap("vm-2").to_b64()}, now=3.0)
    assert host.next()["previous"] == "vm-1"
    assert list(engine.objects) == ["c-not-the-agents"]
    assert not (tmp_path / "var/lib/cowpod/pki").exists()


def test_what_the_guest_removes_is_named_as_the_agent_names_it() -> None:
    # The init does not import the agent or cowpod; its copies of their names must agree.
    from agent import labels
    from cowpod.auth.flags import DEFAULT_CERT_DIR
    from hypervisor.providers.qemu.guestinit import NODE_LABEL, PER_NODE_STATE
    from hypervisor.vminit import STATE_DIR

    assert labels.NODE == NODE_LABEL
    cert_dir = pathlib.Path(DEFAULT_CERT_DIR)
    assert cert_dir.parent == STATE_DIR and cert_dir.name in PER_NODE_STATE


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"{}").decode(), ""])
def test_a_bad_bootstrap_is_an_error_and_the_guest_keeps_waiting(
    pair: tuple[Channel, Host], tmp_path: pathlib.Path, value: str
) -> None:
    ch, host = pair
    init, _ = make_init(ch, tmp_path)
    init.handle({"bootstrap": value}, now=1.0)
    assert host.next()["event"] == "error"
    assert init.bootstrap is None and not init.spawned
    init.handle({"bootstrap": bootstrap().to_b64()}, now=2.0)
    assert host.next()["event"] == "started"


def test_a_failed_boot_answers_every_bootstrap_with_its_reason(
    pair: tuple[Channel, Host], tmp_path: pathlib.Path
) -> None:
    ch, host = pair
    init, _ = make_init(ch, tmp_path, Boot(error="dockerd did not answer in 180s"))
    init.handle({"bootstrap": bootstrap().to_b64()}, now=1.0)
    assert host.next() == {"event": "error", "message": "dockerd did not answer in 180s"}


def test_loop_says_warm_until_the_host_speaks_then_stops_on_poweroff(
    pair: tuple[Channel, Host], tmp_path: pathlib.Path
) -> None:
    ch, host = pair
    init, _ = make_init(ch, tmp_path)
    t = threading.Thread(target=init.loop, daemon=True)
    t.start()
    assert host.next() == {"event": "warm"}
    assert host.next() == {"event": "warm"}  # again a second later: the host may connect late
    host.send({"bootstrap": bootstrap().to_b64(), "now": 1.0})
    assert host.next()["event"] == "started"
    host.send({"poweroff": True})
    t.join(5)
    assert not t.is_alive()
    # No warm after the host spoke.
    host.sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        host.file.readline()


# ---- the warm fork ----------------------------------------------------------------


def test_the_agent_is_forked_from_the_warm_process(
    pair: tuple[Channel, Host], tmp_path: pathlib.Path
) -> None:
    ch, _ = pair
    out = tmp_path / "agent-argv"

    def entry(argv: list[str]) -> object:
        out.write_text(json.dumps(argv))
        sys.exit(3)

    init = GuestInit(ch, FakeMachine(), Boot(agent_entry=entry), root=tmp_path)
    pid = init.spawn(["cowpod-agent", "--node-name", "vm-1"])
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3
    assert json.loads(out.read_text()) == ["--node-name", "vm-1"]


def test_another_agent_command_is_executed_cold(pair: tuple[Channel, Host], tmp_path: pathlib.Path) -> None:
    ch, _ = pair

    def entry(argv: list[str]) -> object:
        raise AssertionError("not the agent: must not run in-process")

    init = GuestInit(ch, FakeMachine(), Boot(agent_entry=entry), root=tmp_path)
    pid = init.spawn(["sh", "-c", "exit 5"])
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 5


def test_the_init_imports_nothing_heavy() -> None:
    # PID 1 starts before anything is warm, and the guest's venv has no numpy:
    # the agent's packages are imported on purpose (preload_agent), never by accident.
    code = "import sys, hypervisor.providers.qemu.guestinit; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # The node-label names come from the shared vocabulary, whose `labels` module is
    # standard library only (its package `__init__`s import nothing).
    light = {"cowpod", "cowpod.api", "cowpod.api.labels"}
    loaded = {m.split(".")[0] for m in out.split() if m not in light}
    heavy = {"agent", "controller", "scheduler", "cowpod", "grpc", "google", "docker", "yaml", "numpy"}
    assert not loaded & heavy


# ---- the engine's API ------------------------------------------------------------


class _FakeDockerd(http.server.BaseHTTPRequestHandler):
    """Answers the few calls DockerEngine makes; records them."""

    calls: ClassVar[list[tuple[str, str]]] = []

    def _answer(self, status: int, body: Any = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        self.calls.append(("GET", url.path + " " + json.dumps(json.loads(query["filters"][0]))))
        if url.path == "/containers/json":
            self._answer(200, [{"Id": "abc"}, {"Id": "def"}])
        else:
            self._answer(200, {"Volumes": [{"Name": "vol-1"}], "Warnings": None})

    def do_DELETE(self) -> None:
        self.calls.append(("DELETE", self.path))
        self._answer(404 if "def" in self.path else 204)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_docker_engine_lists_by_label_and_force_removes(tmp_path: pathlib.Path) -> None:
    sock = str(tmp_path / "docker.sock")
    server = socketserver.ThreadingUnixStreamServer(sock, _FakeDockerd)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        engine = DockerEngine(sock, timeout=5)
        assert engine.containers(NODE_LABEL) == ["abc", "def"]
        engine.remove_container("abc")
        engine.remove_container("def")  # gone meanwhile: not an error
        assert engine.volumes(NODE_LABEL) == ["vol-1"]
        engine.remove_volume("vol-1")
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)
    assert _FakeDockerd.calls == [
        ("GET", '/containers/json {"label": ["cowpod.node"]}'),
        ("DELETE", "/containers/abc?force=1&v=1"),
        ("DELETE", "/containers/def?force=1&v=1"),
        ("GET", '/volumes {"label": ["cowpod.node"]}'),
        ("DELETE", "/volumes/vol-1?force=1"),
    ]


def test_docker_engine_without_dockerd_raises_what_forget_node_reports(tmp_path: pathlib.Path) -> None:
    # No dockerd at all: the caller (forget_node) turns this into the host's error reply.
    with pytest.raises(OSError):
        DockerEngine(str(tmp_path / "none.sock"), timeout=1).containers(NODE_LABEL)
