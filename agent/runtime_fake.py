"""An in-memory `Runtime` for unit tests (and hollow agents): containers are
records whose processes a test scripts. tests/e2e/test_runtime_contract.py runs
the same tests on this and on `DockerRuntime` with the real engine.

A container's "process" is described by the image's behaviour table:
`FakeRuntime.behaviour[image] = Behaviour(exit_code=1, runs_for=5.0)` makes
every container of that image exit 1 five seconds (on the injected clock)
after it starts; `runs_for=None` runs until signalled. SIGTERM stops it
unless `ignores_sigterm`. Exec answers come from `exec_results`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from agent import labels as L
from agent.runtime import (
    ContainerInfo,
    CreateSpec,
    EngineError,
    ExecResult,
    ImageError,
    Kind,
    RunState,
    VMInfo,
)
from agent.waiting import wait_event
from cowpod.clock import Clock


@dataclass
class Behaviour:
    exit_code: int = 0
    runs_for: float | None = None  # None: until signalled
    ignores_sigterm: bool = False
    oom: bool = False
    logs: bytes = b""
    start_error: str = ""


@dataclass
class FakeContainer:
    info: ContainerInfo
    spec: CreateSpec
    stop_at: float | None = None
    log: bytearray = field(default_factory=bytearray)


class FakeExecSession:
    """`cat`: what is written comes back on stdout; closing stdin ends it with exit code
    `exit_code` (the exec_results entry for the command). Sizes are recorded."""

    def __init__(self, exit_code: int) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._exit = exit_code
        self.sizes: list[tuple[int, int]] = []

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        while (data := await self._queue.get()) is not None:
            yield 1, data

    async def write(self, data: bytes) -> None:
        await self._queue.put(data)

    async def close_stdin(self) -> None:
        await self._queue.put(None)

    async def resize(self, width: int, height: int) -> None:
        self.sizes.append((width, height))

    async def exit_code(self) -> int:
        return self._exit

    async def close(self) -> None:
        await self._queue.put(None)


class FakeRuntime:
    def __init__(self, clock: Clock, node_name: str = "node-1") -> None:
        self.clock = clock
        self.node = node_name
        self.images: set[str] = set()
        self.pullable: set[str] = set()
        self.behaviour: dict[str, Behaviour] = {}
        self.containers: dict[str, FakeContainer] = {}
        self.volumes: dict[str, Mapping[str, str]] = {}
        self.volume_bytes: dict[str, int] = {}  # what volume_usage() reports
        self.files: dict[tuple[str, str], bytes] = {}  # (container id, path) -> what put_files wrote
        self.sessions: list[FakeExecSession] = []  # what exec_session started
        self.layer_bytes: dict[str, int] = {}  # what writable_layer_usage() reports, by container id
        # (container name label, command tuple) -> exit code; default 0
        self.exec_results: dict[tuple[str, tuple[str, ...]], int] = {}
        self.exec_log: list[tuple[str, tuple[str, ...]]] = []
        self.calls: list[str] = []
        self.vms: dict[str, VMInfo] = {}
        # Set to a message to make the engine stop answering `version` (a dead dockerd).
        self.engine_down = ""
        # What data_root() answers; "" = the engine does not say (capacity falls back to "/").
        self.data_root_dir = ""
        self._ids = itertools.count(1)
        self._events: asyncio.Queue[str] = asyncio.Queue()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------ time

    def _advance(self) -> None:
        """Finish containers whose scripted run time has passed."""
        now = self.clock.now()
        for c in self.containers.values():
            if c.info.state == RunState.RUNNING and c.stop_at is not None and now >= c.stop_at:
                b = self.behaviour.get(c.spec.image, Behaviour())
                self._exit(c, 137 if b.oom else b.exit_code, oom=b.oom, at=c.stop_at)

    def _exit(self, c: FakeContainer, code: int, *, oom: bool = False, at: float | None = None) -> None:
        c.info = replace(
            c.info, state=RunState.EXITED, exit_code=code, oom_killed=oom, finished_at=at or self.clock.now()
        )
        c.stop_at = None
        self._events.put_nowait(c.info.pod_uid)
        self._changed.set()

    # ------------------------------------------------------------ Runtime

    def _ours(self, lab: Mapping[str, str]) -> bool:
        """What DockerRuntime lists: this node's, made by an agent (`cowpod.managed=1`)."""
        return lab.get(L.MANAGED) == "1" and lab.get(L.NODE) == self.node

    async def list_containers(self, *, pod_uid: str | None = None) -> list[ContainerInfo]:
        self._advance()
        return [
            c.info
            for c in self.containers.values()
            if self._ours(c.info.labels) and L.POD_UID in c.info.labels
            and (pod_uid is None or c.info.pod_uid == pod_uid)
        ]

    async def image_present(self, image: str) -> bool:
        return image in self.images

    async def pull_image(self, image: str) -> None:
        self.calls.append(f"pull {image}")
        if image in self.pullable:
            self.images.add(image)
            return
        raise ImageError("ErrImagePull", f"pull {image}: registry unreachable")

    async def create_container(self, spec: CreateSpec) -> str:
        if spec.image not in self.images:
            raise ImageError("ErrImageNotFound", f"image {spec.image} not found")
        for old in [cid for cid, c in self.containers.items() if c.spec.name == spec.name]:
            # As DockerRuntime does: a name still taken is an earlier create whose answer
            # was lost (the agent crashed in between); it is replaced.
            del self.containers[old]
        cid = f"{next(self._ids):064x}"
        lab = dict(spec.labels)
        info = ContainerInfo(
            id=cid,
            pod_uid=lab.get(L.POD_UID, ""),
            pod_name=lab.get(L.POD_NAME, ""),
            pod_namespace=lab.get(L.POD_NAMESPACE, ""),
            name=lab.get(L.CONTAINER_NAME, ""),
            kind=Kind(lab.get(L.CONTAINER_KIND, "app")),
            attempt=int(lab.get(L.ATTEMPT, "0")),
            streak=int(lab.get(L.BACKOFF_STREAK, "0")),
            spec_hash=lab.get(L.SPEC_HASH, ""),
            state=RunState.CREATED,
            created_at=self.clock.now(),
            image=spec.image,
            image_id=f"sha256:{spec.image}",
            grace_seconds=int(lab.get(L.GRACE, "30")),
            labels=lab,
        )
        self.containers[cid] = FakeContainer(info, spec)
        self.calls.append(f"create {info.name}#{info.attempt}")
        return cid

    async def start_container(self, container_id: str) -> None:
        c = self.containers.get(container_id)
        if c is None:
            raise EngineError("no such container")
        b = self.behaviour.get(c.spec.image, Behaviour())
        self.calls.append(f"start {c.info.name}#{c.info.attempt}")
        if b.start_error:
            c.info = replace(c.info, exit_code=127, error=b.start_error)
            raise EngineError(b.start_error)
        now = self.clock.now()
        ip = f"10.0.0.{len(self.containers) % 250 + 1}" if c.info.kind == Kind.SANDBOX else ""
        c.info = replace(c.info, state=RunState.RUNNING, started_at=now, ip=ip)
        c.log.extend(b.logs)
        c.stop_at = None if b.runs_for is None else now + b.runs_for
        self._events.put_nowait(c.info.pod_uid)
        self._changed.set()

    async def is_running(self, container_id: str) -> bool:
        self._advance()
        c = self.containers.get(container_id)
        return c is not None and c.info.state == RunState.RUNNING

    async def signal_container(self, container_id: str, signal: str) -> None:
        c = self.containers.get(container_id)
        self.calls.append(f"signal {signal} {c.info.name if c else container_id[:8]}")
        if c is None or c.info.state != RunState.RUNNING:
            return
        b = self.behaviour.get(c.spec.image, Behaviour())
        if signal == "SIGKILL":
            self._exit(c, 137)
        elif signal == "SIGTERM" and not b.ignores_sigterm:
            self._exit(c, 143 if c.info.kind != Kind.SANDBOX else 0)

    async def remove_container(self, container_id: str) -> None:
        c = self.containers.pop(container_id, None)
        if c is not None:
            self.calls.append(f"remove {c.info.name}#{c.info.attempt}")
            self._changed.set()  # a follower of its logs stops

    async def exec(
        self, container_id: str, command: Sequence[str], *, stdin: bytes = b"", timeout: float | None = None
    ) -> ExecResult:
        c = self.containers.get(container_id)
        if c is None or c.info.state != RunState.RUNNING:
            raise EngineError("container is not running")
        key = (c.info.name, tuple(command))
        self.exec_log.append(key)
        return ExecResult(self.exec_results.get(key, 0), b"", b"")

    async def exec_session(self, container_id: str, command: Sequence[str], *, tty: bool) -> FakeExecSession:
        c = self.containers.get(container_id)
        if c is None or c.info.state != RunState.RUNNING:
            raise EngineError("container is not running")
        key = (c.info.name, tuple(command))
        self.exec_log.append(key)
        session = FakeExecSession(self.exec_results.get(key, 0))
        self.sessions.append(session)
        return session

    async def logs(
        self,
        container_id: str,
        *,
        follow: bool = False,
        tail: int = 0,
        timestamps: bool = False,
        since: float = 0.0,
    ) -> AsyncIterator[bytes]:
        c = self.containers.get(container_id)
        if c is None:
            raise EngineError("no such container")
        # The fake's process prints everything as it starts: every line carries that time.
        at = c.info.started_at or c.info.created_at
        if since > at:
            return
        lines = bytes(c.log).splitlines(keepends=True)
        if tail > 0:
            lines = lines[-tail:]
        if timestamps:  # as Docker stamps them: RFC 3339 in UTC with nanoseconds, then a space
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1e9) % 10**9:09d}Z "
            lines = [stamp.encode() + line for line in lines]
        yield b"".join(lines)
        # Following, as `docker logs -f`: the stream stays open until the container stops.
        while follow and c.info.state == RunState.RUNNING and self.containers.get(container_id) is c:
            self._changed.clear()
            await wait_event(self._changed, self.clock, 3600.0)
            self._advance()

    async def ensure_volume(self, name: str, labels: Mapping[str, str], *, tmpfs: bool, size: int) -> None:
        self.volumes.setdefault(name, dict(labels))

    async def remove_volume(self, name: str) -> None:
        self.volumes.pop(name, None)

    async def put_files(self, container_id: str, directory: str, files: Mapping[str, bytes],
                        *, mode: int = 0o644) -> None:
        if container_id not in self.containers:
            raise EngineError("no such container")
        for name, data in files.items():
            self.files[(container_id, f"{directory.rstrip('/')}/{name}")] = data

    async def list_volumes(self) -> list[tuple[str, Mapping[str, str]]]:
        return [(name, lab) for name, lab in self.volumes.items() if self._ours(lab)]

    async def volume_usage(self) -> Mapping[str, int]:
        """What tests put in `volume_bytes`."""
        return {name: self.volume_bytes.get(name, 0) for name in self.volumes}

    async def writable_layer_usage(self) -> Mapping[str, int]:
        """What tests put in `layer_bytes`."""
        return dict(self.layer_bytes)

    async def events(self) -> AsyncIterator[str]:
        """Like Docker's stream: a container's scripted exit is announced when
        the (fake) clock reaches it, not when someone next looks."""
        while True:
            self._advance()
            while not self._events.empty():
                yield self._events.get_nowait()
            stops = [c.stop_at for c in self.containers.values() if c.stop_at is not None]
            timeout = (min(stops) - self.clock.now()) if stops else 3600.0
            self._changed.clear()
            await wait_event(self._changed, self.clock, max(timeout, 0.0))

    async def vm_info(self, name: str) -> VMInfo:
        if name not in self.vms:
            raise EngineError(f"--vm-container {name!r}: no such container")
        return self.vms[name]

    async def version(self) -> str:
        if self.engine_down:
            raise EngineError(self.engine_down)
        return "fake-1.0"

    async def data_root(self) -> str:
        return self.data_root_dir

    async def close(self) -> None:
        return None

    # ------------------------------------------------------------ test helpers

    def running(self, name: str | None = None) -> list[ContainerInfo]:
        self._advance()
        return [
            c.info
            for c in self.containers.values()
            if c.info.state == RunState.RUNNING and (name is None or c.info.name == name)
        ]

    def crash(self, container_id: str, code: int = 1, *, oom: bool = False) -> None:
        self._exit(self.containers[container_id], code, oom=oom)
