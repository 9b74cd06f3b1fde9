"""The docker provider: a VM is a long-running container of the VM template image.

How VM concepts map onto Docker (docs/hypervisor.md has the long version):

- VM            container `cowpod-<cluster>-<name>` (`container_name`: two clusters on one
                engine never collide) of `cowpod/vm:latest`, with its own CPU
                and memory limits (`nano_cpus`, `mem_limit`), hostname = VM name,
                its own IP on the bridge network `cowpod`, and labels
                `cowpod.vm`, `cowpod.managed`, `cowpod.cluster`, ...
- VM's disk     the container's writable overlay2 layer over the template's layers.
- full clone    a fresh container from the template: a cold boot (init, Python,
                agent imports, registration).
- quiesce       `docker commit` of the RUNNING parent (its writable layer, the
                parent frozen for the ~0.1-0.2 s it takes) into
                `cowpod/vm-snap:<cluster>-<parent>-<n>`, ONCE per parent: the first time it
                is a clone source (or `prepare_parent`), again only on
                `requiesce(parent)`. Every child forks from that point, as
                Fargo's children fork from a quiesced parent.
- warm shell    a child container created ahead from the parent's snapshot and
                started with its init idle: no agent, no name, no machine id.
                A pool per parent is refilled in the background once its clones
                are quiet: to the biggest recent burst of clones (poolsize.py),
                at least `pool_size` (default 2), at most `pool_max`.
- instant clone take a shell, give it the child's identity (machine id, hostname,
                name; see vm_identity.py), rename it to the child's container name,
                then start its agent: forked warm from the parent's zygote
                (warm-start hook) or cold by the init (SIGUSR1). With the pool
                empty: the child's own container from the snapshot, the child from
                its create (nothing to adopt), started off the VM network and
                attached while the agent is forked in (`_create_child_sync`).
- lineage       the child's labels `cowpod.parent` and `cowpod.snapshot`.
- snap free     `docker commit` of the child into its own image record
                `cowpod/vm-own:<cluster>-<child>`: from then on the child owns its disk and
                the parent may be destroyed (overlay2 layers are immutable and
                shared by content, so nothing is copied under the running child).
- destroy       remove every container labelled `cowpod.node=<vm>` (its pods: they
                survive the VM container otherwise), then the VM container, then
                the snapshot images nothing uses any more.

Only Docker is the source of truth: every answer comes from containers, images
and labels, so a restarted controller sees exactly what exists. Every blocking
Docker SDK call runs in a thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import datetime
import functools
import json
import logging
import pathlib
import re
import signal
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import docker
import docker.errors
from docker.models.containers import Container

from cowpod import images
from cowpod.auth.flags import DEFAULT_CERT_DIR
from cowpod.errors import AlreadyExists, FailedPrecondition, Invalid, NotFound
from cowpod.tasks import TaskSupervisor
from hypervisor.guest import GuestBootstrap, GuestEndpoints
from hypervisor.provider import CloneKind, TaskOwner, VMInfo, VMSpecInfo, VMState
from hypervisor.providers.docker import metadata_block
from hypervisor.providers.docker.poolsize import BurstSizer
from hypervisor.providers.docker.vm_agent import NETWORK_PENDING_ENV
from hypervisor.providers.docker.vm_identity import (
    IdentityRecord,
    give_identity,
    identity_json,
    read_record,
    remove_record,
    rewrite_host_files,
    write_record,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Labels on VM containers (see the brief's process contracts).
L_VM = images.VM_LABEL
L_MANAGED = "cowpod.managed"
L_CLUSTER = "cowpod.cluster"
L_CLASS = "cowpod.class"
L_CPU = "cowpod.cpu-millis"
L_MEMORY = "cowpod.memory-bytes"
L_PARENT = "cowpod.parent"
L_SNAPSHOT = "cowpod.snapshot"
L_CLONE_KIND = "cowpod.clone-kind"
L_MACHINE_ID = "cowpod.machine-id"
L_TEMPLATE = "cowpod.template"
# On a warm shell: the parent it was made from. A shell that was taken keeps the
# label (labels are immutable); its VM name is then its container name.
L_SHELL_OF = "cowpod.shell-of"
# Labels on pods' containers: the node they run on.
L_NODE = "cowpod.node"
# Labels on images.
L_SNAPSHOT_OF = images.SNAPSHOT_OF_LABEL
L_OWN_OF = images.OWN_OF_LABEL

# Every VM label is set on every VM container, empty when it does not apply:
# a child's container inherits its snapshot image's labels (the parent's), and
# only keys we set override them.
_VM_LABEL_KEYS = (L_VM, L_MANAGED, L_CLUSTER, L_CLASS, L_CPU, L_MEMORY, L_PARENT, L_SNAPSHOT,
                  L_CLONE_KIND, L_MACHINE_ID, L_TEMPLATE, L_SHELL_OF)

# DNS-1123 label-ish, which is also a valid container-name suffix, image tag and hostname.
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

IN_VM_RUN_DIR = "/run/cowpod"
# Key material lives in memory, never on the VM's disk: `docker commit` (a
# snapshot, a snap free) copies the writable layer but not mounts, so no image
# holds a node's key, and a child bootstraps its own. A restarted VM container
# bootstraps again with the join token.
_KEY_TMPFS = {DEFAULT_CERT_DIR: "rw,nosuid,nodev,noexec,mode=0700,size=1m"}
_SIGUSR1_BIT = 1 << (signal.SIGUSR1 - 1)
_CPU_PERIOD = 100_000  # µs: CFS period of shells (quota = cpu millis * period / 1000)


class WarmStarter(Protocol):
    """Start the child's agent warm (e.g. forked from a zygote into the child's
    namespaces) instead of cold. Called after the child container started with
    its init holding the agent back; raising makes the provider fall back to a
    cold start (SIGUSR1 to the child's init).

    `init_pid` is the host pid of the child's init when the provider knows it
    (0 otherwise): with it no lookup of the container is needed — one that,
    by name, would also wait for whatever Docker is doing to the container at
    the time, such as attaching its network."""

    async def __call__(
        self, child_container: str, agent_argv: Sequence[str], env: Mapping[str, str], *, init_pid: int = 0
    ) -> None: ...


DEFAULT_CONTAINER_PREFIX = "cowpod-"


@dataclass(frozen=True)
class DockerProviderConfig:
    # The host's cowpod data dir; its `run/` is mounted at /run/cowpod in every VM.
    data_dir: pathlib.Path
    cluster_id: str = "default"
    network: str = "cowpod"
    image: str = images.VM_IMAGE
    # VM containers are named `<container_prefix><cluster_id>-<vm>` (`container_name`): like
    # kind's `<cluster>-control-plane`, so two clusters on one engine can both have `vm-1`.
    container_prefix: str = DEFAULT_CONTAINER_PREFIX
    snapshot_repo: str = images.SNAPSHOT_REPO
    own_repo: str = images.OWN_REPO
    # The controller as the agent inside the VM reaches it.
    controller_address: str = f"unix://{IN_VM_RUN_DIR}/controller.sock"
    docker_socket: str = "/var/run/docker.sock"
    # Added to every container, image and network this provider creates
    # (tests add {"cowpod.test": "1"}).
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    # Seconds `docker stop` waits before SIGKILL (the VM's init has its own grace, shorter).
    stop_timeout: int = 10
    # Docker Engine API URL; empty = the environment's (DOCKER_HOST or the local socket).
    docker_url: str = ""
    # Warm shells kept ready per parent for instant clones, at least (0: none; clones
    # then create their container inline). Names: `<shell_prefix><parent>-<random>`.
    pool_size: int = 2
    # After a burst of N clones of a parent its pool is refilled to N (poolsize.py),
    # at most this many; a burst is remembered this long, then the pool shrinks back.
    pool_max: int = 8
    pool_memory_s: float = 600.0
    # A pool is refilled only once no clone of its parent was asked for or in
    # the making for this long: during a burst of clones the engine's CPU goes
    # to the clones and their pods, not to shells for the next burst.
    refill_quiet_s: float = 1.0
    shell_prefix: str = "cowpod-shell-"
    # Keep idle shells paused (cgroup freezer): they then cost no CPU at all, and a
    # take pays one `docker unpause` (~10-30 ms).
    pool_paused: bool = False
    # Processes and threads in a VM, its pods included (they nest in its cgroup): a
    # VM's pods cannot take the host's pid space (often 32768) whatever each
    # container's own limit. 0 = none.
    pids_limit: int = 4096
    # Drop traffic from the VM network to the cloud metadata address (169.254.169.254)
    # in iptables' DOCKER-USER chain when the network is ensured (metadata_block.py).
    block_metadata: bool = True


# What a container name may hold besides [a-zA-Z0-9] (Docker's rule); a cluster id is
# made to fit (ids cowpod makes, `cp-<hex>`, always do).
_CONTAINER_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")
# In an instant clone's environment: its parent's container name, for the warm starter
# (zygote_warm.py), which keys its zygotes by it.
PARENT_CONTAINER_ENV = "COWPOD_PARENT_CONTAINER"


def cluster_part(cluster_id: str) -> str:
    """A cluster id as it goes into container names and image tags (both allow [a-zA-Z0-9_.-])."""
    return _CONTAINER_NAME_UNSAFE.sub("-", cluster_id)


def vm_container_prefix(cluster_id: str, container_prefix: str = DEFAULT_CONTAINER_PREFIX) -> str:
    """What the name of every VM container of cluster `cluster_id` starts with."""
    return f"{container_prefix}{cluster_part(cluster_id)}-"


def container_name(cfg: DockerProviderConfig, vm: str) -> str:
    """The one rule for a VM's container name: `cowpod-<cluster>-<vm>`, e.g. `cowpod-cp-3f9a0c12de-vm-1`."""
    return f"{vm_container_prefix(cfg.cluster_id, cfg.container_prefix)}{vm}"


def guest_endpoints(cfg: DockerProviderConfig, vm: str) -> GuestEndpoints:
    """The agent serves on a unix socket in the run dir every VM mounts, so the
    controller on the host dials the same file by its host path."""
    host_run = cfg.data_dir.resolve() / "run"
    return GuestEndpoints(
        controller=cfg.controller_address,
        agent_listen=f"unix://{IN_VM_RUN_DIR}/agents/{vm}.sock",
        agent_advertise=f"unix://{host_run}/agents/{vm}.sock",
        # Pods share the VM's network namespace, so its loopback is theirs: the agent
        # answers their Service lookups there (agent/dns.py), and writes each pod's
        # resolv.conf into the run dir, which the engine sees by its host path.
        agent_args=("--vm-container", container_name(cfg, vm), "--cluster-dns", "127.0.0.1:53",
                    "--pod-files-dir", f"{IN_VM_RUN_DIR}/pods/{vm}"),
    )


def validate_spec(spec: VMSpecInfo) -> None:
    if not _NAME_RE.match(spec.name):
        raise Invalid("metadata.name", f"{spec.name!r} must be a DNS-1123 label (a-z, 0-9, '-', <= 63)")
    if spec.cpu_millis <= 0:
        raise Invalid("spec.cpuMillis", "must be positive")
    if spec.memory_bytes < 6 * 1024 * 1024:
        raise Invalid("spec.memoryBytes", "must be at least 6Mi (Docker's minimum)")


def _parse_time(s: str | None) -> float | None:
    if not s or s.startswith("0001-01-01"):
        return None
    return datetime.datetime.fromisoformat(s).timestamp()


def state_of(attrs: Mapping[str, Any]) -> tuple[VMState, str]:
    """Container state -> VM state. Exit 0 is a clean shutdown (our init exits 0
    on SIGTERM); anything else, an OOM kill or a dead container is a failure."""
    st = attrs.get("State", {})
    status = st.get("Status", "")
    if status == "running":
        return (VMState.PAUSED if st.get("Paused") else VMState.RUNNING), ""
    if status == "paused":
        return VMState.PAUSED, ""
    if status in ("created", "restarting"):
        return VMState.CREATING, ""
    code = int(st.get("ExitCode", 0) or 0)
    if status == "exited" and code == 0 and not st.get("OOMKilled"):
        return VMState.STOPPED, "shut down"
    reason = "out of memory" if st.get("OOMKilled") else f"exited with code {code}"
    if st.get("Error"):
        reason += f": {st['Error']}"
    return VMState.FAILED, reason


class DockerProvider:
    """The `Provider` for a local Docker engine (see the module docstring)."""

    def __init__(
        self,
        cfg: DockerProviderConfig,
        *,
        client: docker.DockerClient | None = None,
        warm_start: WarmStarter | None = None,
        tasks: TaskOwner | None = None,
    ) -> None:
        self.cfg = cfg
        self._client = client
        self.warm_start = warm_start
        # Who runs the pool refills: the VM manager's task owner; standalone
        # (tests, benches) a set of our own. `close` stops them either way.
        self._tasks: TaskOwner = tasks or TaskSupervisor("docker-provider")
        self._network_ready = False
        self._locks: dict[str, asyncio.Lock] = {}
        # Shells per pool; tests and the bench may change it at run time.
        self.pool_size = cfg.pool_size
        # parent -> its current snapshot (the quiesce point every child forks from).
        self._snapshots: dict[str, str] = {}
        # parent -> ids of idle shells made from its current snapshot, oldest first.
        self._pools: dict[str, collections.deque[str]] = {}
        # parent -> (cpu millis, memory bytes) of its last child: the size new shells get.
        self._shell_size: dict[str, tuple[int, int]] = {}
        # parent -> the task refilling its pool. The provider owns these tasks:
        # `_stop_pool` and `close` stop and await them.
        self._refills: dict[str, asyncio.Task[None]] = {}
        self._stopping: set[str] = set()
        # parent -> monotonic time a clone of it last began or ended.
        self._last_take: dict[str, float] = {}
        # parent -> clones of it in the making (a refill waits for none).
        self._cloning: collections.Counter[str] = collections.Counter()
        # (container id, state) -> its inspect, for list() (see `_listed_sync`).
        self._inspected: dict[tuple[str, str], dict[str, Any]] = {}
        # Ids of clones' own containers whose clone has not returned yet.
        self._making: set[str] = set()
        # VMs paused by our own `docker commit` right now (`_commit_sync`): reported running.
        self._quiescing: set[str] = set()
        # Parents whose refill task is waiting for quiet (safe to cancel: no shell in the making).
        self._refill_waiting: set[str] = set()
        # How many shells each parent's pool holds: sized to its recent bursts.
        self._sizer = BurstSizer(ceiling=cfg.pool_max, memory_s=cfg.pool_memory_s)
        # parent -> set when a clone of it was asked for while its refill task waits to
        # shrink the pool (the task then refills first).
        self._pokes: dict[str, asyncio.Event] = {}

    @property
    def name(self) -> str:
        return "docker"

    # ---- plumbing ---------------------------------------------------------

    @property
    def docker(self) -> docker.DockerClient:
        if self._client is None:
            self._client = (
                docker.DockerClient(base_url=self.cfg.docker_url) if self.cfg.docker_url
                else docker.from_env()
            )
        return self._client

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _labels(self, extra: Mapping[str, str]) -> dict[str, str]:
        return {**self.cfg.extra_labels, L_MANAGED: "1", L_CLUSTER: self.cfg.cluster_id, **extra}

    def _filters(self, *labels: str) -> dict[str, Any]:
        return {"label": [f"{L_MANAGED}=1", f"{L_CLUSTER}={self.cfg.cluster_id}", *labels]}

    async def close(self) -> None:
        for parent in builtins.list(self._refills):
            await self._stop_pool(parent)
        closer = getattr(self.warm_start, "close", None)
        if closer is not None:
            await closer()
        if self._client is not None:
            await self._run(self._client.close)
            self._client = None

    def _ensure_network_sync(self) -> None:
        name = self.cfg.network
        if not any(net.name == name for net in self.docker.networks.list(names=[name])):
            try:
                self.docker.networks.create(
                    name, driver="bridge", check_duplicate=True,
                    labels={**self.cfg.extra_labels, L_MANAGED: "1"},
                )
                log.info("created docker network %s", name)
            except docker.errors.APIError as err:
                if err.status_code != 409:  # someone else created it meanwhile
                    raise
        if self.cfg.block_metadata and self.cfg.docker_url and not self.cfg.docker_url.startswith("unix://"):
            # Our iptables is not the remote engine's host's.
            log.warning("docker engine %s is remote: block 169.254.169.254 in its host's DOCKER-USER chain "
                        "yourself (docs/security.md)", self.cfg.docker_url)
        elif self.cfg.block_metadata:
            # Also for a network that already existed: an upgraded cluster, or rules
            # lost with a host reboot, get them back on the next start.
            net = self.docker.networks.get(name)
            metadata_block.block(name, metadata_block.subnets_of(net.attrs))

    async def _ensure_network(self) -> None:
        if not self._network_ready:
            await self._run(self._ensure_network_sync)
            self._network_ready = True

    def _find_sync(self, name: str) -> Container:
        try:
            c = self.docker.containers.get(container_name(self.cfg, name))
        except docker.errors.NotFound:
            raise NotFound(f"vm {name!r} not found") from None
        labels = c.labels
        if self._vm_name_of(c) != name or labels.get(L_CLUSTER) != self.cfg.cluster_id:
            raise NotFound(f"vm {name!r} not found (container {c.name} belongs to another cluster)")
        return c

    def _name_taken_sync(self, vm: str) -> AlreadyExists:
        """The error for a VM whose container name is taken, saying whose container has it:
        this cluster's VM, another cluster's, or a container that is no cowpod VM."""
        cname = container_name(self.cfg, vm)
        try:
            labels = self.docker.containers.get(cname).labels
        except docker.errors.APIError:  # gone meanwhile, or the engine is busy: say what we know
            return AlreadyExists(f"vm {vm!r} already exists (its container {cname} exists)")
        owner = labels.get(L_CLUSTER, "")
        if owner == self.cfg.cluster_id:
            return AlreadyExists(f"vm {vm!r} already exists in this cluster ({self.cfg.cluster_id})")
        if owner:
            return AlreadyExists(f"vm {vm!r}: container {cname} already exists and belongs to cowpod "
                                 f"cluster {owner!r}, not this one ({self.cfg.cluster_id})")
        return AlreadyExists(f"vm {vm!r}: container {cname} already exists and is not a cowpod VM "
                             f"(no {L_CLUSTER} label); rename or remove it")

    def _vm_name_of(self, c: Container) -> str | None:
        """The VM a container is, or None (an idle shell, a stranger). A VM made
        from a warm shell is named by its container name: the shell's labels were
        set before anyone knew the name, and labels never change."""
        labels = c.labels
        cname = str(c.name)
        if labels.get(L_SHELL_OF):
            prefix = vm_container_prefix(self.cfg.cluster_id, self.cfg.container_prefix)
            return cname[len(prefix):] if cname.startswith(prefix) else None
        name = labels.get(L_VM, "")
        return name if name and cname == container_name(self.cfg, name) else None

    def _info(self, c: Container, children: Sequence[str], owned: bool) -> VMInfo:
        attrs = c.attrs
        labels: dict[str, str] = dict(attrs.get("Config", {}).get("Labels") or {})
        state, message = state_of(attrs)
        name = self._vm_name_of(c) or labels[L_VM]
        if state == VMState.PAUSED and name in self._quiescing:
            state = VMState.RUNNING
        nets = attrs.get("NetworkSettings", {}).get("Networks") or {}
        ip = (nets.get(self.cfg.network) or {}).get("IPAddress", "")
        kind = CloneKind(labels.get(L_CLONE_KIND) or CloneKind.FULL)
        st = attrs.get("State", {})
        hostname = attrs.get("Config", {}).get("Hostname", "")
        created_at = _parse_time(attrs.get("Created")) or 0.0
        ready_at = _parse_time(st.get("StartedAt")) if state != VMState.CREATING else None
        if labels.get(L_SHELL_OF):
            # A taken shell: what its labels would say is in its identity record.
            rec = read_record(self.cfg.data_dir, str(c.id))
            labels[L_VM] = name
            hostname = name
            if rec is not None:
                labels.update({L_CLASS: rec.class_name, L_CPU: str(rec.cpu_millis),
                               L_MEMORY: str(rec.memory_bytes), L_MACHINE_ID: rec.machine_id,
                               L_TEMPLATE: "1" if rec.template else ""})
                created_at = ready_at = rec.taken_at
        return VMInfo(
            name=name,
            class_name=labels.get(L_CLASS, ""),
            cpu_millis=int(labels.get(L_CPU) or 0),
            memory_bytes=int(labels.get(L_MEMORY) or 0),
            state=state,
            node_name=name,
            ip=ip,
            provider_id=f"docker://{c.id}",
            hostname=hostname,
            machine_id=labels.get(L_MACHINE_ID, ""),
            clone_kind=kind,
            created_at=created_at,
            ready_at=ready_at,
            parent=labels.get(L_PARENT, ""),
            children=tuple(sorted(children)),
            snapped_free=kind == CloneKind.FULL or owned,
            message=message,
            labels=labels,
        )

    def _owned_sync(self) -> set[str]:
        """VMs that were snapped free: those with an own image record."""
        imgs = self.docker.images.list(filters=self._filters(L_OWN_OF))
        return {i.labels.get(L_OWN_OF, "") for i in imgs}

    def _listed_sync(self, summary: Mapping[str, Any]) -> Container | None:
        """A container of `docker ps`, with what `_info` needs of its inspect.

        The engine answers `docker ps` from its view of all containers without
        taking any container's lock, while an inspect waits for a container being
        started or attached. The SDK's list inspects every container, so in a
        burst of clones one list took as long as the slowest start, and the VM
        manager, which lists on every pass, asked for the next clones that much
        later. Here an inspect is made once per container and state (what it
        adds — start time, exit code, OOM kill, hostname — changes only with the
        state) and never for one still being created (or a clone's own container
        until its clone returns: its attach holds the lock); the name and the network
        address, which change within a state (a shell's rename, an attach after
        the start), come from the summary.

        An inspect is kept only when it saw the state the summary names: the engine
        can change a container's state between `docker ps` and the inspect (a
        snapshot's `commit --pause` freezes a parent for a moment), and an inspect of
        the paused parent kept under "running" made every later list report it
        Paused while `docker ps` said running, for good. Such an inspect is newer than
        the summary, so this list still uses it; the next list inspects again."""
        cid = str(summary.get("Id", ""))
        state = str(summary.get("State", ""))
        attrs = self._inspected.get((cid, state))
        if attrs is None and (state in ("created", "restarting", "removing", "") or cid in self._making):
            created = summary.get("Created")
            attrs = {"State": {"Status": state or "created"},
                     "Config": {"Labels": dict(summary.get("Labels") or {}), "Hostname": ""},
                     "Created": datetime.datetime.fromtimestamp(float(created), datetime.UTC).isoformat()
                     if isinstance(created, (int, float)) else None}
        elif attrs is None:
            try:
                attrs = self.docker.api.inspect_container(cid)
            except docker.errors.NotFound:
                return None
            if attrs.get("State", {}).get("Status") == state:
                self._inspected[(cid, state)] = attrs
        names = summary.get("Names") or [str(attrs.get("Name", ""))]
        merged = {**attrs, "Id": cid, "Name": str(names[0]),
                  "NetworkSettings": summary.get("NetworkSettings") or attrs.get("NetworkSettings") or {}}
        return Container(attrs=merged, client=self.docker)

    def _list_sync(self) -> builtins.list[VMInfo]:
        summaries = self.docker.api.containers(all=True, filters=self._filters(L_VM))
        live = {(str(x.get("Id", "")), str(x.get("State", ""))) for x in summaries}
        for key in [k for k in list(self._inspected) if k not in live]:
            self._inspected.pop(key, None)  # lists may run in two threads at once
        cs = [c for c in map(self._listed_sync, summaries) if c is not None]
        owned = self._owned_sync()
        named = [(c, self._vm_name_of(c)) for c in cs]
        children: dict[str, list[str]] = {}
        for c, name in named:
            parent = c.labels.get(L_PARENT, "")
            if parent and name:
                children.setdefault(parent, []).append(name)
        out = [self._info(c, children.get(name, []), name in owned) for c, name in named if name]
        return sorted(out, key=lambda i: i.name)

    def _get_sync(self, name: str) -> VMInfo:
        c = self._find_sync(name)
        kids = self.docker.containers.list(
            all=True, filters=self._filters(f"{L_PARENT}={name}"), ignore_removed=True
        )
        owned = bool(self.docker.images.list(filters=self._filters(f"{L_OWN_OF}={name}")))
        names = [self._vm_name_of(k) for k in kids]
        return self._info(c, [n for n in names if n], owned)

    # ---- Provider ---------------------------------------------------------

    async def list(self) -> builtins.list[VMInfo]:
        return await self._run(self._list_sync)

    async def get(self, name: str) -> VMInfo:
        return await self._run(self._get_sync, name)

    def _env(self, spec: VMSpecInfo, machine_id: str, argv: Sequence[str], start: str) -> dict[str, str]:
        return {
            "COWPOD_VM_NAME": spec.name,
            "COWPOD_MACHINE_ID": machine_id,
            "COWPOD_AGENT_ARGV": json.dumps(list(argv)),
            "COWPOD_AGENT_START": start,
            "COWPOD_STOP_GRACE": str(max(1, self.cfg.stop_timeout - 2)),
            "COWPOD_CLUSTER_ID": self.cfg.cluster_id,
        }

    def _vm_container_kwargs(self) -> dict[str, Any]:
        """What every VM container gets, whatever made it (full clone, warm shell,
        instant clone's own container): its network, the run dir and Docker socket
        mounts, the key tmpfs, the pid limit, the stop signal."""
        run_dir = self.cfg.data_dir.resolve() / "run"
        (run_dir / "agents").mkdir(parents=True, exist_ok=True)
        return {
            "network": self.cfg.network,
            "volumes": {
                self.cfg.docker_socket: {"bind": "/var/run/docker.sock", "mode": "rw"},
                str(run_dir): {"bind": IN_VM_RUN_DIR, "mode": "rw"},
            },
            "tmpfs": _KEY_TMPFS,
            "pids_limit": self.cfg.pids_limit or None,
            "stop_signal": "SIGTERM",
        }

    def _vm_labels(self, spec: VMSpecInfo, kind: CloneKind, parent: str, snapshot: str,
                   machine_id: str) -> dict[str, str]:
        labels = dict.fromkeys(_VM_LABEL_KEYS, "")
        labels.update(self._labels({
            L_VM: spec.name,
            L_CLASS: spec.class_name,
            L_CPU: str(spec.cpu_millis),
            L_MEMORY: str(spec.memory_bytes),
            L_PARENT: parent,
            L_SNAPSHOT: snapshot,
            L_CLONE_KIND: kind.value,
            L_MACHINE_ID: machine_id,
            L_TEMPLATE: "1" if spec.template else "",
        }))
        return labels

    def _start_sync(
        self, spec: VMSpecInfo, image: str, kind: CloneKind, parent: str, snapshot: str,
        env: Mapping[str, str], machine_id: str,
    ) -> Container:
        try:
            c: Container = self.docker.containers.run(
                image,
                detach=True,
                name=container_name(self.cfg, spec.name),
                hostname=spec.name,
                labels=self._vm_labels(spec, kind, parent, snapshot, machine_id),
                environment=dict(env),
                nano_cpus=spec.cpu_millis * 1_000_000,
                mem_limit=spec.memory_bytes,
                memswap_limit=spec.memory_bytes,
                **self._vm_container_kwargs(),
            )
        except docker.errors.APIError as err:
            if err.status_code == 409:
                raise self._name_taken_sync(spec.name) from None
            if isinstance(err, docker.errors.ImageNotFound):
                raise FailedPrecondition(
                    f"image {image!r} not found: run deploy/build-images.sh"
                ) from None
            raise
        c.reload()
        # Return a VM booted to its init: until the init takes signals, PID 1
        # drops SIGTERM, and a `docker stop` right away would end in SIGKILL.
        _wait_init(int(c.attrs.get("State", {}).get("Pid") or 0))
        return c

    def guest_endpoints(self, name: str) -> GuestEndpoints:
        return guest_endpoints(self.cfg, name)

    async def full_clone(self, spec: VMSpecInfo, guest: GuestBootstrap) -> VMInfo:
        validate_spec(spec)
        await self._ensure_network()
        # The join bundle reaches the VM through the mounted run dir (the controller
        # keeps it there), so only the command line travels in the environment.
        machine_id = guest.machine_id
        env = self._env(spec, machine_id, guest.agent_argv(IN_VM_RUN_DIR), "now")
        image = spec.image or self.cfg.image
        async with self._lock(spec.name):
            await self._run(self._start_sync, spec, image, CloneKind.FULL, "", "", env, machine_id)
        log.info("full clone %s from %s", spec.name, image)
        return await self.get(spec.name)

    def _snapshot_sync(self, parent: str, fresh: bool = False) -> str:
        """The parent's quiesce point: its newest `<repo>:<parent>-<n>` snapshot,
        committed now when there is none (or when `fresh`). Checks the parent is
        running or paused either way: a child needs a live parent (its zygote)."""
        c = self._find_sync(parent)
        status = c.attrs.get("State", {}).get("Status")
        if status not in ("running", "paused"):
            raise FailedPrecondition(f"vm {parent!r} is {status}: instant clone needs a running parent")
        cached = self._snapshots.get(parent)
        if cached and not fresh:
            return cached
        taken = self.docker.images.list(filters=self._filters(f"{L_SNAPSHOT_OF}={parent}"))
        n = 0
        # The cluster's own tags: another cluster's `vm-1` snapshots must never be this one's.
        tag_prefix = f"{cluster_part(self.cfg.cluster_id)}-{parent}-"
        prefix = f"{self.cfg.snapshot_repo}:{tag_prefix}"
        for img in taken:
            for tag in img.tags:
                if tag.startswith(prefix) and tag[len(prefix):].isdigit():
                    n = max(n, int(tag[len(prefix):]))
        if n and not fresh:
            return f"{prefix}{n}"
        _refuse_key_on_disk(c)
        tag = f"{tag_prefix}{n + 1}"
        changes = [f'LABEL {k}="{v}"' for k, v in
                   self._labels({L_SNAPSHOT_OF: parent}).items()]
        self._commit_sync(parent, c, status, repository=self.cfg.snapshot_repo, tag=tag,
                          changes=changes, message=f"cowpod snapshot of {parent}")
        return f"{self.cfg.snapshot_repo}:{tag}"

    def _commit_sync(self, name: str, c: Container, status: str | None, **commit: Any) -> None:
        """`docker commit` of VM `name`'s container. A running VM is paused for it (its layer
        read while frozen: a consistent disk; a paused one is frozen already, and Docker
        refuses to pause it twice). Meanwhile lists report it running: that pause is ours
        and over in a moment, and a VM manager that saw it Paused would resume it mid-commit."""
        if status != "running":
            self.docker.api.commit(str(c.id), pause=False, **commit)
            return
        self._quiescing.add(name)
        try:
            self.docker.api.commit(str(c.id), pause=True, **commit)
        finally:
            self._quiescing.discard(name)

    async def _snapshot(self, parent: str, fresh: bool = False) -> str:
        async with self._lock(f"snapshot/{parent}"):
            ref = await self._run(self._snapshot_sync, parent, fresh)
            if self._snapshots.get(parent) != ref:
                self._snapshots[parent] = ref
                # Shells of an older quiesce point are not this parent's any more.
                self._pools.pop(parent, None)
            return ref

    # ---- warm shells --------------------------------------------------------

    def _shell_labels(self, parent: str, snapshot: str, cpu: int, mem: int) -> dict[str, str]:
        labels = dict.fromkeys(_VM_LABEL_KEYS, "")
        labels.update(self._labels({
            L_PARENT: parent, L_SNAPSHOT: snapshot, L_CLONE_KIND: CloneKind.INSTANT.value,
            L_SHELL_OF: parent, L_CPU: str(cpu), L_MEMORY: str(mem),
        }))
        return labels

    def _create_shell_sync(self, parent: str, snapshot: str, cpu: int, mem: int, pooled: bool) -> str:
        """Create and start a warm shell: a child container without an identity,
        its init taking signals (ready to be taken)."""
        suffix = uuid.uuid4().hex[:10]
        # The snapshot's config carries the parent's env (committed with it): blank
        # the identity so the init neither adopts the parent's nor starts an agent.
        env = {"COWPOD_VM_NAME": "", "COWPOD_MACHINE_ID": "", "COWPOD_AGENT_ARGV": "",
               "COWPOD_AGENT_START": "wait", "COWPOD_STOP_GRACE": str(max(1, self.cfg.stop_timeout - 2)),
               "COWPOD_CLUSTER_ID": self.cfg.cluster_id}
        try:
            c: Container = self.docker.containers.run(
                snapshot,
                detach=True,
                name=f"{self.cfg.shell_prefix}{parent}-{suffix}",
                hostname=f"shell-{suffix}",
                labels=self._shell_labels(parent, snapshot, cpu, mem),
                environment=env,
                # Quota rather than nano_cpus: `docker update` can change a quota.
                cpu_period=_CPU_PERIOD,
                cpu_quota=cpu * _CPU_PERIOD // 1000,
                mem_limit=mem,
                memswap_limit=mem,
                **self._vm_container_kwargs(),
            )
        except docker.errors.ImageNotFound:
            raise FailedPrecondition(f"snapshot {snapshot!r} of {parent!r} is gone") from None
        c.reload()
        _wait_init(int(c.attrs.get("State", {}).get("Pid") or 0))
        if pooled and self.cfg.pool_paused:
            c.pause()
        return str(c.id)

    def _adopt_sync(
        self, shell_id: str, spec: VMSpecInfo, machine_id: str, argv: Sequence[str], env: Mapping[str, str],
    ) -> Container:
        """Make a shell the VM `spec`: size, identity, then the name (the commit point)."""
        c = self.docker.containers.get(shell_id)
        st = c.attrs.get("State", {})
        if st.get("Paused"):
            c.unpause()
        elif st.get("Status") != "running":
            raise NotFound(f"shell {c.name} is {st.get('Status')}")
        labels = c.labels
        if (labels.get(L_CPU), labels.get(L_MEMORY)) != (str(spec.cpu_millis), str(spec.memory_bytes)):
            self.docker.api.update_container(
                shell_id, cpu_period=_CPU_PERIOD, cpu_quota=spec.cpu_millis * _CPU_PERIOD // 1000,
                mem_limit=spec.memory_bytes, memswap_limit=spec.memory_bytes)
        write_record(self.cfg.data_dir, shell_id, IdentityRecord(
            name=spec.name, class_name=spec.class_name, cpu_millis=spec.cpu_millis,
            memory_bytes=spec.memory_bytes, machine_id=machine_id, template=spec.template,
            taken_at=time.time()))
        pid = int(st.get("Pid") or 0)
        give_identity(pid, spec.name, machine_id, identity_json(spec.name, argv, env))
        rewrite_host_files(str(c.attrs.get("HostnamePath") or ""), str(c.attrs.get("HostsPath") or ""),
                           str(c.attrs.get("Config", {}).get("Hostname", "")), spec.name)
        try:
            self.docker.api.rename(shell_id, container_name(self.cfg, spec.name))
        except docker.errors.APIError as err:
            if err.status_code == 409:
                raise self._name_taken_sync(spec.name) from None
            raise
        c.reload()
        return c

    def _idle_shells_sync(self, parent: str, snapshot: str) -> builtins.list[str]:
        """Idle shells of `parent` from `snapshot` that Docker has (after a restart)."""
        cs = self.docker.containers.list(
            filters=self._filters(f"{L_SHELL_OF}={parent}", f"{L_SNAPSHOT}={snapshot}"), ignore_removed=True)
        return [str(c.id) for c in cs if str(c.name).startswith(self.cfg.shell_prefix)]

    async def _pool(self, parent: str, snapshot: str) -> collections.deque[str]:
        pool = self._pools.get(parent)
        if pool is None:
            pool = collections.deque(await self._run(self._idle_shells_sync, parent, snapshot))
            self._pools[parent] = pool
        return pool

    def _kick_refill(self, parent: str, snapshot: str) -> None:
        if self.pool_size <= 0 or parent in self._stopping:
            return
        t = self._refills.get(parent)
        if t is not None and not t.done():
            poke = self._pokes.get(parent)
            if poke is not None:
                poke.set()  # a task waiting to shrink the pool: refill first
            return
        self._refills[parent] = self._tasks.spawn(self._refill(parent, snapshot), f"refill/{parent}")

    async def _refill(self, parent: str, snapshot: str) -> None:
        """Fill the parent's pool up to its target (`pool_target`: the biggest recent
        burst, at least `pool_size`), one shell at a time (a stop request is honoured
        between shells, never in the middle of one, so no container is left half
        made); then, while the target is above `pool_size`, wait for it to drop and
        remove the shells above it."""
        prepare = getattr(self.warm_start, "prepare", None)
        if prepare is not None:
            try:
                await prepare(container_name(self.cfg, parent))
            except Exception:
                log.exception("starting the zygote of %s failed (clones start cold)", parent)
        failures = 0
        while parent not in self._stopping and self._snapshots.get(parent) == snapshot:
            await self._refill_quiet(parent)
            now = time.monotonic()
            self._sizer.quiet(parent, now)
            try:
                pool = await self._pool(parent, snapshot)
                target = self._sizer.target(parent, self.pool_size, now)
                if len(pool) >= target:
                    await self._shrink(parent, pool, target)
                    shrink_at = self._sizer.shrink_at(parent, self.pool_size, now)
                    if shrink_at is None:
                        return
                    await self._wait_to_shrink(parent, shrink_at - now)
                    continue
                cpu, mem = self._shell_size.get(parent, (1000, 1 << 30))
                pool.append(await asyncio.shield(
                    self._run(self._create_shell_sync, parent, snapshot, cpu, mem, True)))
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                # A busy engine can fail a create: retry a few times, briefly (a
                # stop request waits for this task), then leave it to the next take.
                failures += 1
                log.exception("making a shell for %s failed (%d in a row)", parent, failures)
                if failures >= 3:
                    return
                await asyncio.sleep(0.5 * failures)

    async def _refill_quiet(self, parent: str) -> None:
        """Wait until no clone of `parent` began or ended for `refill_quiet_s`
        and none is in the making (a clone's own container, made when the pool
        ran dry, takes longest in a burst: a refill must not compete with it)."""
        self._refill_waiting.add(parent)
        try:
            while True:
                # A deadline that moves with every clone: re-read after each sleep.
                wait = self._last_take.get(parent, -1e9) + self.cfg.refill_quiet_s - time.monotonic()
                if wait <= 0 and not self._cloning[parent]:
                    return
                await asyncio.sleep(wait if wait > 0 else self.cfg.refill_quiet_s)
        finally:
            self._refill_waiting.discard(parent)

    async def _shrink(self, parent: str, pool: collections.deque[str], target: int) -> None:
        """Remove the newest idle shells above `target` (taken off the pool first, so
        no clone takes one being removed)."""
        extra = [pool.pop() for _ in range(len(pool) - target)]
        for sid in extra:
            await asyncio.shield(self._run(self._remove_shell_sync, sid))
        if extra:
            log.info("pool of %s shrunk to %d shells (no burst that big for %.0f s)",
                     parent, target, self.cfg.pool_memory_s)

    async def _wait_to_shrink(self, parent: str, seconds: float) -> None:
        """Sleep until the pool's target may drop, or until a clone of `parent` is
        asked for (`_kick_refill` pokes). Cancellable: nothing is in the making."""
        poke = self._pokes.setdefault(parent, asyncio.Event())
        poke.clear()
        self._refill_waiting.add(parent)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(poke.wait(), max(seconds, 0.0))
        finally:
            self._refill_waiting.discard(parent)

    def pool_target(self, parent: str) -> int:
        """Shells `parent`'s pool is (re)filled to now (for the bench and tests)."""
        return self._sizer.target(parent, self.pool_size, time.monotonic())

    async def _stop_pool(self, parent: str) -> None:
        """Stop refilling `parent`'s pool and wait for the shell being made."""
        self._stopping.add(parent)
        t = self._refills.pop(parent, None)
        if t is not None:
            if parent in self._refill_waiting:
                t.cancel()  # only waiting for quiet: nothing half made
            await asyncio.wait({t})
            if not t.cancelled():
                t.exception()  # retrieved: a failed refill was logged where it failed
        self._pools.pop(parent, None)

    async def _take_shell(
        self, parent: str, snapshot: str, spec: VMSpecInfo, machine_id: str, argv: Sequence[str],
        env: Mapping[str, str],
    ) -> Container | None:
        """Make an idle shell of `parent`'s pool the VM `spec`; None when the pool is empty."""
        pool = await self._pool(parent, snapshot)
        self._last_take[parent] = time.monotonic()
        while pool:
            sid = pool.popleft()
            try:
                return await self._run(self._adopt_sync, sid, spec, machine_id, argv, env)
            except NotFound:
                continue  # a pooled shell died or was removed meanwhile: next one
            except BaseException:
                await self._run(self._remove_shell_sync, sid)
                raise
        return None

    def _create_child_sync(
        self, parent: str, snapshot: str, spec: VMSpecInfo, env: Mapping[str, str], machine_id: str,
        attach_later: bool,
    ) -> tuple[str, int]:
        """Create and start the child's own container from the parent's snapshot
        (no warm shell was ready). It is the child from the start — its name,
        hostname, labels and environment —, so nothing is adopted afterwards: no
        rename, no identity record, no exec into it.

        `attach_later` starts it off the VM network (created on it, disconnected
        before the start; Docker keeps the network in its config, so a restart
        re-attaches it): on a user-defined network Docker's start also sets up the
        container's DNS resolver and IPv6 (two re-execs of dockerd and a dozen
        iptables runs), a third of the start. The caller attaches it
        (`_attach_network_sync`) while the agent is forked in. Returns the
        container id and its init's host pid."""
        try:
            c: Container = self.docker.containers.create(
                snapshot,
                name=container_name(self.cfg, spec.name),
                hostname=spec.name,
                labels=self._vm_labels(spec, CloneKind.INSTANT, parent, snapshot, machine_id),
                environment=dict(env),
                nano_cpus=spec.cpu_millis * 1_000_000,
                mem_limit=spec.memory_bytes,
                memswap_limit=spec.memory_bytes,
                **self._vm_container_kwargs(),
            )
        except docker.errors.ImageNotFound:
            raise FailedPrecondition(f"snapshot {snapshot!r} of {parent!r} is gone") from None
        except docker.errors.APIError as err:
            if err.status_code == 409:
                raise self._name_taken_sync(spec.name) from None
            raise
        try:
            if attach_later:
                self.docker.api.disconnect_container_from_network(str(c.id), self.cfg.network)
            self.docker.api.start(str(c.id))
            # Before the attach: an inspect waits for Docker's lock on the container.
            pid = int(self.docker.api.inspect_container(str(c.id)).get("State", {}).get("Pid") or 0)
        except BaseException:
            _ignore_gone(functools.partial(c.remove, force=True, v=True))
            raise
        return str(c.id), pid

    def _attach_network_sync(self, container_id: str) -> None:
        self.docker.api.connect_container_to_network(container_id, self.cfg.network)

    async def prepare_parent(self, parent: str) -> None:
        """Quiesce `parent` now (its snapshot) and fill its pool in the background:
        the first instant clone then finds a shell ready."""
        snapshot = await self._snapshot(parent)
        self._stopping.discard(parent)
        info = await self.get(parent)
        self._shell_size.setdefault(parent, (info.cpu_millis or 1000, info.memory_bytes or 1 << 30))
        self._kick_refill(parent, snapshot)

    def idle_shells(self, parent: str) -> int:
        """Shells ready in `parent`'s pool (as this provider knows; for the bench and tests)."""
        return len(self._pools.get(parent, ()))

    async def drain_pool(self, parent: str) -> None:
        """Stop refilling `parent`'s pool and remove its idle shells (`prepare_parent` refills);
        the bursts seen are forgotten."""
        await self._stop_pool(parent)
        self._sizer.forget(parent)
        await self._run(self._remove_shells_sync, parent)

    async def requiesce(self, parent: str) -> str:
        """Take a new quiesce point of `parent` (after it changed on purpose):
        later children fork from now; idle shells of the old point are removed
        and the pool refilled. Children already made keep their snapshot."""
        await self._stop_pool(parent)
        snapshot = await self._snapshot(parent, fresh=True)
        await self._run(self._remove_shells_sync, parent)
        self._stopping.discard(parent)
        self._kick_refill(parent, snapshot)
        return snapshot

    def _remove_shells_sync(self, parent: str) -> None:
        """Remove the idle shells of `parent` (taken ones are VMs: not touched)."""
        cs = self.docker.containers.list(all=True, filters=self._filters(f"{L_SHELL_OF}={parent}"),
                                         ignore_removed=True)
        for c in cs:
            if str(c.name).startswith(self.cfg.shell_prefix):
                _ignore_gone(functools.partial(c.remove, force=True, v=True))

    def _collect_garbage_sync(self) -> builtins.list[str]:
        """Idle shells whose parent is gone or not running, and identity records
        of containers that are gone. Returns the shells removed."""
        cs = self.docker.containers.list(all=True, filters=self._filters(L_VM), ignore_removed=True)
        live = {self._vm_name_of(c) for c in cs if c.status in ("running", "paused")}
        removed = []
        for c in cs:
            parent = c.labels.get(L_SHELL_OF, "")
            if parent and str(c.name).startswith(self.cfg.shell_prefix) and parent not in live:
                _ignore_gone(functools.partial(c.remove, force=True, v=True))
                removed.append(str(c.name))
        ids = {str(c.id) for c in cs}
        records = self.cfg.data_dir / "vms"
        if records.is_dir():
            for f in records.glob("*.json"):
                if f.stem not in ids:
                    f.unlink(missing_ok=True)
        return removed

    async def collect_garbage(self) -> builtins.list[str]:
        """Run at manager start: shells left by a parent that vanished (a crash
        between a parent's destroy and its shells') would otherwise live forever."""
        removed = await self._run(self._collect_garbage_sync)
        if removed:
            log.info("removed %d orphan shells: %s", len(removed), ", ".join(removed))
        return removed

    async def instant_clone(self, parent: str, child: VMSpecInfo, guest: GuestBootstrap) -> VMInfo:
        validate_spec(child)
        if child.name == parent:
            raise Invalid("metadata.name", "a child cannot have its parent's name")
        await self._ensure_network()
        # No "does the child exist?" lookup here: the rename that names a shell, or
        # the create of the child's own container, fails with AlreadyExists.
        snapshot = await self._snapshot(parent)
        self._stopping.discard(parent)
        self._shell_size[parent] = (child.cpu_millis, child.memory_bytes)
        machine_id = guest.machine_id
        argv = guest.agent_argv(IN_VM_RUN_DIR)
        env = {**self._env(child, machine_id, argv, "wait"), "COWPOD_PARENT_VM": parent,
               PARENT_CONTAINER_ENV: container_name(self.cfg, parent)}
        if self.pool_size > 0:
            self._sizer.asked(parent)
        self._cloning[parent] += 1
        try:
            return await self._instant_clone(parent, snapshot, child, machine_id, argv, env)
        finally:
            self._cloning[parent] -= 1
            self._last_take[parent] = time.monotonic()

    async def _instant_clone(
        self, parent: str, snapshot: str, child: VMSpecInfo, machine_id: str, argv: Sequence[str],
        env: Mapping[str, str],
    ) -> VMInfo:
        cname = container_name(self.cfg, child.name)
        async with self._lock(child.name):
            made = await self._take_shell(parent, snapshot, child, machine_id, argv, env)
            if made is None:
                # No shell ready: the child's own container. Without a warm-start hook
                # its init adopts the identity and starts the agent cold at once.
                warm = self.warm_start is not None
                own_env = env if warm else self._env(child, machine_id, argv, "now")
                cid, pid = await self._run(self._create_child_sync, parent, snapshot, child, own_env,
                                           machine_id, warm)
                self._making.add(cid)
        try:
            return await self._start_child(parent, snapshot, child, argv, env, cname, made,
                                           cid if made is None else "", pid if made is None else 0)
        finally:
            if made is None:
                self._making.discard(cid)

    async def _start_child(
        self, parent: str, snapshot: str, child: VMSpecInfo, argv: Sequence[str], env: Mapping[str, str],
        cname: str, made: Container | None, cid: str, pid: int,
    ) -> VMInfo:
        self._kick_refill(parent, snapshot)
        if made is not None:
            pid = int(made.attrs.get("State", {}).get("Pid") or 0)
            await self._start_agent(child.name, cname, argv, env, pid)
            log.info("instant clone %s from %s (%s, pooled shell)", child.name, parent, snapshot)
            # A new child has no children and no own image: its inspect after the
            # rename is all there is to say (saves the three lookups of get()).
            return self._info(made, [], False)
        if self.warm_start is not None:
            # The network attach and the agent's fork are independent: do them at
            # once. The forked agent waits for the address before it registers
            # (vm_agent.py); a cold fallback starts only once the network is there.
            attached, forked = await asyncio.gather(
                self._run(self._attach_network_sync, cid),
                self._warm_start(cname, argv, {**env, NETWORK_PENDING_ENV: "1"}, pid),
                return_exceptions=True,
            )
            if isinstance(attached, BaseException):
                await self._run(self._remove_shell_sync, cid)
                if isinstance(attached, docker.errors.NotFound):
                    raise FailedPrecondition(f"vm {child.name!r} vanished while being cloned") from None
                raise attached
            if forked is not True:
                await self._run(self._wait_init_sync, child.name)
                await self._run(self._signal_sync, child.name, "SIGUSR1")
        log.info("instant clone %s from %s (%s, own container)", child.name, parent, snapshot)
        return self._info(await self._run(self.docker.containers.get, cid), [], False)

    async def _warm_start(self, cname: str, argv: Sequence[str], env: Mapping[str, str], pid: int) -> bool:
        """Fork the agent in through the warm-start hook; False (logged) if it failed."""
        if self.warm_start is None:
            return False
        try:
            await self.warm_start(cname, argv, env, init_pid=pid)
        except Exception:
            log.exception("warm start of %s failed; starting its agent cold", cname)
            return False
        return True

    async def _start_agent(
        self, name: str, cname: str, argv: Sequence[str], env: Mapping[str, str], pid: int
    ) -> None:
        """Start the agent of a VM whose init waits: forked warm, else cold by the init (SIGUSR1)."""
        if await self._warm_start(cname, argv, env, pid):
            return
        if self.warm_start is not None:
            await self._run(self._wait_init_sync, name)
        # The init reads the identity and starts the agent cold.
        await self._run(self._signal_sync, name, "SIGUSR1")

    def _remove_shell_sync(self, shell_id: str) -> None:
        _ignore_gone(functools.partial(self._remove_container_sync, shell_id))
        remove_record(self.cfg.data_dir, shell_id)

    def _signal_sync(self, name: str, sig: str) -> None:
        self._find_sync(name).kill(signal=sig)

    def _wait_init_sync(self, name: str, timeout: float = 15.0) -> None:
        c = self._find_sync(name)
        if c.status == "running":
            _wait_init(int(c.attrs.get("State", {}).get("Pid") or 0), timeout)

    def _snap_free_sync(self, name: str) -> None:
        c = self._find_sync(name)
        if c.labels.get(L_CLONE_KIND) != CloneKind.INSTANT.value:
            return
        if self.docker.images.list(filters=self._filters(f"{L_OWN_OF}={name}")):
            return
        status = c.attrs.get("State", {}).get("Status")
        _refuse_key_on_disk(c)
        changes = [f'LABEL {k}="{v}"' for k, v in self._labels({L_OWN_OF: name, L_SNAPSHOT_OF: ""}).items()]
        self._commit_sync(name, c, status, repository=self.cfg.own_repo, tag=self._own_tag(name),
                          changes=changes, message=f"cowpod: {name} snapped free")

    def _own_tag(self, name: str) -> str:
        """The tag of a snapped-free VM's image: the cluster's, as snapshot tags are (two
        clusters' `vm-2` must not take each other's tag)."""
        return f"{cluster_part(self.cfg.cluster_id)}-{name}"

    async def snap_free(self, name: str) -> VMInfo:
        async with self._lock(name):
            await self._run(self._snap_free_sync, name)
        return await self.get(name)

    async def pause(self, name: str) -> VMInfo:
        def go() -> None:
            c = self._find_sync(name)
            if c.attrs.get("State", {}).get("Paused"):
                return
            if c.status != "running":
                raise FailedPrecondition(f"vm {name!r} is {c.status}: only a running VM can be paused")
            c.pause()
        await self._run(go)
        return await self.get(name)

    async def resume(self, name: str) -> VMInfo:
        def go() -> None:
            c = self._find_sync(name)
            if c.attrs.get("State", {}).get("Paused"):
                c.unpause()
            elif c.status != "running":
                raise FailedPrecondition(f"vm {name!r} is {c.status}: only a paused VM can be resumed")
        await self._run(go)
        return await self.get(name)

    def _nested_sync(self, name: str) -> builtins.list[Container]:
        # Pods' containers carry no cluster label: the node name is what ties them.
        return list(self.docker.containers.list(
            all=True, filters={"label": [f"{L_NODE}={name}"]}, ignore_removed=True
        ))

    def _power_off_sync(self, name: str) -> None:
        c = self._find_sync(name)
        # A powered-off VM runs nothing: its pods stop with it.
        for p in self._nested_sync(name):
            _ignore_gone(p.kill)
        if c.attrs.get("State", {}).get("Paused"):
            c.unpause()
        self._wait_init_sync(name)
        c.stop(timeout=self.cfg.stop_timeout)

    async def power_off(self, name: str) -> VMInfo:
        await self._run(self._power_off_sync, name)
        return await self.get(name)

    def _remove_image_sync(self, ref: str) -> bool:
        """Remove an image unless a container still uses it; True if it is gone."""
        try:
            self.docker.images.remove(ref, noprune=False)
        except docker.errors.ImageNotFound:
            return True
        except docker.errors.APIError as err:
            if err.status_code == 409:
                return False
            raise
        return True

    def _remove_container_sync(self, cname: str) -> None:
        self.docker.containers.get(cname).remove(force=True, v=True)

    def _kill_container_sync(self, cname: str) -> None:
        c = self.docker.containers.get(cname)
        state = c.attrs.get("State", {})
        if state.get("Paused"):
            c.unpause()
        if state.get("Running"):
            c.kill()
            c.wait(timeout=10)

    def _destroy_sync(self, name: str, cascade: bool) -> builtins.list[str]:
        """Destroy one VM; returns the unsnapped children that block it (if not cascade)."""
        try:
            info = self._get_sync(name)
        except NotFound:
            info = None
        if info is not None:
            owned = self._owned_sync()
            blocking = [k for k in info.children if k not in owned]
            if blocking and not cascade:
                return blocking
            for kid in blocking:
                self._destroy_sync(kid, cascade=True)
        # Stop the VM first so its agent cannot restart the pods we remove,
        # then the pods (killing the VM container does not stop them), then the VM.
        if info is not None:
            _ignore_gone(functools.partial(self._kill_container_sync, container_name(self.cfg, name)))
        for p in self._nested_sync(name):
            _ignore_gone(functools.partial(p.remove, force=True, v=True))
        snapshot = ""
        if info is not None:
            snapshot = info.labels.get(L_SNAPSHOT, "")
            _ignore_gone(functools.partial(self._remove_container_sync, container_name(self.cfg, name)))
            remove_record(self.cfg.data_dir, info.provider_id.removeprefix("docker://"))
        # Its idle shells go with it (a parent's pool).
        self._remove_shells_sync(name)
        # Images: the VM's own record, its snapshots no child uses, and the
        # snapshot it was cloned from if nothing else uses it now — unless that
        # is its parent's current quiesce point, kept for the next child.
        refs = [f"{self.cfg.own_repo}:{self._own_tag(name)}"]
        for img in self.docker.images.list(filters=self._filters(f"{L_SNAPSHOT_OF}={name}")):
            refs.extend(img.tags or [str(img.id)])
        parent = info.parent if info is not None else ""
        current = bool(parent) and self._snapshots.get(parent) == snapshot and self._parent_alive(parent)
        if snapshot and not current:
            refs.append(snapshot)
        for ref in refs:
            self._remove_image_sync(ref)
        return []

    def _parent_alive(self, parent: str) -> bool:
        try:
            self._find_sync(parent)
        except NotFound:
            return False
        return True

    async def destroy(self, name: str, *, cascade: bool = False) -> None:
        # No shell may be in the making while the parent's shells are removed.
        await self._stop_pool(name)
        async with self._lock(name):
            blocking = await self._run(self._destroy_sync, name, cascade)
        if blocking:
            self._stopping.discard(name)
            raise FailedPrecondition(
                f"vm {name!r} has children that are not snapped free: {', '.join(sorted(blocking))}"
                " (snap them free first, or destroy with cascade)"
            )
        self._snapshots.pop(name, None)
        self._sizer.forget(name)
        self._pokes.pop(name, None)
        # A cascade took descendants with it: their pools stop too, and any shell
        # made meanwhile goes.
        for parent in [p for p in builtins.list(self._refills) if p != name]:
            if not await self._run(self._parent_alive, parent):
                await self._stop_pool(parent)
                self._snapshots.pop(parent, None)
                await self._run(self._remove_shells_sync, parent)
        log.info("destroyed vm %s", name)

    # ---- extras for the manager and tests ---------------------------------

    async def nested_containers(self, name: str) -> builtins.list[str]:
        """Names of the containers running on the VM's node (its pods)."""
        return [str(c.name) for c in await self._run(self._nested_sync, name)]

    async def snapshot_images(self) -> builtins.list[str]:
        """Every snapshot/own image tag of this cluster (for tests and `cowpod vm images`)."""
        def go() -> builtins.list[str]:
            tags: builtins.list[str] = []
            for lbl in (L_SNAPSHOT_OF, L_OWN_OF):
                for img in self.docker.images.list(filters=self._filters(lbl)):
                    tags.extend(img.tags)
            return sorted(set(tags))
        return await self._run(go)


def _refuse_key_on_disk(c: Container) -> None:
    """Refuse to commit a VM whose node key would be in the image: one created
    without the key tmpfs (by a cowpod before it had one)."""
    tmpfs = c.attrs.get("HostConfig", {}).get("Tmpfs") or {}
    if any(path not in tmpfs for path in _KEY_TMPFS):
        raise FailedPrecondition(
            f"vm container {c.name} keeps its node key on its disk (it predates the key tmpfs): "
            "a snapshot of it would hold the key; recreate the VM to clone it")


def _wait_init(pid: int, timeout: float = 15.0) -> None:
    """Wait until the VM's init (host pid `pid`) takes its signals.

    PID 1 of a namespace ignores a signal it has no handler for, so a SIGTERM
    or SIGUSR1 sent while Python is still starting would be lost. The init
    installs a SIGUSR1 handler once it has blocked its signals for
    sigtimedwait, which /proc/<pid>/status shows in SigCgt. (SigBlk cannot
    tell: the kernel unblocks the awaited signals while sigtimedwait sleeps.)
    Returns at once when /proc cannot tell (a remote engine, a VM gone)."""
    status = pathlib.Path(f"/proc/{pid}/status")
    deadline = time.monotonic() + timeout
    while pid and time.monotonic() < deadline:
        try:
            text = status.read_text()
        except OSError:
            return
        for line in text.splitlines():
            if line.startswith("SigCgt:") and int(line.split()[1], 16) & _SIGUSR1_BIT:
                return
        time.sleep(0.02)


def _ignore_gone(fn: Callable[[], object]) -> None:
    try:
        fn()
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as err:
        # 409: removal already in progress.
        if err.status_code != 409:
            raise
