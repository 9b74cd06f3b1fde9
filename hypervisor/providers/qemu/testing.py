"""Helpers for tests and benches that run real QEMU guests.

    image = tiny_image()                 # busybox guest speaking the channel protocol (cached)
    env = QemuTestEnv.create(image)      # private cluster id, short data dir
    provider = env.provider()            # a QemuProvider on TCG
    ...
    env.cleanup()                        # every QEMU process, RAM file and directory it made

Cleanup goes by what the env owns on the host (its data dir, its cluster's RAM
file prefix), never by process name, so other engineers' VMs are safe.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import tempfile
import uuid
from dataclasses import dataclass, replace
from typing import Any

from cowpod.clock import RealClock
from cowpod.tasks import TaskSupervisor
from hypervisor.guest import GuestBootstrap, node_labels
from hypervisor.provider import ControllerAddress, ProviderContext, VMSpecInfo
from hypervisor.providers.qemu import tinyguest
from hypervisor.providers.qemu.provider import QemuProvider
from hypervisor.providers.qemu.settings import ROOT, QemuSettings

TINY_CACHE = ROOT / ".build" / "qemu-tiny"


def tiny_image() -> pathlib.Path:
    """The tiny guest's image dir (kernel from Debian's cloud kernel package, fetched once)."""
    return tinyguest.build(TINY_CACHE / "tiny", tinyguest.fetch_cloud_kernel(TINY_CACHE))


def bootstrap(provider: QemuProvider, spec: VMSpecInfo) -> GuestBootstrap:
    """What the VM manager would hand the provider for `spec` (insecure cluster)."""
    return GuestBootstrap(
        node_name=spec.name, hostname=spec.name, machine_id=uuid.uuid4().hex,
        labels=node_labels(spec.name, spec.class_name, spec.template, spec.node_labels),
        endpoints=provider.guest_endpoints(spec.name),
    )


@dataclass
class QemuTestEnv:
    cluster_id: str
    data_dir: pathlib.Path
    settings: QemuSettings

    @staticmethod
    def create(image_dir: pathlib.Path, **overrides: Any) -> QemuTestEnv:
        cid = "t" + uuid.uuid4().hex[:8]
        # Short: unix socket paths under it must stay below 108 bytes.
        d = pathlib.Path(tempfile.mkdtemp(prefix="cpq-", dir="/tmp"))
        kw: dict[str, Any] = {"image_dir": image_dir, "accel": "tcg", "boot_timeout_s": 120.0,
                              "start_timeout_s": 30.0}
        kw.update(overrides)
        return QemuTestEnv(cluster_id=cid, data_dir=d, settings=QemuSettings(**kw))

    def context(self, controller: ControllerAddress | None = None) -> ProviderContext:
        return ProviderContext(data_dir=self.data_dir, cluster_id=self.cluster_id, clock=RealClock(),
                               tasks=TaskSupervisor("qemu-test"),
                               controller=controller or ControllerAddress())

    def provider(self, **settings: Any) -> QemuProvider:
        return QemuProvider(replace(self.settings, **settings), self.context(), powerdown_grace_s=0.5)

    def processes(self) -> list[int]:
        """Pids of QEMU processes that belong to this env (by its data dir in their command line)."""
        marker = str(self.data_dir.resolve()).encode()
        out = []
        for proc in pathlib.Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if marker in (proc / "cmdline").read_bytes():
                        out.append(int(proc.name))
                except OSError:
                    continue
        return out

    def ram_files(self) -> list[pathlib.Path]:
        return sorted(self.settings.ram_dir.glob(f"cowpod.{self.cluster_id}.*"))

    def cleanup(self) -> None:
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        for f in self.ram_files():
            f.unlink(missing_ok=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)


class QemuHarness:
    """The provider contract's harness (tests/e2e/test_provider_contract.py) for qemu:
    the tiny guest runs no pods, so there are no pod containers to count."""

    has_pod_containers = False

    def __init__(self) -> None:
        self.env = QemuTestEnv.create(tiny_image())
        self.provider: QemuProvider = self.env.provider()

    async def add_pod_container(self, vm: str) -> None:
        return None

    async def pod_containers(self, vm: str) -> list[str]:
        return []

    async def close(self) -> None:
        await self.provider.close()
        self.env.cleanup()
