"""The container runtime as the agent needs it, and the facts it reports.

`Runtime` is a Protocol with two implementations: `runtime_docker.DockerRuntime`
(the real engine) and `runtime_fake.FakeRuntime` (in memory, for unit tests).
Everything here is plain data: the planner reads `ContainerInfo`, the
executor hands `CreateSpec` to the runtime.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class Kind(enum.StrEnum):
    SANDBOX = "sandbox"
    INIT = "init"
    APP = "app"


class RunState(enum.StrEnum):
    CREATED = "created"  # made but never started (or start failed)
    RUNNING = "running"
    EXITED = "exited"


@dataclass(frozen=True)
class ContainerInfo:
    """One Docker container the agent made, as its labels and state say."""

    id: str
    pod_uid: str
    pod_name: str
    pod_namespace: str
    name: str  # the pod spec's container name; labels.SANDBOX_NAME for the sandbox
    kind: Kind
    attempt: int
    streak: int
    spec_hash: str
    state: RunState
    exit_code: int = 0
    oom_killed: bool = False
    error: str = ""
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    image: str = ""
    image_id: str = ""
    ip: str = ""
    grace_seconds: int = 30
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.state == RunState.RUNNING

    @property
    def dead(self) -> bool:
        return self.state != RunState.RUNNING

    @property
    def succeeded(self) -> bool:
        return self.state == RunState.EXITED and self.exit_code == 0 and not self.oom_killed


@dataclass(frozen=True)
class Mount:
    kind: str  # "volume" | "bind"
    source: str
    target: str
    read_only: bool = False
    # A bind: the allowed host prefix it lies under. The runtime checks every
    # component below it on the host, without following links (agent/hostpath.py).
    host_prefix: str = ""


@dataclass(frozen=True)
class CreateSpec:
    """Everything the runtime needs to create one container."""

    name: str
    image: str
    labels: Mapping[str, str]
    entrypoint: Sequence[str] | None = None
    cmd: Sequence[str] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    working_dir: str = ""
    network_mode: str = ""  # "" = engine default; "container:<id>" joins another
    ipc_mode: str = ""
    pid_mode: str = ""  # "container:<sandbox>": shareProcessNamespace
    cgroup_parent: str = ""
    hostname: str = ""
    nano_cpus: int = 0
    cpu_shares: int = 0
    memory_limit: int = 0
    memory_reservation: int = 0
    mounts: Sequence[Mount] = ()
    # container port -> host port, only for containers owning their network
    published_ports: Mapping[str, int] = field(default_factory=dict)
    tty: bool = False
    stdin_open: bool = False
    # Processes (and threads) the container may have; 0 = the engine's default (none).
    pids_limit: int = 0
    # Capabilities taken from Docker's default set.
    cap_drop: Sequence[str] = ()
    # securityContext (cowpod.api.podfields.effective_security): the process's uid and gid
    # (None = the image's), extra groups, a read-only root filesystem, no setuid gains
    # (allowPrivilegeEscalation: false), and runAsNonRoot (refused if it would run as uid 0).
    run_as_user: int | None = None
    run_as_group: int | None = None
    group_add: Sequence[int] = ()
    read_only_rootfs: bool = False
    no_new_privileges: bool = False
    run_as_non_root: bool = False


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True)
class VMInfo:
    id: str
    ip: str
    cgroup_parent: str
    # (host path, path in a container): the VM's /etc/hosts, /etc/resolv.conf and
    # /etc/hostname, which the engine would otherwise bind read-write into every
    # container joining the VM's network (see podspec.container_spec).
    host_files: tuple[tuple[str, str], ...] = ()
    # (engine's host path, path in the VM) of the VM container's read-write bind mounts:
    # how a file the agent writes inside the VM is named to the engine (podspec.engine_path).
    mounts: tuple[tuple[str, str], ...] = ()


class ExecSession(Protocol):
    """A command running in a container with its stdin open (`cowpod exec -it`)."""

    def output(self) -> AsyncIterator[tuple[int, bytes]]:
        """(1 for stdout, 2 for stderr, data) until the command's output ends; with a TTY
        everything is stdout."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def close_stdin(self) -> None: ...

    async def resize(self, width: int, height: int) -> None: ...

    async def exit_code(self) -> int:
        """Once the output has ended."""
        ...

    async def close(self) -> None: ...


class ImageError(Exception):
    """An image is missing or could not be pulled; `reason` is the waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class EngineError(Exception):
    """The engine refused an operation (bad config, container gone...)."""


class Runtime(Protocol):
    async def list_containers(self, *, pod_uid: str | None = None) -> list[ContainerInfo]:
        """Every container of this node (all states), optionally one pod's."""

    async def image_present(self, image: str) -> bool: ...

    async def pull_image(self, image: str) -> None:
        """Raise ImageError when the pull fails."""

    async def create_container(self, spec: CreateSpec) -> str: ...

    async def start_container(self, container_id: str) -> None: ...

    async def is_running(self, container_id: str) -> bool:
        """False also when the container is gone."""

    async def signal_container(self, container_id: str, signal: str) -> None:
        """Send a signal; a container that is already gone is not an error."""

    async def remove_container(self, container_id: str) -> None:
        """Force-remove; a container that is already gone is not an error."""

    async def exec(
        self, container_id: str, command: Sequence[str], *, stdin: bytes = b"", timeout: float | None = None
    ) -> ExecResult: ...

    async def exec_session(self, container_id: str, command: Sequence[str], *, tty: bool) -> ExecSession:
        """Start `command` with its stdin open (and a TTY if asked); the caller drives it."""
        ...

    def logs(
        self,
        container_id: str,
        *,
        follow: bool = False,
        tail: int = 0,
        timestamps: bool = False,
        since: float = 0.0,
    ) -> AsyncIterator[bytes]: ...

    async def ensure_volume(
        self, name: str, labels: Mapping[str, str], *, tmpfs: bool, size: int
    ) -> None: ...

    async def remove_volume(self, name: str) -> None: ...

    async def put_files(self, container_id: str, directory: str, files: Mapping[str, bytes],
                        *, mode: int = 0o644) -> None:
        """Write files into `directory` of a container (created if missing), through the
        engine, so it works when `directory` is a volume the agent cannot see."""
        ...

    async def list_volumes(self) -> list[tuple[str, Mapping[str, str]]]: ...

    async def volume_usage(self) -> Mapping[str, int]:
        """Bytes used by each disk-backed volume the engine has (by name)."""
        ...

    async def writable_layer_usage(self) -> Mapping[str, int]:
        """Bytes each running container of this node wrote to its own layer (by id)."""
        ...

    def events(self) -> AsyncIterator[str]:
        """Pod UIDs whose containers changed (died, started...), as they happen."""

    async def vm_info(self, name: str) -> VMInfo: ...

    async def version(self) -> str: ...

    async def data_root(self) -> str:
        """The engine's data directory (Docker's `DockerRootDir`): where writable
        layers and volumes live, so the disk the node's ephemeral-storage is on."""
        ...

    async def close(self) -> None: ...
