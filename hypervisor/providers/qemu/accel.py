"""KVM or TCG: probe once whether KVM really runs a Linux guest here.

/dev/kvm existing is not enough: under nested virtualization a bare guest
runs but a Linux kernel can make no progress at all. So the probe boots the
guest's own kernel under KVM with `earlyprintk` on the serial port and waits
(on the pipe, no polling) for its first "Linux version" line: a working KVM
prints it within a fraction of a second, TCG in about one. No line within
`timeout` seconds means KVM is unusable: TCG, with one warning line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pathlib

log = logging.getLogger(__name__)

_cache: dict[tuple[str, str], str] = {}


async def kvm_boots(qemu: str, kernel: pathlib.Path, timeout: float = 5.0) -> bool:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    proc = await asyncio.create_subprocess_exec(
        qemu, "-nodefaults", "-no-user-config", "-display", "none", "-accel", "kvm", "-m", "256M",
        "-kernel", str(kernel), "-append", "console=ttyS0 earlyprintk=serial,ttyS0,115200",
        "-serial", "stdio", "-no-reboot",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(timeout):
            await proc.stdout.readuntil(b"Linux version")
            return True
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return False
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def resolve(accel: str, qemu: str, kernel: pathlib.Path) -> str:
    """`kvm` or `tcg` for setting `accel` (auto|kvm|tcg); auto's probe runs once per process."""
    if accel != "auto":
        return accel
    key = (qemu, str(kernel))
    if key not in _cache:
        if await kvm_boots(qemu, kernel):
            _cache[key] = "kvm"
        else:
            log.warning("qemu: KVM does not boot a Linux guest here (no /dev/kvm, or nested "
                        "virtualization); using TCG software emulation, expect slow guests")
            _cache[key] = "tcg"
    return _cache[key]
