"""The zygote: a warm, single-threaded process that forks clones into running containers.

This is the memory half of cowpod's instant clone (the disk half is the docker
provider's `docker commit` of the parent). Like Android's zygote and like
VMware Fargo's parent VM, one process does the slow part once — importing
grpc, protobuf stubs, the Docker SDK, YAML, the agent's modules, any warm state
(`warmup`) — and then every clone is a `fork()`: the child starts with all of
that already in memory, shared copy-on-write with the zygote, and only pays for
the pages it writes.

    provider ── ZygoteClient.fork_into(container, argv) ──unix socket──► Zygote
                                                                           │ fork
                                                     (hypervisor/providers/docker/zygote_child.py)
                                                     child: cgroups + setns + chroot, fork
                                                     grandchild in the container: entrypoint(argv)

Rules the zygote keeps so that fork is safe:

- single-threaded at every fork (checked at start: a preloaded module that
  starts a thread makes the zygote refuse to serve), no gRPC channel, no event
  loop, no pooled connections; the entrypoint starts all of those itself;
- one request at a time; every request is answered, a failed one with an
  error message, and the zygote keeps serving;
- it is a child subreaper, so clones re-parent to it and it records how each
  one ended (`status` request);
- `gc.freeze()` after preloading, so the collector in a clone never writes to
  the zygote's objects' headers (which would copy those pages).

Which parent it represents (see docs/instant-clone.md): one zygote per warm
parent VM; with `charge_to` it moves itself into that parent VM container's
cgroups before preloading — every hierarchy but the v1 freezer, so a paused
parent does not freeze its zygote and a quiesced parent can still be forked —
so the shared memory is charged to the parent —
as Fargo's shared pages belong to the parent VM — while it stays in the host's
pid and mount namespaces (it needs the host's /proc and cgroupfs to enter
other containers). When the parent's init exits, the zygote leaves the
parent's cgroups (so Docker can remove them) and exits: a parent that is gone
can no longer be forked.

Run it as `python -m hypervisor.providers.docker.zygote --socket PATH ...` (ZygoteProcess in
hypervisor/providers/docker/zygote_client.py does that), never by forking an asyncio process.
"""

from __future__ import annotations

import argparse
import errno
import gc
import importlib
import json
import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypervisor.providers.docker import nsenter
from hypervisor.providers.docker.zygote_child import (
    ChildPlan,
    Entrypoint,
    read_environ,
    resolve_entrypoint,
    run_child,
)
from hypervisor.providers.docker.zygote_protocol import (
    HEADER_SIZE,
    ForkRequest,
    ProtocolError,
    argv_summary,
    decode_body,
    decode_length,
    encode_frame,
    error_response,
    parse_fork_request,
)
from hypervisor.providers.docker.zygote_target import DockerSocketResolver, TargetNotFound, TargetResolver

log = logging.getLogger("cowpod.zygote")

# What `cowpod-agent` needs before it can do anything: the gRPC runtime and the
# generated stubs, the Docker SDK, YAML, the client. The entrypoint's own module
# (agent.main by default) is imported on top, with everything it imports.
DEFAULT_PRELOAD: tuple[str, ...] = (
    "asyncio",
    "concurrent.futures",
    "json",
    "logging.handlers",
    "ssl",
    "uuid",
    "grpc",
    "grpc.aio",
    "grpc_health.v1.health_pb2",
    "google.protobuf.json_format",
    "cowpod.v1.agent_pb2_grpc",
    "cowpod.v1.node_pb2_grpc",
    "cowpod.v1.pod_pb2_grpc",
    "cowpod.v1.lease_pb2_grpc",
    "cowpod.v1.event_pb2_grpc",
    "cowpod.client",
    "docker",
    "yaml",
)
DEFAULT_ENTRYPOINT = "agent.main:run"
# Run once before serving: the secure bootstrap's lazily imported crypto backend
# must be in memory, a clone cannot import it from inside its VM (agent/warmup.py).
DEFAULT_WARMUP = "agent.warmup:run"
DEFAULT_LOG_PATH = "/var/log/cowpod/clone.log"
READY_LINE = "COWPOD-ZYGOTE-READY"
_EXITED_KEPT = 1024


class ZygoteStartError(RuntimeError):
    """The zygote cannot serve: a preload failed, a thread exists, the socket is taken."""


@dataclass(frozen=True)
class ZygoteConfig:
    socket_path: str
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    entrypoint: str = DEFAULT_ENTRYPOINT
    # "module:function" called once, with no arguments, after preloading: parse
    # config, fill caches — state every clone should start with.
    warmup: str | None = None
    # Container id/name (or "pid:N") of the parent VM whose cgroups hold the zygote.
    charge_to: str | None = None
    docker_socket: str = "/var/run/docker.sock"
    # Where a clone's stdout/stderr go, inside its container, unless the request says.
    log_path: str = DEFAULT_LOG_PATH
    # How long a fork may take to report back before the zygote kills it.
    handshake_timeout: float = 15.0
    client_timeout: float = 5.0
    log_level: str = "info"


@dataclass
class _Clone:
    pid: int
    target_pid: int
    argv: tuple[str, ...]
    state: str = "running"
    code: int | None = None


class Zygote:
    """The server. Build it, `start()` (preload, bind), then `serve_forever()`."""

    def __init__(self, config: ZygoteConfig, resolver: TargetResolver | None = None) -> None:
        self.config = config
        self._resolver = resolver or DockerSocketResolver(config.docker_socket)
        self._entry: Entrypoint | None = None
        self._entries: dict[str, Entrypoint] = {}
        self._clones: OrderedDict[int, _Clone] = OrderedDict()
        self._listener: socket.socket | None = None
        self._stopping = False
        self._parent_pid: int | None = None
        self._parent_pidfd: int | None = None
        self._own_cgroups: list[nsenter.CgroupMembership] = []
        self._cap_last_cap = nsenter.read_cap_last_cap()
        self._preloaded: list[str] = []

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        nsenter.set_child_subreaper()
        if self.config.charge_to:
            self._charge_to_parent(self.config.charge_to)
        self._preload()
        self._check_single_threaded()
        self._bind()

    def _charge_to_parent(self, ref: str) -> None:
        pid = self._resolve(ref)
        self._own_cgroups = nsenter.cgroup_paths_of(os.getpid())
        parent = nsenter.cgroup_paths_of(pid)
        # Everything but the freezer: a paused (quiesced) parent must stay forkable.
        nsenter.move_to_cgroups(os.getpid(), nsenter.charge_memberships(parent))
        self._parent_pid = pid
        self._parent_pidfd = os.pidfd_open(pid)
        log.info("zygote charged to parent %s (init pid %d), its freezer excepted", ref, pid)
        if nsenter.freezes_with_parent(parent):
            log.warning("cgroup v2 only: the freezer is in the hierarchy that charges the parent; "
                        "pausing parent %s will freeze this zygote too", ref)

    def _preload(self) -> None:
        for name in self.config.preload:
            try:
                importlib.import_module(name)
            except Exception as e:
                raise ZygoteStartError(f"preload: cannot import {name!r}: {e}") from e
            self._preloaded.append(name)
        try:
            self._entry = resolve_entrypoint(self.config.entrypoint)
        except Exception as e:
            raise ZygoteStartError(f"entrypoint: cannot load {self.config.entrypoint!r}: {e}") from e
        self._entries[self.config.entrypoint] = self._entry
        if self.config.warmup:
            try:
                resolve_entrypoint(self.config.warmup)([])
            except Exception as e:
                raise ZygoteStartError(f"warmup: {self.config.warmup!r} failed: {e}") from e
        # Move everything allocated so far out of the collector's reach: a
        # clone's collections then never touch (and so never copy) these pages.
        gc.collect()
        gc.freeze()

    def _check_single_threaded(self) -> None:
        tasks = os.listdir("/proc/self/task")
        if len(tasks) != 1:
            raise ZygoteStartError(
                f"zygote has {len(tasks)} threads after preloading {list(self.config.preload)}: "
                "fork would copy only the calling thread and leave the others' locks held; "
                "remove the module that starts threads at import from the preload list"
            )

    def _bind(self) -> None:
        path = self.config.socket_path
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # stale socket of a dead zygote
            else:
                raise ZygoteStartError(f"socket {path}: another zygote is serving there")
            finally:
                probe.close()
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # forking into any container is root power: owner only
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(16)
        sock.setblocking(False)
        self._listener = sock

    # ------------------------------------------------------------------ serve

    def stop(self) -> None:
        self._stopping = True

    def serve_forever(self) -> None:
        assert self._listener is not None, "call start() first"
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, "accept")
        sel.register(wake_r, selectors.EVENT_READ, "wake")
        if self._parent_pidfd is not None:
            sel.register(self._parent_pidfd, selectors.EVENT_READ, "parent")
        try:
            while not self._stopping:
                for key, _ in sel.select(timeout=None):
                    if key.data == "wake":
                        self._drain(wake_r)
                    elif key.data == "parent":
                        self._parent_gone()
                    elif key.data == "accept":
                        self._accept()
                self._reap()
        finally:
            signal.set_wakeup_fd(-1)
            sel.close()
            os.close(wake_r)
            os.close(wake_w)
            self.close()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            try:
                os.unlink(self.config.socket_path)
            except FileNotFoundError:
                pass
        if self._parent_pidfd is not None:
            os.close(self._parent_pidfd)
            self._parent_pidfd = None

    @staticmethod
    def _drain(fd: int) -> None:
        try:
            while os.read(fd, 512):
                pass
        except BlockingIOError:
            pass

    def _parent_gone(self) -> None:
        log.warning("parent init pid %s exited: leaving its cgroups and stopping", self._parent_pid)
        if self._own_cgroups:
            try:
                nsenter.move_to_cgroups(os.getpid(), self._own_cgroups)
            except OSError as e:
                log.error("could not leave the parent's cgroups: %s", e)
        self.stop()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return
        with conn:
            conn.setblocking(True)
            conn.settimeout(self.config.client_timeout)
            try:
                request = _recv_frame(conn)
            except (OSError, ProtocolError) as e:
                log.warning("bad request: %s", e)
                _try_send(conn, error_response("invalid", str(e)))
                return
            response = self.handle(request)
            _try_send(conn, response)

    # ------------------------------------------------------------------ requests

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one request. Never raises: a failure is an error response."""
        op = request.get("op")
        try:
            if op == "fork":
                return self._fork(parse_fork_request(request))
            if op == "ping":
                return self._ping()
            if op == "status":
                return self._status(request.get("pid"))
            return error_response("invalid", f"op: unknown operation {op!r}; known: fork, ping, status")
        except ProtocolError as e:
            return error_response("invalid", str(e))
        except TargetNotFound as e:
            return error_response("not_found", str(e))
        except Exception as e:  # the zygote must survive anything a request does
            log.exception("request %s failed", op)
            return error_response("failed", f"{type(e).__name__}: {e}")

    def _resolve(self, ref: str) -> int:
        if ref.startswith("pid:") and ref[4:].isdigit():
            return int(ref[4:])
        return self._resolver.init_pid(ref)

    def _entry_for(self, spec: str | None) -> tuple[str, Entrypoint]:
        if spec is None:
            assert self._entry is not None
            return self.config.entrypoint, self._entry
        if spec not in self._entries:
            try:
                self._entries[spec] = resolve_entrypoint(spec)
            except Exception as e:
                raise ProtocolError(f"entrypoint: cannot load {spec!r}: {e}") from e
        return spec, self._entries[spec]

    def _fork(self, req: ForkRequest) -> dict[str, Any]:
        started = time.monotonic()
        if req.target.pid is not None:
            target_pid = req.target.pid
        else:
            assert req.target.container is not None
            target_pid = self._resolver.init_pid(req.target.container)
        entry_name, entry = self._entry_for(req.entrypoint)
        try:
            handle = nsenter.open_container(target_pid, req.namespaces)
        except OSError as e:
            if e.errno == errno.ESRCH:
                raise TargetNotFound(f"target.pid: {e.strerror}") from None
            raise
        try:
            base_env = read_environ(target_pid)
            caps = nsenter.capabilities_of(target_pid)
            r, w = os.pipe2(os.O_CLOEXEC)
            plan = ChildPlan(
                request=req,
                handle=handle,
                entry=entry,
                entry_name=entry_name,
                base_env=base_env,
                capabilities=caps,
                cap_last_cap=self._cap_last_cap,
                log_path=req.log_path or self.config.log_path,
                report_fd=w,
            )
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            try:
                child = os.fork()
            except OSError:
                os.close(r)
                os.close(w)
                raise
            if child == 0:
                try:
                    os.close(r)
                finally:
                    run_child(plan)
        finally:
            handle.close()
        os.close(w)
        try:
            messages = _read_reports(r, started + self.config.handshake_timeout)
        finally:
            os.close(r)
        if any(m.get("timeout") for m in messages):
            _kill(child)  # stuck before its exit: never block the zygote on it
        _, child_status = _wait_intermediate(child)
        errors = [m["error"] for m in messages if "error" in m]
        host_pid = next((int(m["pid"]) for m in messages if "pid" in m), None)
        ns_pid = next((int(m["ns_pid"]) for m in messages if "ns_pid" in m), None)
        if errors or host_pid is None or ns_pid is None:
            if host_pid is not None:
                _kill(host_pid)
            why = "; ".join(errors) or f"the clone did not report back (child status {child_status})"
            return error_response("failed", f"fork into pid {target_pid}: {why}")
        self._remember(_Clone(pid=host_pid, target_pid=target_pid, argv=req.argv))
        log.info(
            "forked %s into pid %d: host pid %d, container pid %d, %.1f ms",
            argv_summary(req.argv), target_pid, host_pid, ns_pid, (time.monotonic() - started) * 1000,
        )
        return {"ok": True, "pid": host_pid, "ns_pid": ns_pid, "target_pid": target_pid}

    def _remember(self, clone: _Clone) -> None:
        self._clones[clone.pid] = clone
        exited = [pid for pid, c in self._clones.items() if c.state != "running"]
        for pid in exited[: max(0, len(exited) - _EXITED_KEPT)]:
            del self._clones[pid]

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            clone = self._clones.get(pid)
            if clone is None:
                continue
            if os.WIFSIGNALED(status):
                clone.state, clone.code = "signaled", os.WTERMSIG(status)
            else:
                clone.state, clone.code = "exited", os.waitstatus_to_exitcode(status)
            log.info("clone %d %s (%s)", pid, clone.state, clone.code)

    def _ping(self) -> dict[str, Any]:
        self._reap()
        return {
            "ok": True,
            "zygote_pid": os.getpid(),
            "rss_kb": _status_kb("VmRSS"),
            "entrypoint": self.config.entrypoint,
            "preloaded": self._preloaded,
            "parent_pid": self._parent_pid,
            "children": [c.pid for c in self._clones.values() if c.state == "running"],
        }

    def _status(self, pid: Any) -> dict[str, Any]:
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise ProtocolError(f"pid: must be a positive integer, got {pid!r}")
        self._reap()
        clone = self._clones.get(pid)
        if clone is None:
            return {"ok": True, "pid": pid, "state": "unknown", "code": None}
        return {"ok": True, "pid": pid, "state": clone.state, "code": clone.code}


# ---------------------------------------------------------------------- helpers


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ProtocolError(f"frame: connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def _recv_frame(conn: socket.socket) -> dict[str, Any]:
    length = decode_length(_recv_exact(conn, HEADER_SIZE))
    return decode_body(_recv_exact(conn, length))


def _try_send(conn: socket.socket, obj: dict[str, Any]) -> None:
    try:
        conn.sendall(encode_frame(obj))
    except OSError as e:
        log.warning("could not answer the client: %s", e)


def _read_reports(fd: int, deadline: float) -> list[dict[str, Any]]:
    """Read newline-delimited JSON from the children until both closed the pipe."""
    buf = b""
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timeout = {"error": "timed out waiting for the clone to report back", "timeout": True}
                return [timeout, *_parse_lines(buf)]
            if not sel.select(remaining):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                return _parse_lines(buf)
            buf += chunk
    finally:
        sel.close()


def _parse_lines(buf: bytes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line in buf.splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            out.append({"error": f"garbled report {line[:100]!r}"})
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _wait_intermediate(pid: int) -> tuple[int, int]:
    """The direct child exits right after forking; never leave it as a zombie."""
    try:
        return os.waitpid(pid, 0)
    except ChildProcessError:
        return pid, 0


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _status_kb(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------- CLI


def config_from_argv(argv: Sequence[str]) -> ZygoteConfig:
    p = argparse.ArgumentParser(prog="python -m hypervisor.providers.docker.zygote",
                                description=__doc__.split("\n")[0])
    p.add_argument("--socket", required=True, help="unix socket to serve fork requests on")
    p.add_argument("--preload", default=None, help="comma-separated modules (default: the agent's)")
    p.add_argument("--entrypoint", default=DEFAULT_ENTRYPOINT, help="module:function run in each clone")
    p.add_argument("--warmup", default=None, help="module:function run once before serving")
    p.add_argument("--charge-to", default=None, help="parent VM container (id, name or pid:N)")
    p.add_argument("--docker-socket", default="/var/run/docker.sock")
    p.add_argument("--log-path", default=DEFAULT_LOG_PATH, help="clone stdout/stderr, inside the container")
    p.add_argument("--handshake-timeout", type=float, default=15.0)
    p.add_argument("--log-level", default="info")
    a = p.parse_args(list(argv))
    preload = DEFAULT_PRELOAD if a.preload is None else tuple(m for m in a.preload.split(",") if m)
    return ZygoteConfig(
        socket_path=a.socket,
        preload=preload,
        entrypoint=a.entrypoint,
        warmup=a.warmup,
        charge_to=a.charge_to,
        docker_socket=a.docker_socket,
        log_path=a.log_path,
        handshake_timeout=a.handshake_timeout,
        log_level=a.log_level,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = config_from_argv(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s zygote %(levelname)s %(message)s")
    zygote = Zygote(config)
    try:
        zygote.start()
    except (ZygoteStartError, OSError, LookupError) as e:
        print(f"zygote: {e}", file=sys.stderr, flush=True)
        return 2
    print(f"{READY_LINE} {os.getpid()}", flush=True)
    zygote.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
