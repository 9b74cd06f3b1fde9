"""The qemu provider's registry entry: its settings, preflight and factory.

The preflight (`check`) answers in one line what stops VMs from booting:
QEMU or qemu-img missing, the guest image missing or incomplete, a RAM
directory that is not there, not enough memory for the smallest guest. It
also settles KVM or TCG once (see accel.py), so the warning comes at start-up.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from typing import Any

from cowpod.errors import FailedPrecondition
from hypervisor.provider import Provider, ProviderContext
from hypervisor.providers.qemu import accel
from hypervisor.providers.qemu.machine import memory_problem
from hypervisor.providers.qemu.provider import QemuProvider
from hypervisor.providers.qemu.settings import GuestImage, QemuSettings, parse_settings


class QemuPlugin:
    name = "qemu"

    def parse_settings(self, raw: Mapping[str, Any], where: str) -> QemuSettings:
        return parse_settings(raw, where)

    async def check(self, settings: QemuSettings, ctx: ProviderContext) -> None:
        for binary, package in ((settings.qemu, "qemu-system-x86"), (settings.qemu_img, "qemu-utils")):
            if shutil.which(binary) is None:
                raise FailedPrecondition(f"{binary} not found: apt-get install {package}")
        try:
            image = GuestImage.load(settings.image_dir)
        except (OSError, ValueError) as err:
            raise FailedPrecondition(
                f"qemu guest image: {err} (build it: deploy/qemu/build-image.sh)") from None
        if not settings.ram_dir.is_dir() or not os.access(settings.ram_dir, os.W_OK):
            raise FailedPrecondition(f"provider.ramDir: {settings.ram_dir} is not a writable directory")
        problem = memory_problem(settings.ram_dir, image.min_memory_mb)
        if problem:
            raise FailedPrecondition(problem)
        await accel.resolve(settings.accel, settings.qemu, image.kernel)

    def create(self, settings: QemuSettings, ctx: ProviderContext) -> Provider:
        return QemuProvider(settings, ctx)


PLUGIN = QemuPlugin()
