"""The local cluster behind `cowpod up`, `down` and `status`.

    up:    etcd (1 member, or --etcd-members 3) ──► controller ──► scheduler ──► VMs ──► nodes Ready
    down:  destroy VMs (VMService.Destroy) ──► scheduler ──► controller ──► etcd ──► Docker sweep

Components are child processes, each in its own session (so a Ctrl-C in the
terminal reaches only the supervisor, which then stops them in order, VMs
first), logging to `<data-dir>/logs/<name>.log`. What was started is written
to `<data-dir>/cluster.json` after each step, so `down` can clean up after a
crashed `up` too. Pids are only ever signalled after checking that their
command line is the one we started (see `process`).

The pure parts (paths, command lines, prerequisites) are functions; the
`Supervisor` class does the I/O, with its clock and output injected.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cowpod.auth.config import (
    ENV_CONFIG,
    LOCAL_CONTEXT,
    ConfigError,
    default_config_path,
    remove_local_context,
    write_local_context,
)
from cowpod.auth.credentials import connect
from cowpod.clock import Clock
from cowpod.errors import CowpodError
from cowpod.local import fleet, health, process, secrets_encryption
from cowpod.local.etcd import EtcdMember, etcd_binary, free_port
from cowpod.local.state import (
    ClusterState,
    ComponentState,
    connection_for,
    read_state,
    remove_state,
    write_state,
)
from cowpod.pki import ClusterPKI, TLSFiles, write_join_bundle
from cowpod.tasks import TaskSupervisor
from hypervisor import registry
from hypervisor.provider import ControllerAddress, ProviderContext, SweepsLeftovers

DEFAULT_LISTEN = "127.0.0.1:7070"
# "none" (no VM manager) or a provider of hypervisor.registry.
PROVIDERS = ("none", *registry.USER_PROVIDERS)
# Member counts `--etcd-members` accepts: a majority of an odd count survives one (or two) losses.
ETCD_MEMBER_COUNTS = (1, 3, 5)
ETCD_MEMBERS_FILE = "etcd-members.json"
# The user config (cowpod.auth.config) lives in ~/.cowpod too; purging a cluster keeps it
# (less the cluster's own `local` context).
KEEP_ON_PURGE = frozenset({"config"})
# sun_path is 108 bytes including the terminating NUL.
MAX_UNIX_PATH = 107


class SupervisorError(Exception):
    """`up`/`down` cannot go on; the message says why and where to look."""


@dataclass(frozen=True)
class Layout:
    """Where a cluster keeps things under its data dir."""

    data_dir: pathlib.Path

    @property
    def etcd_dir(self) -> pathlib.Path:
        return self.data_dir / "etcd"

    @property
    def logs_dir(self) -> pathlib.Path:
        return self.data_dir / "logs"

    @property
    def run_dir(self) -> pathlib.Path:
        return self.data_dir / "run"

    @property
    def controller_socket(self) -> pathlib.Path:
        return self.run_dir / "controller.sock"

    @property
    def pki(self) -> ClusterPKI:
        return ClusterPKI.of(self.data_dir)

    def log(self, component: str) -> pathlib.Path:
        return self.logs_dir / f"{component}.log"

    def etcd_member_dir(self, name: str) -> pathlib.Path:
        """The single member keeps `<data>/etcd`; members of a cluster `<data>/etcd-<i>`."""
        return self.etcd_dir if name == "etcd" else self.data_dir / name

    @property
    def etcd_members_file(self) -> pathlib.Path:
        return self.data_dir / ETCD_MEMBERS_FILE

    @property
    def encryption_config(self) -> pathlib.Path:
        """Made by `up --secrets-encryption`; while it exists the controller always gets it."""
        return self.data_dir / secrets_encryption.FILE_NAME


@dataclass(frozen=True)
class UpOptions:
    listen: str = DEFAULT_LISTEN
    provider: str = "docker"
    # The provider's settings as its plugin parsed them (None = its defaults).
    provider_settings: Any = None
    vms: int = 0
    vm_cpu_millis: int = 1000
    vm_memory_bytes: int = 1 << 30
    detach: bool = False
    timeout: float = 300.0
    retain: bool = False
    # TLS with client certificates everywhere (cowpod.pki), the default; `cowpod up --insecure`
    # serves plaintext on loopback with no authentication.
    secure: bool = True
    # A cluster config file (cowpod.clusterconfig): the provider's settings, and the
    # autoscaler's VM classes when it has any (`autoscale`).
    cluster_config: str = ""
    autoscale: bool = False
    # etcd members started locally: 1 (the default) or a 3/5-member cluster on loopback ports.
    etcd_members: int = 1
    # docker provider: shells kept ready per warm parent (the controller's --warm-shells);
    # None = the provider's setting.
    warm_shells: int | None = None
    # Encrypt Secrets in etcd with a key made once in the data dir (cowpod.local.secrets_encryption).
    secrets_encryption: bool = False


# --- pure parts ---------------------------------------------------------------------------------


def find_executable(name: str) -> str:
    """A console script of this installation: next to our Python first, then PATH."""
    beside = pathlib.Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise SupervisorError(f"{name} not found next to {sys.executable} or on PATH; is cowpod installed?")
    return found


def controller_command(
    exe: str,
    *,
    listen: str,
    socket_path: pathlib.Path,
    etcd: str,
    provider: str,
    data_dir: pathlib.Path,
    pki_dir: pathlib.Path | None = None,
    cluster_config: str = "",
    autoscale: bool = False,
    warm_shells: int | None = None,
    etcd_tls: TLSFiles | None = None,
    encryption_config: pathlib.Path | None = None,
) -> list[str]:
    """`pki_dir` None = `--insecure`, said explicitly: the controller would otherwise
    turn secure by itself when it finds `<data-dir>/pki` from an earlier secure run.
    `etcd_tls`: the controller's etcd client certificate (etcd requires one)."""
    security = ["--pki-dir", str(pki_dir)] if pki_dir is not None else ["--insecure"]
    if etcd_tls is not None:
        security += ["--etcd-cafile", str(etcd_tls.ca), "--etcd-certfile", str(etcd_tls.cert),
                     "--etcd-keyfile", str(etcd_tls.key)]
    return [
        exe,
        *("--listen", listen),
        *("--listen-unix", str(socket_path)),
        *("--etcd", etcd),
        *("--provider", provider),
        *("--data-dir", str(data_dir)),
        *security,
        *(("--cluster-config", cluster_config) if cluster_config else ()),
        *(("--autoscale",) if autoscale else ()),
        *(("--warm-shells", str(warm_shells)) if warm_shells is not None else ()),
        *(("--encryption-config", str(encryption_config)) if encryption_config is not None else ()),
    ]


def scheduler_env(pki: ClusterPKI | None) -> dict[str, str]:
    """The scheduler's credentials, the way cowpod.auth.flags reads them (no flags needed)."""
    if pki is None:
        return {"COWPOD_INSECURE": "1"}
    return {
        "COWPOD_CA_FILE": str(pki.ca_cert),
        "COWPOD_CERT_FILE": str(pki.cert("scheduler")),
        "COWPOD_KEY_FILE": str(pki.key("scheduler")),
    }


def scheduler_command(exe: str, *, controller: str, metrics: str) -> list[str]:
    return [exe, "--controller", controller, "--metrics-listen", metrics]


def etcd_member_names(n: int) -> list[str]:
    """Component names: `etcd` for the single member (as before), `etcd-0..` for a cluster."""
    return ["etcd"] if n == 1 else [f"etcd-{i}" for i in range(n)]


def etcd_cluster(
    layout: Layout, n: int, saved: Mapping[str, tuple[int, int]] | None = None, *,
    tls: TLSFiles | None = None,
) -> list[EtcdMember]:
    """The members of an `n`-member local etcd cluster, each with its data dir, log and
    ports. `saved` (name -> (client, peer) port) are the ports of an earlier run: a
    member's data remembers its peers' URLs, so a restarted cluster must use them again."""
    saved = saved or {}
    members = []
    for name in etcd_member_names(n):
        m = EtcdMember(data_dir=layout.etcd_member_dir(name), name=name, log_path=layout.log(name), tls=tls)
        if name in saved:
            m.client_port, m.peer_port = saved[name]
        members.append(m)
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    for m in members:
        m.initial_cluster = initial
    return members


def read_etcd_ports(layout: Layout) -> dict[str, tuple[int, int]]:
    """Ports recorded by an earlier `up --etcd-members N` whose members' data is still there."""
    try:
        raw = json.loads(layout.etcd_members_file.read_text())
        ports = {str(k): (int(v["client"]), int(v["peer"])) for k, v in raw.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {k: v for k, v in ports.items() if (layout.etcd_member_dir(k) / "member").exists()}


def write_etcd_ports(layout: Layout, members: list[EtcdMember]) -> None:
    data = {m.name: {"client": m.client_port, "peer": m.peer_port} for m in members}
    layout.etcd_members_file.write_text(json.dumps(data, indent=2) + "\n")


# Health kind of an etcd member that requires client certificates: probed over TLS with
# the controller's etcd certificate (a plain probe would be refused).
ETCD_TLS_HEALTH = "etcd-tls"


def etcd_health(member: EtcdMember) -> str:
    return ETCD_TLS_HEALTH if member.tls is not None else "etcd"


def etcd_components(state: ClusterState) -> list[ComponentState]:
    return [c for c in state.components if c.name == "etcd" or c.name.startswith("etcd-")]


def new_cluster_id() -> str:
    return "cp-" + uuid.uuid4().hex[:10]


def parse_listen(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SupervisorError(f'--listen must be HOST:PORT, e.g. 127.0.0.1:7070 (got "{address}")')
    return host, int(port)


def port_in_use(address: str) -> bool:
    """Is something listening on `address` (so a server could not listen there)?

    A listener answers a connect. Not a plain bind: after `cowpod down` the
    connections the old server closed first sit in TIME_WAIT on that port for
    a minute, and a bind without SO_REUSEADDR fails on them although nothing
    listens. The servers we start (gRPC, etcd) bind with SO_REUSEADDR, so the
    second check binds with it too: it still fails on a listener the connect
    cannot reach (e.g. one on another address of a wildcard), never on
    TIME_WAIT."""
    host, port = parse_listen(address)
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    with socket.socket(family) as s:
        s.settimeout(1.0)
        if s.connect_ex((target, port)) == 0:
            return True
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def check_prerequisites(opts: UpOptions, layout: Layout) -> dict[str, str]:
    """Everything `up` needs, checked before anything starts. Returns the executables."""
    if opts.provider not in PROVIDERS:
        raise SupervisorError(f'--provider must be one of {", ".join(PROVIDERS)} (got "{opts.provider}")')
    if opts.vms < 0:
        raise SupervisorError("--vms must be 0 or more")
    if opts.etcd_members not in ETCD_MEMBER_COUNTS:
        counts = ", ".join(map(str, ETCD_MEMBER_COUNTS))
        raise SupervisorError(f"--etcd-members must be one of {counts} (got {opts.etcd_members})")
    if opts.vms and opts.provider == "none":
        raise SupervisorError(f"--vms needs a VM provider: use --provider ({', '.join(PROVIDERS[1:])})")
    if opts.vms and (opts.vm_cpu_millis <= 0 or opts.vm_memory_bytes <= 0):
        raise SupervisorError("--vm-cpus and --vm-memory must be more than zero")
    parse_listen(opts.listen)
    if len(str(layout.controller_socket)) > MAX_UNIX_PATH:
        raise SupervisorError(
            f"the data dir path is too long for a unix socket ({layout.controller_socket}); "
            "use a shorter --data-dir"
        )
    try:
        exes = {"etcd": etcd_binary()}
    except FileNotFoundError as e:
        raise SupervisorError(str(e)) from None
    exes["controller"] = find_executable("cowpod-controller")
    exes["scheduler"] = find_executable("cowpod-scheduler")
    if port_in_use(opts.listen):
        raise SupervisorError(
            f"{opts.listen} is already in use (another cowpod cluster?); "
            "choose another address with --listen 127.0.0.1:PORT"
        )
    return exes


def last_log_line(path: pathlib.Path, limit: int = 240) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= limit else line[: limit - 3] + "..."


# --- status -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentHealth:
    name: str
    pid: int
    address: str
    alive: bool
    healthy: bool
    log: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "address": self.address,
            "alive": self.alive,
            "healthy": self.healthy,
            "log": self.log,
        }


@dataclass(frozen=True)
class StatusReport:
    data_dir: str
    controller: str
    cluster_id: str = ""
    provider: str = ""
    components: list[ComponentHealth] = field(default_factory=list)
    etcd: str = ""  # the endpoints the controller was given

    @property
    def running(self) -> bool:
        return bool(self.components) and any(c.alive for c in self.components)

    @property
    def healthy(self) -> bool:
        return bool(self.components) and all(c.healthy for c in self.components)

    def to_json(self) -> dict[str, Any]:
        return {
            "components": [c.to_json() for c in self.components],
            "dataDir": self.data_dir,
            "controller": self.controller,
            "clusterId": self.cluster_id,
            "provider": self.provider,
            "etcd": self.etcd,
            "running": self.running,
            "healthy": self.healthy,
        }


async def probe(component: ComponentState, state: ClusterState) -> ComponentHealth:
    alive = (
        process.is_ours(component.pid, component.command)
        if component.command
        else process.pid_alive(component.pid)
    )
    healthy = alive
    if alive and component.address:
        if component.health == "grpc":
            healthy = await health.grpc_ok(connection_for(state, component.address))
        elif component.health == "etcd":
            healthy = await health.etcd_ok(component.address)
        elif component.health == ETCD_TLS_HEALTH:
            etcd_client = ClusterPKI(pathlib.Path(state.pki_dir)).etcd.controller
            healthy = await health.etcd_ok(component.address, tls=etcd_client)
        elif component.health == "http":
            healthy = await health.http_ok(component.address)
    return ComponentHealth(component.name, component.pid, component.address, alive, healthy, component.log)


# --- the supervisor -----------------------------------------------------------------------------

Say = Callable[[str], None]


@dataclass
class _Child:
    state: ComponentState
    proc: subprocess.Popen[bytes] | None


class Supervisor:
    def __init__(
        self,
        layout: Layout,
        clock: Clock,
        *,
        say: Say,
        progress: Say,
        progress_done: Callable[[], None],
        env: Mapping[str, str],
    ) -> None:
        self.layout = layout
        self.clock = clock
        self.say = say
        self.progress = progress
        self.progress_done = progress_done
        self.env = env
        self._children: list[_Child] = []
        self._cluster_id = ""

    # -- queries --

    def read(self) -> ClusterState | None:
        return read_state(self.layout.data_dir)

    def running(self) -> ClusterState | None:
        """The recorded cluster if its controller process is still alive."""
        state = self.read()
        if state is None:
            return None
        ctl = state.component("controller")
        if ctl is not None and process.is_ours(ctl.pid, ctl.command):
            return state
        return None

    async def status(self) -> StatusReport | None:
        state = self.read()
        if state is None:
            return None
        comps = await asyncio.gather(*(probe(c, state) for c in state.components))
        return StatusReport(
            state.data_dir, state.controller, state.cluster_id, state.provider, list(comps), state.etcd
        )

    # -- up --

    async def up(self, opts: UpOptions) -> ClusterState:
        """Start etcd, controller, scheduler (and VMs). On failure stop what was started."""
        previous = self.read()
        exes = await asyncio.to_thread(check_prerequisites, opts, self.layout)
        await self._check_provider(opts)
        if previous is not None:
            # A cluster that died without `down`: clear what is left, keep its identity and data.
            await self.down(purge=False, quiet=True)
        cluster_id = previous.cluster_id if previous is not None else new_cluster_id()
        self._cluster_id = cluster_id
        for d in (self.layout.data_dir, self.layout.logs_dir, self.layout.run_dir):
            d.mkdir(parents=True, exist_ok=True)
        state = ClusterState(
            cluster_id=cluster_id,
            data_dir=str(self.layout.data_dir),
            controller=opts.listen,
            controller_socket=str(self.layout.controller_socket),
            provider=opts.provider,
            started_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            detached=opts.detach,
            supervisor_pid=0 if opts.detach else os.getpid(),
            secure=opts.secure,
            pki_dir=str(self.layout.pki.directory) if opts.secure else "",
        )
        if opts.secure:
            self.progress("creating the cluster PKI")
            pki = self.layout.pki
            await asyncio.to_thread(pki.ensure, now=self.clock.now())
            # etcd's own CA and certificates: etcd lets in only the controller's.
            await asyncio.to_thread(pki.etcd.ensure, now=self.clock.now())
            # What agents in VMs may see (CA certificate, transport pair), in the directory they mount.
            await asyncio.to_thread(write_join_bundle, pki, self.layout.run_dir)
        # The user config's `local` context: this cluster, as its admin (`cowpod config` shows it).
        await asyncio.to_thread(
            write_local_context, self._user_config(), server=opts.listen, secure=opts.secure,
            pki_dir=self.layout.pki.directory,
        )
        try:
            if opts.etcd_members == 1:
                state = await self._start_etcd(state, exes["etcd"], previous)
            else:
                state = await self._start_etcd_cluster(state, exes["etcd"], opts.etcd_members)
            state = await self._start_controller(state, exes["controller"], opts)
            state = await self._start_scheduler(state, exes["scheduler"])
            if opts.vms:
                await self._start_vms(state, opts)
        except BaseException as e:
            self.progress_done()
            if opts.retain:
                self.say("the cluster is kept as it is (--retain); stop it with `cowpod down`")
            else:
                await self.down(purge=False, quiet=True)
            if isinstance(e, SupervisorError | fleet.FleetError):
                raise SupervisorError(str(e)) from None
            raise
        return state

    def _spawn(
        self, name: str, command: list[str], extra_env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.layout.log(name), "ab")  # the child keeps its own copy of the descriptor
        try:
            env = {
                **self.env,
                "COWPOD_CLUSTER_ID": self._cluster_id,
                "PYTHONUNBUFFERED": "1",
                **(extra_env or {}),
            }
            return subprocess.Popen(
                command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True, env=env
            )
        finally:
            log.close()

    def _record(self, state: ClusterState, child: _Child) -> ClusterState:
        self._children.append(child)
        comps = [c for c in state.components if c.name != child.state.name] + [child.state]
        state = replace(state, components=comps)
        write_state(self.layout.data_dir, state)
        return state

    def _died(self, name: str, proc: subprocess.Popen[bytes] | None) -> SupervisorError:
        code = proc.returncode if proc is not None else None
        log = self.layout.log(name)
        last = last_log_line(log)
        detail = f": {last}" if last else ""
        return SupervisorError(f"{name} exited with code {code}{detail} (see {log})")

    async def _start_etcd(self, state: ClusterState, exe: str, previous: ClusterState | None) -> ClusterState:
        self.progress("starting etcd")
        tls = self._etcd_member_tls(state)
        member = EtcdMember(data_dir=self.layout.etcd_dir, log_path=self.layout.log("etcd"), tls=tls)
        old = previous.component("etcd") if previous is not None else None
        if old is not None and old.address:
            # Same ports as last time when they are free: the member's data remembers its URLs.
            _, port = health.split_address(old.address)
            if not port_in_use(f"127.0.0.1:{port}"):
                member.client_port = port
        member.start(detach=True)
        command = member.command()
        command[0] = exe
        child = _Child(
            ComponentState(
                "etcd",
                member.proc.pid if member.proc else 0,
                member.endpoint,
                str(self.layout.log("etcd")),
                command,
                etcd_health(member),
            ),
            member.proc,
        )
        state = self._record(state, child)
        state = replace(state, etcd=member.endpoint)
        write_state(self.layout.data_dir, state)
        try:
            await asyncio.to_thread(member.wait_ready, 30.0)
        except (RuntimeError, TimeoutError):
            raise self._died("etcd", member.proc) from None
        client = self._etcd_client_tls(state)
        if not await self._until(lambda: health.etcd_ok(member.endpoint, tls=client), member.proc, 20.0):
            raise SupervisorError(
                f"etcd did not report healthy on {member.endpoint} (see {self.layout.log('etcd')})"
            )
        return state

    async def _start_etcd_cluster(self, state: ClusterState, exe: str, n: int) -> ClusterState:
        """Start `n` members on loopback ports; the controller gets every endpoint."""
        self.progress(f"starting etcd ({n} members)")
        saved = read_etcd_ports(self.layout)
        members = etcd_cluster(self.layout, n, saved, tls=self._etcd_member_tls(state))
        client = self._etcd_client_tls(state)
        for m in members:
            for port in (m.client_port, m.peer_port):
                if m.name in saved and port_in_use(f"127.0.0.1:{port}"):
                    raise SupervisorError(
                        f"port {port} of etcd member {m.name} is in use; its data in "
                        f"{self.layout.etcd_member_dir(m.name)} names that port (free it, or "
                        "`cowpod down --purge` to start from empty)"
                    )
        write_etcd_ports(self.layout, members)
        for m in members:
            m.start(detach=True)
            command = m.command()
            command[0] = exe
            pid = m.proc.pid if m.proc else 0
            comp = ComponentState(m.name, pid, m.endpoint, str(m.log_path), command, etcd_health(m))
            state = self._record(state, _Child(comp, m.proc))
        state = replace(state, etcd=",".join(m.endpoint for m in members))
        write_state(self.layout.data_dir, state)
        for m in members:
            try:
                await asyncio.to_thread(m.wait_ready, 30.0)
            except (RuntimeError, TimeoutError):
                raise self._died(m.name, m.proc) from None
        for m in members:  # healthy = the member has a leader, i.e. a quorum formed
            probe_member = functools.partial(health.etcd_ok, m.endpoint, tls=client)
            if not await self._until(probe_member, m.proc, 30.0):
                raise SupervisorError(
                    f"etcd member {m.name} did not report healthy on {m.endpoint} "
                    f"(see {self.layout.log(m.name)})"
                )
        return state

    def _etcd_member_tls(self, state: ClusterState) -> TLSFiles | None:
        """A secure cluster's etcd serves TLS and requires the controller's certificate."""
        return self.layout.pki.etcd.member if state.secure else None

    def _etcd_client_tls(self, state: ClusterState) -> TLSFiles | None:
        return self.layout.pki.etcd.controller if state.secure else None

    async def _until(
        self, ok: Callable[[], Awaitable[bool]], proc: subprocess.Popen[bytes] | None, timeout: float
    ) -> bool:
        """Poll `ok()` until true; False on timeout. Raises if the process exits meanwhile."""
        deadline = self.clock.monotonic() + timeout
        while self.clock.monotonic() < deadline:
            if await ok():
                return True
            if proc is not None and proc.poll() is not None:
                return False
            await self.clock.sleep(0.2)
        return False

    async def _start_controller(self, state: ClusterState, exe: str, opts: UpOptions) -> ClusterState:
        self.progress("starting the controller")
        self.layout.controller_socket.unlink(missing_ok=True)
        enc = self.layout.encryption_config
        if opts.secrets_encryption and await asyncio.to_thread(secrets_encryption.ensure, enc):
            self.say(f"made a Secrets encryption key in {enc} (keep it with the cluster)")
        command = controller_command(
            exe,
            listen=opts.listen,
            socket_path=self.layout.controller_socket,
            etcd=state.etcd,
            provider=opts.provider,
            data_dir=self.layout.data_dir,
            pki_dir=self.layout.pki.directory if opts.secure else None,
            etcd_tls=self._etcd_client_tls(state),
            cluster_config=opts.cluster_config,
            autoscale=opts.autoscale,
            warm_shells=opts.warm_shells,
            encryption_config=enc if await asyncio.to_thread(enc.exists) else None,
        )
        proc = self._spawn("controller", command)
        state = self._record(
            state,
            _Child(
                ComponentState(
                    "controller", proc.pid, opts.listen, str(self.layout.log("controller")), command, "grpc"
                ),
                proc,
            ),
        )
        settings = connection_for(state)
        if not await self._until(lambda: health.grpc_ok(settings), proc, 60.0):
            if proc.poll() is not None:
                raise self._died("controller", proc)
            raise SupervisorError(
                f"the controller did not become healthy on {opts.listen} within 60s "
                f"(see {self.layout.log('controller')})"
            )
        return state

    async def _start_scheduler(self, state: ClusterState, exe: str) -> ClusterState:
        self.progress("starting the scheduler")
        metrics = f"127.0.0.1:{free_port()}"
        command = scheduler_command(exe, controller=state.controller, metrics=metrics)
        proc = self._spawn("scheduler", command, scheduler_env(self.layout.pki if state.secure else None))
        state = self._record(
            state,
            _Child(
                ComponentState(
                    "scheduler", proc.pid, metrics, str(self.layout.log("scheduler")), command, "http"
                ),
                proc,
            ),
        )
        if not await self._until(lambda: health.http_ok(metrics), proc, 30.0):
            if proc.poll() is not None:
                raise self._died("scheduler", proc)
            log = self.layout.log("scheduler")
            self.say(f"warning: the scheduler does not answer on {metrics} yet (see {log})")
        return state

    async def _start_vms(self, state: ClusterState, opts: UpOptions) -> None:
        names = fleet.vm_names(opts.vms)
        vms = [
            fleet.vm_object(
                n,
                cpu_millis=opts.vm_cpu_millis,
                memory_bytes=opts.vm_memory_bytes,
                provider=opts.provider,
            )
            for n in names
        ]
        hint = (
            f"see {self.layout.log('controller')} and the agent logs "
            f"(`docker logs <vm container>`), or `cowpod describe vm {names[0]}` with --retain"
        )
        async with connect(connection_for(state), clock=self.clock) as client:
            self.progress(f"creating {len(names)} VM(s)")
            await fleet.create_vms(client, vms)
            await fleet.wait_vms_ready(
                client, names, self.clock, timeout=opts.timeout, report=self.progress, hint=hint
            )
        self.progress_done()

    # -- foreground --

    async def serve(self, state: ClusterState) -> int:
        """Stay in the foreground until Ctrl-C/SIGTERM or a component dies; then stop everything."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        code = 0
        lost: set[str] = set()
        try:
            while not stop.is_set():
                for child in self._children:
                    if child.proc is not None and child.proc.poll() is not None:
                        if child.state.name.startswith("etcd-") and child.state.name not in lost:
                            # One member of several: the others keep a quorum; keep serving.
                            lost.add(child.state.name)
                            self.say(f"warning: {self._died(child.state.name, child.proc)}")
                            continue
                        if child.state.name in lost:
                            continue
                        self.say(f"error: {self._died(child.state.name, child.proc)}; stopping the cluster")
                        code = 1
                        stop.set()
                        break
                try:
                    await asyncio.wait_for(stop.wait(), 0.5)
                except TimeoutError:
                    pass
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        self.say("stopping the cluster")
        await self.down(purge=False)
        return code

    # -- down --

    async def _ask_foreground_up_to_stop(self, state: ClusterState) -> None:
        """A foreground `up` owns the cluster: let it do the orderly stop it does on Ctrl-C."""
        pid = state.supervisor_pid
        if state.detached or pid <= 0 or pid == os.getpid() or not process.pid_alive(pid):
            return
        argv = process.cmdline(pid) or []
        if "up" not in argv or not any("cowpod" in os.path.basename(a) for a in argv[:2]):
            return
        self.progress(f"asking the foreground `cowpod up` (pid {pid}) to stop the cluster")
        os.kill(pid, signal.SIGTERM)
        deadline = self.clock.monotonic() + 240
        while process.pid_alive(pid) and self.clock.monotonic() < deadline:
            await self.clock.sleep(0.2)

    async def down(self, *, purge: bool = False, quiet: bool = False) -> bool:
        """Stop the recorded cluster. Returns False if there was nothing to stop."""
        state = self.read()
        if state is None:
            if purge:
                self._purge()
            return False
        if not quiet:
            await self._ask_foreground_up_to_stop(state)
            state = self.read() or state
        sweeper = self._sweeper(state)
        known = await sweeper.leftovers(self._provider_context(state)) if sweeper is not None else frozenset()
        stopped: list[int] = []
        ctl = state.component("controller")
        if ctl is not None and process.is_ours(ctl.pid, ctl.command):
            # The scheduler goes first, so no pod lands on a VM being destroyed.
            sched = state.component("scheduler")
            if sched is not None:
                self.progress("stopping scheduler")
                if await process.terminate(sched.pid, sched.command, self.clock, grace=15.0):
                    stopped.append(sched.pid)
            await self._destroy_vms(state, quiet=quiet)
        ordered = [state.component("scheduler"), state.component("controller"), *etcd_components(state)]
        for comp in ordered:
            if comp is None or comp.pid in stopped:
                continue
            self.progress(f"stopping {comp.name}")
            if await process.terminate(comp.pid, comp.command, self.clock, grace=15.0):
                stopped.append(comp.pid)
        for child in self._children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.kill()
            if child.proc is not None:
                child.proc.wait()
        self._children.clear()
        left = await process.wait_gone(stopped, self.clock)
        if left and not quiet:
            self.say(f"warning: pids {', '.join(map(str, left))} were stopped but not yet collected by init")
        if sweeper is not None:
            try:
                removed = await sweeper.sweep(self._provider_context(state), known)
            except CowpodError as e:
                removed = []
                if not quiet:
                    self.say(f"warning: {e}")
            if removed and not quiet:
                self.say(f"removed {len(removed)} leftover(s) of the {state.provider} provider: "
                         f"{', '.join(sorted(removed))}")
        self.progress_done()
        remove_state(self.layout.data_dir)
        self.layout.controller_socket.unlink(missing_ok=True)
        if purge:
            self._purge()
        return True

    def _provider_context(self, state: ClusterState) -> ProviderContext:
        return ProviderContext(
            data_dir=pathlib.Path(state.data_dir), cluster_id=state.cluster_id, clock=self.clock,
            tasks=TaskSupervisor("cowpod-down"),
            controller=ControllerAddress(tcp=state.controller, unix=state.controller_socket),
        )

    def _sweeper(self, state: ClusterState) -> SweepsLeftovers | None:
        """The provider's safety net for `down`, when it has one."""
        if state.provider not in registry.names():
            return None
        found = registry.plugin(state.provider)
        return found if isinstance(found, SweepsLeftovers) else None

    async def _check_provider(self, opts: UpOptions) -> None:
        """The provider's preflight (engine and image, credentials, inventory), before anything starts."""
        if opts.provider == "none":
            return
        from hypervisor.manager import check_provider

        try:
            await check_provider(
                opts.provider, opts.provider_settings, self.layout.data_dir, self.clock,
                ControllerAddress(tcp=opts.listen, unix=str(self.layout.controller_socket)),
            )
        except CowpodError as e:
            raise SupervisorError(f"provider {opts.provider}: {e}") from None

    async def _destroy_vms(self, state: ClusterState, *, quiet: bool) -> None:
        try:
            async with connect(connection_for(state), clock=self.clock) as client:
                if not await client.healthy(timeout=3.0):
                    raise SupervisorError("the controller is not healthy")
                names = await fleet.destroy_all_vms(client, self.clock, timeout=150.0, report=self.progress)
            if names and not quiet:
                self.progress_done()
                self.say(f"destroyed {len(names)} VM(s): {', '.join(names)}")
        except Exception as e:
            self.progress_done()
            if not quiet:
                self.say(
                    f"warning: could not destroy VMs through the controller ({e}); removing their containers"
                )

    def _user_config(self) -> pathlib.Path:
        """The user config file `up` writes the `local` context into."""
        return default_config_path(self.env) if self.env.get(ENV_CONFIG) else self.layout.data_dir / "config"

    def _purge(self) -> None:
        """Delete the data dir, except a user config file kept there (~/.cowpod/config),
        which loses only the `local` context: it named the certificates deleted here."""
        d = self.layout.data_dir
        if not d.exists():
            return
        markers = ("cluster.json", "etcd", "logs", "run")
        if not any((d / m).exists() for m in markers):
            raise SupervisorError(f"refusing to delete {d}: it does not look like a cowpod data dir")
        config = self._user_config()
        try:
            if remove_local_context(config):
                self.say(f"removed the {LOCAL_CONTEXT!r} context from {config}")
        except ConfigError as e:
            self.say(f"warning: left {config} as it is: {e}")
        for entry in d.iterdir():
            if entry.name in KEEP_ON_PURGE:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        if not any(d.iterdir()):
            d.rmdir()
        self.say(f"deleted {d}")
