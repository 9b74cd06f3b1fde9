"""Host side of the zygote: start one (`ZygoteProcess`) and ask it for clones (`ZygoteClient`).

Both are asyncio-native and safe to use from the controller process: the
zygote is started with fork+exec (`python -m hypervisor.providers.docker.zygote`), never by
forking the caller, whose gRPC threads and event loop would not survive a fork.

    async with ZygoteProcess(ZygoteConfig(socket_path=..., charge_to=parent_id)) as zp:
        clone = await zp.client.fork_into(child_container_id, ["--node-name", "vm-7", ...])
        clone.pid      # host pid
        clone.ns_pid   # pid inside the child container

Errors are `cowpod.errors`: `Invalid` (bad request field), `NotFound` (no such
container or pid, or not running), `FailedPrecondition` (the fork failed:
permission, setns, log file...), `Unavailable` (no zygote answering).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from cowpod.errors import FailedPrecondition, Invalid, NotFound, Unavailable
from hypervisor.providers.docker.nsenter import DEFAULT_NAMESPACES
from hypervisor.providers.docker.zygote import READY_LINE, ZygoteConfig
from hypervisor.providers.docker.zygote_protocol import (
    HEADER_SIZE,
    ChildStatus,
    ForkRequest,
    ForkResult,
    Target,
    decode_body,
    decode_length,
    encode_frame,
    parse_child_status,
    parse_fork_result,
)


class ZygoteClient:
    """Talks to one zygote over its unix socket; one connection per call."""

    def __init__(self, socket_path: str, *, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self._timeout = timeout

    async def fork_into(
        self,
        target: int | str,
        argv: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        *,
        entrypoint: str | None = None,
        log_path: str | None = None,
        cwd: str = "/",
        sys_path: Sequence[str] | None = None,
        name: str | None = None,
        namespaces: Sequence[str] = DEFAULT_NAMESPACES,
        match_capabilities: bool = True,
    ) -> ForkResult:
        """Fork a clone of the zygote into a running container and start `entrypoint(argv)` there.

        `target` is the container's id or name, or its init's host pid (int).
        Returns once the clone is inside the container and about to call the
        entrypoint (its own event loop and channels start after this returns).
        """
        req = ForkRequest(
            target=Target.of(target),
            argv=tuple(argv),
            env=dict(env or {}),
            entrypoint=entrypoint,
            log_path=log_path,
            cwd=cwd,
            namespaces=tuple(namespaces),
            sys_path=None if sys_path is None else tuple(sys_path),
            name=name,
            match_capabilities=match_capabilities,
        )
        return parse_fork_result(await self.call(req.to_wire()))

    async def ping(self) -> dict[str, Any]:
        """The zygote's pid, RSS (kB), preloaded modules and running clones."""
        return await self.call({"op": "ping"})

    async def status(self, pid: int) -> ChildStatus:
        """How a clone is doing: running, exited (code) or signaled (signal number)."""
        return parse_child_status(await self.call({"op": "status", "pid": pid}))

    async def call(self, request: Mapping[str, Any]) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self._timeout):
                reader, writer = await asyncio.open_unix_connection(self.socket_path)
                try:
                    writer.write(encode_frame(request))
                    await writer.drain()
                    length = decode_length(await reader.readexactly(HEADER_SIZE))
                    response = decode_body(await reader.readexactly(length))
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as e:
            raise Unavailable(f"zygote at {self.socket_path}: {type(e).__name__}: {e}") from e
        if response.get("ok"):
            return response
        message = str(response.get("error", "unknown error"))
        kind = response.get("kind")
        if kind == "invalid":
            raise Invalid("", message)
        if kind == "not_found":
            raise NotFound(message)
        raise FailedPrecondition(message)


def config_to_argv(config: ZygoteConfig) -> list[str]:
    argv = [
        "--socket", config.socket_path,
        "--preload", ",".join(config.preload),
        "--entrypoint", config.entrypoint,
        "--docker-socket", config.docker_socket,
        "--log-path", config.log_path,
        "--handshake-timeout", str(config.handshake_timeout),
        "--log-level", config.log_level,
    ]
    if config.warmup:
        argv += ["--warmup", config.warmup]
    if config.charge_to:
        argv += ["--charge-to", config.charge_to]
    return argv


def minimal_env(source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The zygote's environment: just enough to run Python.

    Every clone's /proc/PID/environ shows the environment the zygote was
    exec'd with (a clone's own os.environ is the container's), and clones
    live inside VMs: the controller's variables must not show up there.
    """
    src = os.environ if source is None else source
    keep = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TZ")
    env = {k: src[k] for k in keep if k in src}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return env


class ZygoteProcess:
    """Runs `python -m hypervisor.providers.docker.zygote` as a child process and waits until it serves.

    `stderr_path` receives the zygote's log. `python` must have cowpod (and the
    entrypoint's package) importable; the default is the caller's interpreter.
    """

    def __init__(
        self,
        config: ZygoteConfig,
        *,
        python: str = sys.executable,
        stderr_path: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.config = config
        self._python = python
        self._stderr_path = stderr_path
        self._env = dict(env) if env is not None else minimal_env()
        self._cwd = cwd
        self._start_timeout = start_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self.client = ZygoteClient(config.socket_path)

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("zygote not started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> ZygoteClient:
        stderr: Any = asyncio.subprocess.DEVNULL
        if self._stderr_path:
            # Opening a local log file is instant; the child gets the fd, we close ours below.
            stderr = open(self._stderr_path, "ab")  # noqa: ASYNC230
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self._python, "-m", "hypervisor.providers.docker.zygote", *config_to_argv(self.config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,  # a ^C to the controller is not the zygote's to take
            )
        finally:
            if self._stderr_path:
                stderr.close()
        assert self._proc.stdout is not None
        try:
            async with asyncio.timeout(self._start_timeout):
                line = await self._proc.stdout.readline()
        except TimeoutError:
            await self.stop()
            raise Unavailable(f"zygote did not become ready in {self._start_timeout}s") from None
        if not line.startswith(READY_LINE.encode()):
            code = await self._proc.wait()
            raise FailedPrecondition(f"zygote exited with {code} before serving{self._log_hint()}")
        return self.client

    def _log_hint(self) -> str:
        if not self._stderr_path or not os.path.exists(self._stderr_path):
            return ""
        with open(self._stderr_path, "rb") as f:
            tail = f.read()[-2000:].decode(errors="replace").strip()
        return f": {tail}" if tail else ""

    async def wait(self) -> int:
        """Until the zygote exits (it does by itself when its charged-to parent dies)."""
        if self._proc is None:
            raise RuntimeError("zygote not started")
        return await self._proc.wait()

    async def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds. Clones keep running: they
        belong to their containers, not to the zygote."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return None if proc is None else proc.returncode
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                return await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            return await proc.wait()

    async def __aenter__(self) -> ZygoteProcess:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
