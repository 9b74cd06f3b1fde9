"""Helpers for tests that run VMs on the real Docker engine (yours and other engineers').

    build_images()                      # deploy/build-images.sh --quiet; seconds when cached
    env = DockerTestEnv.create()        # private cluster id, network, short data dir
    provider = env.provider()           # a DockerProvider labelling everything cowpod.test=1
    ...
    env.cleanup()                       # every container, image and network it made, even on failure
    smaps_rollup_kb(pid)                # a process's memory (Rss, Pss, Private_*, Shared_*) in kB
    machine()                           # cpu, cores, memory, kernel, Docker, Python: for a bench's JSON

Everything created carries `cowpod.test=1` plus the env's `cowpod.cluster`, so
cleanup finds it by label. The data dir is short (/tmp/cp-XXXX) because unix
socket paths under it must stay below 108 bytes.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors

from hypervisor.bootstrap import guest_bootstrap
from hypervisor.provider import Provider, VMInfo, VMSpecInfo
from hypervisor.providers.docker import metadata_block
from hypervisor.providers.docker.provider import (
    L_CLUSTER,
    L_NODE,
    DockerProvider,
    DockerProviderConfig,
    container_name,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent


async def full_clone(provider: Provider, spec: VMSpecInfo, run_dir: pathlib.Path | None = None) -> VMInfo:
    """A full clone with the bootstrap the VM manager would give it (insecure without `run_dir`)."""
    return await provider.full_clone(spec, guest_bootstrap(provider, spec, run_dir=run_dir))


async def instant_clone(provider: Provider, parent: str, spec: VMSpecInfo,
                        run_dir: pathlib.Path | None = None) -> VMInfo:
    return await provider.instant_clone(parent, spec, guest_bootstrap(provider, spec, run_dir=run_dir))
TEST_LABELS = {"cowpod.test": "1"}


def build_images(*targets: str) -> None:
    """Build (or confirm) the local images; raise with the script's output on failure."""
    script = ROOT / "deploy" / "build-images.sh"
    proc = subprocess.run([str(script), "--quiet", *targets], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def sweep_test_networks() -> list[str]:
    """Remove test networks (label `cowpod.test`) with nothing attached: what a killed
    run left. The engine refuses to remove a network in use, so a concurrent run's stays."""
    removed: list[str] = []
    client = docker.from_env()
    try:
        for net in client.networks.list(filters={"label": [f"{k}={v}" for k, v in TEST_LABELS.items()]}):
            net.reload()
            if net.attrs.get("Containers"):
                continue
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                net.remove()
                removed.append(str(net.name))
                metadata_block.unblock(str(net.name))
    finally:
        client.close()
    return removed


@dataclass
class DockerTestEnv:
    cluster_id: str
    network: str
    data_dir: pathlib.Path
    client: docker.DockerClient = field(default_factory=docker.from_env)

    @staticmethod
    def create(network: str = "") -> DockerTestEnv:
        cid = "t" + uuid.uuid4().hex[:8]
        d = pathlib.Path(tempfile.mkdtemp(prefix="cp-", dir="/tmp"))
        return DockerTestEnv(cluster_id=cid, network=network or f"cowpod-{cid}", data_dir=d)

    def config(self, **overrides: Any) -> DockerProviderConfig:
        kw: dict[str, Any] = dict(
            data_dir=self.data_dir, cluster_id=self.cluster_id, network=self.network,
            extra_labels=TEST_LABELS, stop_timeout=5,
        )
        kw.update(overrides)
        return DockerProviderConfig(**kw)

    def vm_container(self, vm: str) -> str:
        """The container name of this env's VM `vm` (the provider's one rule)."""
        return container_name(self.config(), vm)

    def provider(self, **overrides: Any) -> DockerProvider:
        return DockerProvider(self.config(**overrides))

    def run_nested(self, vm_container: str, node: str, name: str) -> str:
        """Start a pod-like container nested in a VM (its cgroup and network), as the agent does."""
        vm = self.client.containers.get(vm_container)
        c = self.client.containers.run(
            "cowpod/busybox:latest", ["sleep", "3600"], detach=True, name=name,
            cgroup_parent=f"/docker/{vm.id}", network_mode=f"container:{vm.id}",
            labels={**TEST_LABELS, L_NODE: node, "cowpod.managed": "1", L_CLUSTER: self.cluster_id},
        )
        return str(c.id)

    def cleanup(self, *, network: bool = True) -> None:
        by_cluster: dict[str, Any] = {"label": [f"{L_CLUSTER}={self.cluster_id}"]}
        for c in self.client.containers.list(all=True, filters=by_cluster, ignore_removed=True):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                c.remove(force=True, v=True)
        # Images: children's first (an image with dependants cannot go), then the rest.
        for _ in range(3):
            imgs = self.client.images.list(filters=by_cluster)
            if not imgs:
                break
            for img in imgs:
                for ref in img.tags or [str(img.id)]:
                    with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                        self.client.images.remove(ref, force=True)
        if network:
            # The provider's metadata-blocking rule goes with the test's network.
            metadata_block.unblock(self.network)
            for net in self.client.networks.list(names=[self.network]):
                if net.name == self.network:
                    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                        net.remove()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.client.close()


def smaps_rollup_kb(pid: int) -> dict[str, int]:
    """`/proc/<pid>/smaps_rollup` as {field: kB}: how a clone's memory splits
    into private and shared with the process it was forked from."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                out[key] = int(rest.split()[0])
    return out


def machine() -> dict[str, Any]:
    """What a benchmark ran on, for the last line of its JSON."""
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    dv = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                        capture_output=True, text=True, check=False).stdout.strip()
    return {"cpu": model, "cores": os.cpu_count(), "mem_gib": round(mem_kb / 2**20, 1),
            "kernel": platform.release(), "docker": dv, "python": platform.python_version()}
