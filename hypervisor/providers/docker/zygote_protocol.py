"""The zygote's wire format: length-prefixed JSON over a unix socket.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8
JSON (one object). One request and one response per connection, so a client
that dies mid-request costs the zygote nothing but a closed socket.

Requests (`op` decides the shape):

    {"op": "fork", "target": {"pid": 1234} | {"container": "<id or name>"},
     "argv": [...], "env": {...}, "entrypoint": "module:function" | null,
     "log_path": "/var/log/cowpod/clone.log" | null, "cwd": "/",
     "namespaces": ["ipc", "uts", ...] | null, "sys_path": [...] | null,
     "name": "cowpod-agent" | null, "match_capabilities": true}
    {"op": "ping"}
    {"op": "status", "pid": 1234}

Responses:

    {"ok": true, "pid": <host pid>, "ns_pid": <pid inside the container>, "target_pid": <init pid>}
    {"ok": true, "zygote_pid": ..., "rss_kb": ..., "children": [...], "preloaded": [...]}   (ping)
    {"ok": true, "pid": ..., "state": "running" | "exited" | "signaled" | "unknown", "code": int|null}
    {"ok": false, "kind": "invalid" | "not_found" | "failed", "error": "target.pid: no such process"}

Pure: no sockets here, so encoding and validation are unit-tested directly.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from hypervisor.providers.docker.nsenter import DEFAULT_NAMESPACES, NAMESPACE_TYPES

MAX_FRAME = 1 << 20
_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size

ErrorKind = Literal["invalid", "not_found", "failed"]


class ProtocolError(ValueError):
    """A frame or request that cannot be understood. The message names the field."""


def encode_frame(obj: Mapping[str, Any]) -> bytes:
    body = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame: {len(body)} bytes is over the {MAX_FRAME} byte limit")
    return _HEADER.pack(len(body)) + body


def decode_length(header: bytes) -> int:
    if len(header) != HEADER_SIZE:
        raise ProtocolError(f"frame: header must be {HEADER_SIZE} bytes, got {len(header)}")
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError(f"frame: length {length} is over the {MAX_FRAME} byte limit")
    return int(length)


def decode_body(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"frame: not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"frame: must be a JSON object, got {type(obj).__name__}")
    return obj


def decode_frames(data: bytes) -> tuple[list[dict[str, Any]], bytes]:
    """Split a byte buffer into complete frames and the incomplete rest."""
    out: list[dict[str, Any]] = []
    while len(data) >= HEADER_SIZE:
        length = decode_length(data[:HEADER_SIZE])
        if len(data) < HEADER_SIZE + length:
            break
        out.append(decode_body(data[HEADER_SIZE : HEADER_SIZE + length]))
        data = data[HEADER_SIZE + length :]
    return out, data


@dataclass(frozen=True)
class Target:
    """Which container to fork into: its init's host pid, or a Docker id/name."""

    pid: int | None = None
    container: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"pid": self.pid} if self.pid is not None else {"container": self.container}

    @staticmethod
    def of(ref: int | str) -> Target:
        """`1234` (or "pid:1234") is a pid; anything else is a container id or name."""
        if isinstance(ref, bool):
            raise ProtocolError("target: must be a pid or a container id, got a bool")
        if isinstance(ref, int):
            return Target(pid=ref)
        if ref.startswith("pid:") and ref[4:].isdigit():
            return Target(pid=int(ref[4:]))
        if not ref:
            raise ProtocolError("target: empty container id")
        return Target(container=ref)


@dataclass(frozen=True)
class ForkRequest:
    target: Target
    argv: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    entrypoint: str | None = None
    log_path: str | None = None
    cwd: str = "/"
    namespaces: tuple[str, ...] = DEFAULT_NAMESPACES
    sys_path: tuple[str, ...] | None = None
    name: str | None = None
    match_capabilities: bool = True

    def to_wire(self) -> dict[str, Any]:
        return {
            "op": "fork",
            "target": self.target.to_wire(),
            "argv": list(self.argv),
            "env": dict(self.env),
            "entrypoint": self.entrypoint,
            "log_path": self.log_path,
            "cwd": self.cwd,
            "namespaces": list(self.namespaces),
            "sys_path": None if self.sys_path is None else list(self.sys_path),
            "name": self.name,
            "match_capabilities": self.match_capabilities,
        }


def _str_list(obj: Any, path: str) -> tuple[str, ...]:
    if not isinstance(obj, list):
        raise ProtocolError(f"{path}: must be a list of strings")
    for i, item in enumerate(obj):
        if not isinstance(item, str):
            raise ProtocolError(f"{path}[{i}]: must be a string, got {type(item).__name__}")
    return tuple(obj)


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{key}: must be a non-empty string")
    return value


def _check_entrypoint(spec: str, path: str) -> None:
    module, sep, func = spec.partition(":")
    if not sep or not module or not func:
        raise ProtocolError(f"{path}: must be 'module:function', got {spec!r}")


def parse_target(obj: Any) -> Target:
    if not isinstance(obj, dict):
        raise ProtocolError("target: required, an object with 'pid' or 'container'")
    pid, container = obj.get("pid"), obj.get("container")
    if (pid is None) == (container is None):
        raise ProtocolError("target: exactly one of 'pid' and 'container' is required")
    if pid is not None:
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise ProtocolError(f"target.pid: must be a positive integer, got {pid!r}")
        return Target(pid=pid)
    if not isinstance(container, str) or not container:
        raise ProtocolError("target.container: must be a non-empty string")
    return Target(container=container)


def parse_fork_request(obj: Mapping[str, Any]) -> ForkRequest:
    target = parse_target(obj.get("target"))
    argv = _str_list(obj.get("argv", []), "argv")
    env_obj = obj.get("env", {})
    if not isinstance(env_obj, dict):
        raise ProtocolError("env: must be an object of strings")
    for k, v in env_obj.items():
        if not isinstance(v, str):
            raise ProtocolError(f"env.{k}: must be a string")
        if not k or "=" in k or "\0" in k:
            raise ProtocolError(f"env.{k}: not a valid variable name")
    entrypoint = _opt_str(obj, "entrypoint")
    if entrypoint is not None:
        _check_entrypoint(entrypoint, "entrypoint")
    log_path = _opt_str(obj, "log_path")
    if log_path is not None and not log_path.startswith("/"):
        raise ProtocolError(f"log_path: must be absolute inside the container, got {log_path!r}")
    cwd = _opt_str(obj, "cwd") or "/"
    if not cwd.startswith("/"):
        raise ProtocolError(f"cwd: must be absolute, got {cwd!r}")
    ns_obj = obj.get("namespaces")
    namespaces = DEFAULT_NAMESPACES if ns_obj is None else _str_list(ns_obj, "namespaces")
    for i, ns in enumerate(namespaces):
        if ns not in NAMESPACE_TYPES:
            raise ProtocolError(
                f"namespaces[{i}]: unknown namespace {ns!r}; known: {sorted(NAMESPACE_TYPES)}"
            )
    if "mnt" not in namespaces:
        raise ProtocolError("namespaces: 'mnt' is required (the clone must see the container's disk)")
    sp = obj.get("sys_path")
    sys_path = None if sp is None else _str_list(sp, "sys_path")
    name = _opt_str(obj, "name")
    match_caps = obj.get("match_capabilities", True)
    if not isinstance(match_caps, bool):
        raise ProtocolError("match_capabilities: must be a boolean")
    return ForkRequest(
        target=target,
        argv=argv,
        env=dict(env_obj),
        entrypoint=entrypoint,
        log_path=log_path,
        cwd=cwd,
        namespaces=namespaces,
        sys_path=sys_path,
        name=name,
        match_capabilities=match_caps,
    )


def error_response(kind: ErrorKind, message: str) -> dict[str, Any]:
    return {"ok": False, "kind": kind, "error": message}


@dataclass(frozen=True)
class ForkResult:
    """A clone: `pid` in the host's pid namespace (what the zygote reaps, what
    /proc/<pid> on the host shows), `ns_pid` as the container sees it, and the
    container init it was forked into."""

    pid: int
    ns_pid: int
    target_pid: int


@dataclass(frozen=True)
class ChildStatus:
    pid: int
    state: Literal["running", "exited", "signaled", "unknown"]
    code: int | None = None


def parse_fork_result(obj: Mapping[str, Any]) -> ForkResult:
    try:
        return ForkResult(pid=int(obj["pid"]), ns_pid=int(obj["ns_pid"]), target_pid=int(obj["target_pid"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ProtocolError(f"fork response: bad or missing field ({e})") from None


def parse_child_status(obj: Mapping[str, Any]) -> ChildStatus:
    state = obj.get("state")
    if state not in ("running", "exited", "signaled", "unknown"):
        raise ProtocolError(f"status response: state: unknown value {state!r}")
    code = obj.get("code")
    return ChildStatus(pid=int(obj["pid"]), state=state, code=None if code is None else int(code))


def argv_summary(argv: Sequence[str], limit: int = 6) -> str:
    shown = " ".join(argv[:limit])
    return shown + (" ..." if len(argv) > limit else "")
