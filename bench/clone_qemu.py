"""Instant clone vs cold boot on the qemu provider, in one run on one machine.

    .venv/bin/python bench/clone_qemu.py [--n 5] [--image tiny|real|<dir>] [--memory-mb 256]
                                         [--accel auto|kvm|tcg]

A separate bench from bench/clone.py, which is built around the docker
provider's containers, zygote and pools; this one drives the qemu provider
directly (no controller): "ready" is the guest's `started` event on the guest
channel, i.e. the moment the guest has taken its identity and started its
agent — the provider's whole part of a clone. (With `--image real` that is the
Debian guest's agent process started; its node registering adds the agent's
own start-up, the same for both kinds of clone.)

1. Cold boot: N full clones, one at a time, each timed from the call to
   `started` (QEMU start, kernel, init, warm, bootstrap).
2. Quiesce: a template parent boots, is snapshotted while warm (stop, freeze
   disk, x-ignore-shared migration of device state), resumes as a clone of its
   own snapshot and takes its identity. Its snapshot's size is reported.
3. Instant clones: N clones of that parent, one at a time, each timed from the
   call to `started` (QEMU start, restore, cont, bootstrap), all kept running.
4. Memory, with all clones running: `/proc/<qemu pid>/smaps_rollup` of the
   parent and of each clone: private (Private_*) vs shared (Shared_*) — what a
   clone shares, it shares with the parent's snapshot through MAP_PRIVATE.

The last line printed is one JSON object. Everything runs in a private data dir
and RAM-file prefix and is removed at the end, even on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import sys
import time
import uuid
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hypervisor.provider import VMSpecInfo  # noqa: E402
from hypervisor.providers.qemu.settings import DEFAULT_IMAGE_DIR  # noqa: E402
from hypervisor.providers.qemu.store import Snapshot, read_record  # noqa: E402
from hypervisor.providers.qemu.testing import QemuTestEnv, bootstrap, tiny_image  # noqa: E402
from hypervisor.testing import machine, smaps_rollup_kb  # noqa: E402

MB = 1024.0


def p50(xs: list[float]) -> float:
    return round(statistics.median(xs), 3) if xs else 0.0


def guest_ram_kb(pid: int) -> dict[str, int]:
    """smaps of the guest-RAM mapping alone (the `.ram` file): what of the guest's
    memory this process has touched, and how much of it is its own copy."""
    out: dict[str, int] = {}
    inside = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and ":" not in head[0]:
                inside = line.rstrip().endswith(".ram")
            elif inside and line.rstrip().endswith("kB"):
                key = line.split(":", 1)[0]
                out[key] = out.get(key, 0) + int(line.split()[1])
    return out


def memory(pid: int) -> dict[str, float]:
    m = smaps_rollup_kb(pid)
    g = guest_ram_kb(pid)
    return {
        "rss_mb": round(m.get("Rss", 0) / MB, 1),
        "pss_mb": round(m.get("Pss", 0) / MB, 1),
        "private_mb": round((m.get("Private_Clean", 0) + m.get("Private_Dirty", 0)) / MB, 1),
        "shared_mb": round((m.get("Shared_Clean", 0) + m.get("Shared_Dirty", 0)) / MB, 1),
        # The guest's RAM only (the rest is QEMU itself: under TCG mostly its code cache).
        "guest_rss_mb": round(g.get("Rss", 0) / MB, 1),
        "guest_private_mb": round((g.get("Private_Clean", 0) + g.get("Private_Dirty", 0)) / MB, 1),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    image = tiny_image() if args.image == "tiny" else DEFAULT_IMAGE_DIR if args.image == "real" \
        else pathlib.Path(args.image)
    env = QemuTestEnv.create(image, accel=args.accel)
    p = env.provider()
    tag = uuid.uuid4().hex[:4]

    def spec(name: str, template: bool = False) -> VMSpecInfo:
        return VMSpecInfo(name=name, class_name="bench", cpu_millis=1000,
                          memory_bytes=args.memory_mb << 20, template=template)

    try:
        full: list[float] = []
        for i in range(args.n):
            s = spec(f"full-{tag}-{i}")
            t0 = time.monotonic()
            await p.full_clone(s, bootstrap(p, s))
            full.append(time.monotonic() - t0)
            full_mem = memory(p.pid(s.name))
            await p.destroy(s.name)

        parent = spec(f"parent-{tag}", template=True)
        t0 = time.monotonic()
        await p.full_clone(parent, bootstrap(p, parent))
        parent_boot = time.monotonic() - t0
        rec = read_record(p.vm_dir(parent.name))
        assert rec is not None
        snap = Snapshot.load(pathlib.Path(rec.snapshot))
        state_kb = round(snap.state.stat().st_size / 1024)

        instant: list[float] = []
        kids = []
        for i in range(args.n):
            s = spec(f"kid-{tag}-{i}")
            t0 = time.monotonic()
            await p.instant_clone(parent.name, s, bootstrap(p, s))
            instant.append(time.monotonic() - t0)
            kids.append(s.name)

        parent_mem = memory(p.pid(parent.name))
        kid_mem = [memory(p.pid(k)) for k in kids]
        child_private = statistics.median(m["private_mb"] for m in kid_mem)
        child_shared = statistics.median(m["shared_mb"] for m in kid_mem)
        child_guest_private = statistics.median(m["guest_private_mb"] for m in kid_mem)
        await p.destroy(parent.name, cascade=True)
        return {
            "bench": "clone_qemu",
            "image": str(image),
            "accel": p.accel,
            "ready_means": "guest 'started' on the guest channel (identity taken, agent started)",
            "n": args.n,
            "memory_mb": args.memory_mb,
            "full_ready_p50_s": p50(full),
            "instant_ready_p50_s": p50(instant),
            "speedup": round(p50(full) / p50(instant), 1) if instant else 0.0,
            "full_ready_s": [round(x, 3) for x in full],
            "instant_ready_s": [round(x, 3) for x in instant],
            "template_boot_and_quiesce_s": round(parent_boot, 3),
            "snapshot_state_kb": state_kb,
            "child_private_mb": child_private,
            "child_shared_mb": child_shared,
            "parent_rss_mb": parent_mem["rss_mb"],
            "child_private_pct_of_parent_rss": round(100 * child_private / parent_mem["rss_mb"], 1),
            # What the clone copied of the guest's memory, against what the parent's guest uses.
            "child_guest_private_mb": child_guest_private,
            "parent_guest_rss_mb": parent_mem["guest_rss_mb"],
            "child_guest_private_pct_of_parent_guest":
                round(100 * child_guest_private / max(parent_mem["guest_rss_mb"], 0.1), 1),
            "parent": parent_mem,
            "children": kid_mem,
            "full_clone_memory": full_mem,
            "load_before_after": [LOAD0, list(os.getloadavg())],
            "machine": machine(),
        }
    finally:
        await p.close()
        env.cleanup()


LOAD0 = list(os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5, help="full clones and instant clones to time, each")
    ap.add_argument("--image", default="tiny",
                    help="tiny (busybox guest, built on demand), real (.build/qemu), or an image dir")
    ap.add_argument("--memory-mb", type=int, default=256, help="guest memory")
    ap.add_argument("--accel", default="tcg", choices=("auto", "kvm", "tcg"))
    args = ap.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
