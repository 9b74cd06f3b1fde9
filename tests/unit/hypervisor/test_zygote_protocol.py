"""The zygote's wire format, request validation, and the server's answers to bad requests."""

from __future__ import annotations

import asyncio
import pathlib
import struct
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from cowpod.errors import FailedPrecondition, Invalid, NotFound, Unavailable
from hypervisor.providers.docker.zygote import Zygote, ZygoteConfig, ZygoteStartError
from hypervisor.providers.docker.zygote_client import ZygoteClient, config_to_argv
from hypervisor.providers.docker.zygote_protocol import (
    MAX_FRAME,
    ForkRequest,
    ProtocolError,
    Target,
    decode_frames,
    encode_frame,
    parse_fork_request,
)
from hypervisor.providers.docker.zygote_target import TargetNotFound

# ------------------------------------------------------------------ framing


def test_frame_round_trip_and_partial_buffers() -> None:
    a = encode_frame({"op": "ping"})
    b = encode_frame({"op": "status", "pid": 7})
    assert a[:4] == struct.pack(">I", len(a) - 4)
    frames, rest = decode_frames(a + b[:5])
    assert frames == [{"op": "ping"}] and rest == b[:5]
    frames, rest = decode_frames(rest + b[5:])
    assert frames == [{"op": "status", "pid": 7}] and rest == b""


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (struct.pack(">I", MAX_FRAME + 1), "over the"),
        (struct.pack(">I", 3) + b"[1]", "must be a JSON object"),
        (struct.pack(">I", 3) + b"{x}", "not JSON"),
    ],
)
def test_bad_frames_are_protocol_errors(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_frames(data)


# ------------------------------------------------------------------ requests


def test_fork_request_round_trips_through_the_wire() -> None:
    req = ForkRequest(
        target=Target(container="vm-1"),
        argv=("--node-name", "vm-1"),
        env={"A": "1"},
        entrypoint="agent.main:run",
        log_path="/var/log/x.log",
        sys_path=("/opt/cowpod/venv/lib/python3.11/site-packages",),
        name="cowpod-agent",
    )
    frames, _ = decode_frames(encode_frame(req.to_wire()))
    assert parse_fork_request(frames[0]) == req


def test_defaults_fill_in() -> None:
    req = parse_fork_request({"op": "fork", "target": {"pid": 12}})
    assert req.target == Target(pid=12)
    assert req.argv == () and req.cwd == "/" and req.entrypoint is None
    assert req.namespaces == ("ipc", "uts", "net", "cgroup", "pid", "mnt")
    assert req.match_capabilities is True


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"target": None}, "target: required"),
        ({"target": {}}, "target: exactly one of 'pid' and 'container'"),
        ({"target": {"pid": 1, "container": "x"}}, "exactly one"),
        ({"target": {"pid": -3}}, "target.pid: must be a positive integer"),
        ({"target": {"pid": True}}, "target.pid: must be a positive integer"),
        ({"target": {"container": ""}}, "target.container: must be a non-empty string"),
        ({"argv": "x"}, "argv: must be a list of strings"),
        ({"argv": ["a", 3]}, r"argv\[1\]: must be a string"),
        ({"env": {"A": 1}}, "env.A: must be a string"),
        ({"env": {"A=B": "1"}}, "env.A=B: not a valid variable name"),
        ({"entrypoint": "nocolon"}, "entrypoint: must be 'module:function'"),
        ({"log_path": "rel/x.log"}, "log_path: must be absolute"),
        ({"cwd": "tmp"}, "cwd: must be absolute"),
        ({"namespaces": ["net", "bogus"]}, r"namespaces\[1\]: unknown namespace 'bogus'"),
        ({"namespaces": ["net"]}, "namespaces: 'mnt' is required"),
        ({"match_capabilities": "yes"}, "match_capabilities: must be a boolean"),
    ],
)
def test_bad_fork_requests_name_the_field(patch: dict[str, Any], message: str) -> None:
    obj: dict[str, Any] = {"op": "fork", "target": {"pid": 10}, **patch}
    with pytest.raises(ProtocolError, match=message):
        parse_fork_request(obj)


def test_target_of() -> None:
    assert Target.of(42) == Target(pid=42)
    assert Target.of("pid:42") == Target(pid=42)
    assert Target.of("vm-parent") == Target(container="vm-parent")
    with pytest.raises(ProtocolError, match="empty container id"):
        Target.of("")


# ------------------------------------------------------------------ server answers (no fork)


class FakeResolver:
    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def init_pid(self, container: str) -> int:
        if container not in self.pids:
            raise TargetNotFound(f"target.container: no such container {container!r}")
        return self.pids[container]


def started_zygote(tmp_path: pathlib.Path, resolver: FakeResolver) -> Zygote:
    # Preloading a tiny module keeps this fast; no socket is bound and nothing forks.
    z = Zygote(
        ZygoteConfig(socket_path=str(tmp_path / "z.sock"), preload=("json",), entrypoint="json:dumps"),
        resolver=resolver,
    )
    z._preload()
    return z


def test_server_answers_bad_requests_with_errors(tmp_path: pathlib.Path) -> None:
    z = started_zygote(tmp_path, FakeResolver({}))
    assert z.handle({"op": "reboot"}) == {
        "ok": False, "kind": "invalid", "error": "op: unknown operation 'reboot'; known: fork, ping, status",
    }
    assert z.handle({"op": "fork", "target": {"container": "ghost"}}) == {
        "ok": False, "kind": "not_found", "error": "target.container: no such container 'ghost'",
    }
    missing = z.handle({"op": "fork", "target": {"pid": 2**22 + 17}})
    assert missing["kind"] == "not_found" and "no such process" in missing["error"]
    bad_entry = z.handle({"op": "fork", "target": {"pid": 1}, "entrypoint": "no_such_module_x:run"})
    assert bad_entry["kind"] == "invalid"
    assert "entrypoint: cannot load 'no_such_module_x:run'" in bad_entry["error"]
    assert z.handle({"op": "status", "pid": "x"})["error"] == "pid: must be a positive integer, got 'x'"
    assert z.handle({"op": "status", "pid": 99})["state"] == "unknown"
    ping = z.handle({"op": "ping"})
    assert ping["ok"] and ping["preloaded"] == ["json"] and ping["children"] == []


def test_preload_failure_and_threads_refuse_to_start(tmp_path: pathlib.Path) -> None:
    z = Zygote(ZygoteConfig(socket_path=str(tmp_path / "z.sock"), preload=("no_such_module_y",)))
    with pytest.raises(ZygoteStartError, match="preload: cannot import 'no_such_module_y'"):
        z._preload()
    z = Zygote(ZygoteConfig(socket_path=str(tmp_path / "z.sock"), preload=(), entrypoint="json:nothing"))
    with pytest.raises(ZygoteStartError, match="entrypoint: cannot load 'json:nothing'"):
        z._preload()
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        with pytest.raises(ZygoteStartError, match="threads after preloading"):
            started_zygote(tmp_path, FakeResolver({}))._check_single_threaded()
    finally:
        stop.set()
        t.join()


def test_config_to_argv_carries_every_setting(tmp_path: pathlib.Path) -> None:
    from hypervisor.providers.docker.zygote import config_from_argv

    cfg = ZygoteConfig(
        socket_path=str(tmp_path / "z.sock"), preload=("json", "yaml"), entrypoint="m:f",
        warmup="m:w", charge_to="vm-parent", log_path="/var/log/c.log", handshake_timeout=3.0,
    )
    assert config_from_argv(config_to_argv(cfg)) == cfg


# ------------------------------------------------------------------ client error mapping


@pytest.fixture
async def canned_server(tmp_path: pathlib.Path) -> AsyncIterator[Callable[[dict[str, Any]], str]]:
    """A unix socket server answering every request with the response set by the test."""
    path = str(tmp_path / "canned.sock")
    answer: dict[str, Any] = {}
    seen: list[dict[str, Any]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.readexactly(4)
        body = await reader.readexactly(struct.unpack(">I", header)[0])
        frames, _ = decode_frames(header + body)
        seen.extend(frames)
        writer.write(encode_frame(answer))
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(serve, path)

    def set_answer(obj: dict[str, Any]) -> str:
        answer.clear()
        answer.update(obj)
        return path

    set_answer.seen = seen  # type: ignore[attr-defined]
    async with server:
        yield set_answer


async def test_client_sends_fork_and_parses_result(canned_server: Callable[[dict[str, Any]], str]) -> None:
    path = canned_server({"ok": True, "pid": 5000, "ns_pid": 7, "target_pid": 4000})
    client = ZygoteClient(path)
    result = await client.fork_into("vm-2", ["--node-name", "vm-2"], {"X": "1"}, name="cowpod-agent")
    assert (result.pid, result.ns_pid, result.target_pid) == (5000, 7, 4000)
    sent = canned_server.seen[-1]  # type: ignore[attr-defined]
    assert sent["target"] == {"container": "vm-2"} and sent["argv"] == ["--node-name", "vm-2"]
    assert sent["env"] == {"X": "1"} and sent["name"] == "cowpod-agent"


@pytest.mark.parametrize(
    ("kind", "exc"), [("invalid", Invalid), ("not_found", NotFound), ("failed", FailedPrecondition)]
)
async def test_client_maps_error_kinds(
    canned_server: Callable[[dict[str, Any]], str], kind: str, exc: type[Exception]
) -> None:
    path = canned_server({"ok": False, "kind": kind, "error": "target.pid: no such process"})
    with pytest.raises(exc, match=r"target\.pid: no such process"):
        await ZygoteClient(path).fork_into(123)


async def test_client_without_a_zygote_is_unavailable(tmp_path: pathlib.Path) -> None:
    with pytest.raises(Unavailable, match="zygote at"):
        await ZygoteClient(str(tmp_path / "nobody.sock")).ping()
