"""qcow2 overlays: every VM writes only its own top file, everything below is frozen.

    class image (rootfs.qcow2, never written)
      └─ parent/disk-0.qcow2        frozen at the parent's snapshot
           ├─ parent/disk-1.qcow2   the parent after its snapshot
           ├─ child-a/disk-0.qcow2
           └─ child-b/disk-0.qcow2

A running VM's disk is frozen with QMP `blockdev-snapshot-sync` (QEMU itself
switches to the new overlay while the guest is stopped). A running child is
snapped free with `block-stream` (qmp.Monitor.stream_disk); one that is not
running, with `qemu-img rebase -b ""`, which copies what the chain held.
"""

from __future__ import annotations

import asyncio
import pathlib

from cowpod.errors import FailedPrecondition


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise FailedPrecondition(f"{' '.join(argv)}: {out.decode(errors='replace').strip()}")


async def overlay(qemu_img: str, backing: pathlib.Path, path: pathlib.Path) -> None:
    """A new empty qcow2 `path` over `backing` (`backing` absolute, so the chain survives any cwd)."""
    await _run(qemu_img, "create", "-q", "-f", "qcow2", "-F", "qcow2",
               "-b", str(backing), str(path))


async def flatten(qemu_img: str, path: pathlib.Path) -> None:
    """Copy the backing chain's data into `path` and drop the chain (VM not running)."""
    await _run(qemu_img, "rebase", "-q", "-f", "qcow2", "-b", "", str(path))
