"""The docker provider's warm-start hook: one zygote per parent VM, forking agents into children.

`DockerProvider(cfg, warm_start=ZygoteWarmStarter(...))` calls this after it
started an instant-clone child whose init holds its agent back
(COWPOD_AGENT_START=wait). We find the child's parent's container (the provider
names it in the child's environment, `PARENT_CONTAINER_ENV`; else `container_prefix`
+ the child's `cowpod.parent` label), make sure that parent has a zygote — started on first use, charged to
the parent VM container's cgroups, preloaded with what the agent imports — and
fork a warm agent into the child: `vm_agent.py`, which takes the child's identity
and waits for its network before it runs the agent. The provider passes the
child's init pid when it knows it, so the fork needs no lookup. Raising makes
the provider fall back to a cold start, so a zygote problem costs speed, never a VM.

Zygote sockets live in `socket_dir`, which must NOT be the VMs' shared run dir
(`<data_dir>/run` is mounted into every VM): whoever can talk to a zygote can
put a process into any container.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import re
import sys
from collections.abc import Mapping, Sequence

from cowpod.errors import FailedPrecondition
from hypervisor.providers.docker.provider import PARENT_CONTAINER_ENV
from hypervisor.providers.docker.zygote import (
    DEFAULT_PRELOAD,
    DEFAULT_WARMUP,
    ZygoteConfig,
)
from hypervisor.providers.docker.zygote_client import ZygoteProcess
from hypervisor.providers.docker.zygote_protocol import ForkResult
from hypervisor.providers.docker.zygote_target import DockerSocketResolver

# Where the VM image's Python finds modules the zygote did not preload.
VM_SYS_PATH: tuple[str, ...] = (
    "/opt/cowpod/venv/lib/python3.11/site-packages",
    "/usr/lib/python3.11",
    "/usr/lib/python3.11/lib-dynload",
)
PARENT_LABEL = "cowpod.parent"
# What a clone runs: the VM's identity and network first, then the agent (vm_agent.py),
# which imports agent.main only when it runs: preload it.
AGENT_ENTRYPOINT = "hypervisor.providers.docker.vm_agent:run"
AGENT_PRELOAD: tuple[str, ...] = (*DEFAULT_PRELOAD, "agent.main")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class ZygoteWarmStarter:
    """A `hypervisor.providers.docker.provider.WarmStarter` backed by a pool of zygotes."""

    def __init__(
        self,
        socket_dir: pathlib.Path,
        *,
        container_prefix: str = "",
        preload: tuple[str, ...] = AGENT_PRELOAD,
        entrypoint: str = AGENT_ENTRYPOINT,
        warmup: str | None = DEFAULT_WARMUP,
        python: str = sys.executable,
        sys_path: Sequence[str] | None = VM_SYS_PATH,
        log_path: str = "/var/log/cowpod/agent.log",
        process_name: str = "cowpod-agent",
        docker_socket: str = "/var/run/docker.sock",
        charge_to_parent: bool = True,
    ) -> None:
        self.socket_dir = socket_dir
        self._prefix = container_prefix
        self._preload = preload
        self._entrypoint = entrypoint
        self._warmup = warmup
        self._python = python
        self._sys_path = None if sys_path is None else tuple(sys_path)
        self._log_path = log_path
        self._name = process_name
        self._docker_socket = docker_socket
        self._charge = charge_to_parent
        self._resolver = DockerSocketResolver(docker_socket)
        self._zygotes: dict[str, ZygoteProcess] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.last_clone: ForkResult | None = None

    async def __call__(
        self, child_container: str, agent_argv: Sequence[str], env: Mapping[str, str], *, init_pid: int = 0
    ) -> None:
        # The docker provider says who the parent is; otherwise ask Docker.
        parent = env.get("COWPOD_PARENT_VM", "")
        if not parent:
            labels = await asyncio.to_thread(self._resolver.labels, child_container)
            parent = labels.get(PARENT_LABEL, "")
        if not parent:
            raise FailedPrecondition(f"container {child_container!r} has no {PARENT_LABEL} label")
        # The provider names the parent's container (`cowpod-<cluster>-<vm>`); a caller
        # without one gives the prefix its containers are named with.
        parent_container = env.get(PARENT_CONTAINER_ENV) or (self._prefix + parent if self._prefix else "")
        if not parent_container:
            raise FailedPrecondition(f"no container name for {child_container!r}'s parent {parent!r}: "
                                     f"neither {PARENT_CONTAINER_ENV} nor a container_prefix")
        zygote = await self.prepare(parent_container)
        # agent_argv is a command line ("cowpod-agent", flags...); the entrypoint takes the flags.
        self.last_clone = await zygote.client.fork_into(
            init_pid or child_container,
            list(agent_argv[1:]),
            env,
            sys_path=self._sys_path,
            log_path=self._log_path,
            name=self._name,
        )

    async def prepare(self, parent_container: str) -> ZygoteProcess:
        """Start (or return) the parent's zygote; call it early to make the first clone fast."""
        lock = self._locks.setdefault(parent_container, asyncio.Lock())
        async with lock:
            zp = self._zygotes.get(parent_container)
            if zp is not None and zp.running:
                return zp
            self.socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            key = _SAFE.sub("_", parent_container)
            zp = ZygoteProcess(
                ZygoteConfig(
                    socket_path=str(self.socket_dir / f"{key}.sock"),
                    preload=self._preload,
                    entrypoint=self._entrypoint,
                    warmup=self._warmup,
                    charge_to=parent_container if self._charge else None,
                    docker_socket=self._docker_socket,
                ),
                python=self._python,
                stderr_path=str(self.socket_dir / f"{key}.log"),
            )
            await zp.start()
            self._zygotes[parent_container] = zp
            return zp

    async def release(self, parent_container: str) -> None:
        """Stop one parent's zygote; call before destroying that parent VM, so its
        cgroups are empty when Docker removes them (the zygote would also leave by
        itself when the parent's init exits, but that races Docker's cleanup)."""
        zp = self._zygotes.pop(parent_container, None)
        if zp is not None:
            await zp.stop()

    async def close(self) -> None:
        """Stop every zygote. Agents already forked keep running in their VMs."""
        zygotes, self._zygotes = list(self._zygotes.values()), {}
        for zp in zygotes:
            await zp.stop()

    @staticmethod
    def default_socket_dir(data_dir: pathlib.Path) -> pathlib.Path:
        """`<data_dir>/zygotes`: beside, never inside, the run dir the VMs mount."""
        return pathlib.Path(os.path.abspath(data_dir)) / "zygotes"
