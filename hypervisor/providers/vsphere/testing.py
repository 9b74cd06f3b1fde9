"""Helpers for tests and benches against VMware's simulator (deploy/vcsim).

    sim = Vcsim.start()                        # deploy/vcsim/start.sh on a free loopback port
    env = VSphereTestEnv(sim)                  # a private cluster id in that simulator
    provider = env.provider()                  # a VSphereProvider pointed at it
    ...
    env.cleanup(); sim.stop()                  # its VMs, their guest containers and pods

`sim.connect()` is a pyVmomi session of the test's own, to check what the
simulator itself recorded (its tasks, its inventory), not only cowpod's view.
Everything is found again by name or label: the simulator's state dir, its
`cowpod.vcsim=<instance>` guest containers, pods labelled `cowpod.node=<vm>`.
"""

from __future__ import annotations

import asyncio
import pathlib
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Any

import yaml

from cowpod.clock import RealClock
from cowpod.tasks import TaskSupervisor
from hypervisor.provider import ControllerAddress, ProviderContext
from hypervisor.providers.vsphere.client import connect
from hypervisor.providers.vsphere.plugin import PLUGIN
from hypervisor.providers.vsphere.provider import VSphereProvider
from hypervisor.providers.vsphere.settings import VSphereSettings

ROOT = pathlib.Path(__file__).resolve().parents[3]
START = ROOT / "deploy" / "vcsim" / "start.sh"
TEST_LABEL = "cowpod.test"


def live_instances() -> set[str]:
    """The `--instance` of every cowpod-vcsim process running on this machine."""
    found: set[str] = set()
    for proc in pathlib.Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"cowpod-vcsim") and b"--instance" in argv:
            i = argv.index(b"--instance")
            if i + 1 < len(argv):
                found.add(argv[i + 1].decode())
    return found


def sweep_dead_simulators() -> list[str]:
    """Remove what simulators that died without `--stop` left: their guest
    containers (label cowpod.vcsim=<instance> of no running simulator), their
    DMI volumes, and the pods nested in those guests. Returns the names removed."""
    out = subprocess.run(["docker", "ps", "-a", "--no-trunc", "--filter", "label=cowpod.vcsim",
                          "--format", '{{.ID}} {{.Names}} {{.Label "cowpod.vcsim"}}'],
                         capture_output=True, text=True, check=True).stdout
    live = live_instances()
    rows = [line.split() for line in out.splitlines()]
    dead = [row for row in rows if len(row) == 3 and row[2] not in live]
    if not dead:
        return []
    ids = {cid for cid, _, _ in dead}
    pods = subprocess.run(["docker", "ps", "-aq", "--no-trunc", "--filter", "label=cowpod.node"],
                          capture_output=True, text=True, check=True).stdout.split()
    nested: list[str] = []
    if pods:
        fmt = "{{.Id}} {{.HostConfig.CgroupParent}}"
        parents = subprocess.run(["docker", "inspect", "--format", fmt, *pods],
                                 capture_output=True, text=True, check=False).stdout
        nested = [f[0] for f in (ln.split() for ln in parents.splitlines())
                  if len(f) == 2 and f[1].rsplit("/", 1)[-1] in ids]
    names = [name for _, name, _ in dead]
    subprocess.run(["docker", "rm", "-f", "-v", *nested, *names], capture_output=True, check=False)
    subprocess.run(["docker", "volume", "rm", "-f", *names], capture_output=True, check=False)
    return names + nested


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Vcsim:
    """A simulator this process started; `stop` removes it and all it ran."""

    dir: pathlib.Path
    port: int
    config_path: pathlib.Path

    @staticmethod
    def start(*, instant_clone: bool = True, guest: bool = True, username: str = "",
              password: str = "") -> Vcsim:
        sweep_dead_simulators()
        port = free_port()
        state = pathlib.Path(tempfile.mkdtemp(prefix="cp-vcsim-"))
        args = [str(START), "--port", str(port), "--dir", str(state)]
        if not instant_clone:
            args.append("--no-instant-clone")
        if not guest:
            args.append("--no-guest")
        if username:
            pw = state.parent / f"{state.name}.password"
            pw.write_text(password)
            args += ["--username", username, "--password-file", str(pw)]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            subprocess.run([str(START), "--stop", "--dir", str(state)], capture_output=True, check=False)
            raise RuntimeError(f"{START} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return Vcsim(dir=state, port=port, config_path=pathlib.Path(proc.stdout.strip().splitlines()[-1]))

    @property
    def config(self) -> dict[str, Any]:
        data: dict[str, Any] = yaml.safe_load(self.config_path.read_text())
        return data

    def provider_section(self, **overrides: Any) -> dict[str, Any]:
        """The cluster config's `provider:` keys (without `name`), with overrides."""
        raw = {k: v for k, v in self.config["provider"].items() if k != "name"}
        raw.update(overrides)
        return raw

    @property
    def instance(self) -> str:
        return (self.dir / "instance").read_text().strip()

    def connect(self) -> Any:
        """A pyVmomi service instance of the test's own."""
        return connect.SmartConnect(host="127.0.0.1", port=self.port, user="test", pwd="test",
                                    disableSslCertValidation=True)

    def guest_containers(self) -> list[str]:
        out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=cowpod.vcsim={self.instance}",
                              "--format", "{{.Names}}"], capture_output=True, text=True, check=True)
        return out.stdout.split()

    def stop(self) -> None:
        subprocess.run([str(START), "--stop", "--dir", str(self.dir)], capture_output=True, timeout=120,
                       check=False)
        (self.dir.parent / f"{self.dir.name}.password").unlink(missing_ok=True)


@dataclass
class VSphereTestEnv:
    """A private cluster id in a simulator, and the providers made for it."""

    sim: Vcsim
    cluster_id: str = field(default_factory=lambda: "t" + uuid.uuid4().hex[:8])
    controller: ControllerAddress = field(default_factory=ControllerAddress)
    data_dir: pathlib.Path = field(default_factory=lambda: pathlib.Path(tempfile.mkdtemp(prefix="cp-vs-")))
    tasks: TaskSupervisor = field(default_factory=lambda: TaskSupervisor("vsphere-test"))

    def settings(self, **overrides: Any) -> VSphereSettings:
        overrides.setdefault("template", "cowpod-template")
        return PLUGIN.parse_settings(self.sim.provider_section(**overrides), "provider")

    def context(self) -> ProviderContext:
        return ProviderContext(data_dir=self.data_dir, cluster_id=self.cluster_id, clock=RealClock(),
                               tasks=self.tasks, controller=self.controller)

    def provider(self, **overrides: Any) -> VSphereProvider:
        p = PLUGIN.create(self.settings(**overrides), self.context())
        assert isinstance(p, VSphereProvider)
        return p

    def run_pod_container(self, vm: str) -> str:
        """A container standing for a pod the VM's agent runs: labelled as the
        agent labels them, nested in the VM's guest container as the agent nests them."""
        guest = [n for n in self.sim.guest_containers() if n.startswith(f"vcsim-{vm}-")]
        gid = subprocess.run(["docker", "inspect", "--format", "{{.Id}}", guest[0]], capture_output=True,
                             text=True, check=True).stdout.strip()
        name = f"pod-{self.cluster_id}-{vm}-{uuid.uuid4().hex[:4]}"
        subprocess.run(["docker", "run", "-d", "--name", name, "--network", f"container:{gid}",
                        "--cgroup-parent", f"/docker/{gid}", "--label", f"cowpod.node={vm}",
                        "--label", "cowpod.managed=1", "--label", f"{TEST_LABEL}=1",
                        "cowpod/pause:latest"], capture_output=True, check=True)
        return name

    def pod_containers(self, vm: str) -> list[str]:
        out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=cowpod.node={vm}",
                              "--format", "{{.Names}}"], capture_output=True, text=True, check=True)
        return out.stdout.split()

    async def cleanup(self) -> None:
        """Destroy every VM of this cluster (the simulator removes guests and pods with them)."""
        p = self.provider()
        try:
            for vm in await p.list():
                await p.destroy(vm.name, cascade=True)
        finally:
            await p.close()
            await self.tasks.close()
            shutil.rmtree(self.data_dir, ignore_errors=True)




class ContractHarness:
    """What tests/e2e/test_provider_contract.py needs for the vsphere provider:
    a simulator of its own, the provider, and pods as the agent would run them."""

    has_pod_containers = True

    def __init__(self) -> None:
        self.sim = Vcsim.start()
        self.env = VSphereTestEnv(self.sim)
        self.provider: VSphereProvider = self.env.provider()

    async def add_pod_container(self, vm: str) -> None:
        await asyncio.to_thread(self.env.run_pod_container, vm)

    async def pod_containers(self, vm: str) -> list[str]:
        return await asyncio.to_thread(self.env.pod_containers, vm)

    async def close(self) -> None:
        try:
            await self.provider.close()
            await self.env.cleanup()
        finally:
            await asyncio.to_thread(self.sim.stop)
