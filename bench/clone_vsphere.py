"""Instant clone vs full clone on the vsphere provider, against VMware's simulator, in one run.

    .venv/bin/python bench/clone_vsphere.py [--n 10] [--guest]

A separate bench from bench/clone.py, which is built around the docker
provider's containers, zygote and pools; this one drives the vsphere provider
directly (no controller) against deploy/vcsim, like bench/clone_qemu.py does
for qemu. It measures the *API path*: the time of the provider call, i.e.
pyVmomi's round trips and the simulator's task handling. The simulator has no
disks and no memory to copy, so this is not ESXi's cost; the anchor for the
real thing is Fargo's instant clone in under a second (docs/vsphere.md).

1. Full clones: N `full_clone` calls, one at a time, from the template (a
   linked CloneVM_Task off its snapshot, then PowerOnVM_Task).
2. Instant clones: N `instant_clone` calls of a running parent (InstantClone_Task).
3. Fallback: N `instant_clone` calls on a simulator without InstantClone_Task
   (a linked CloneVM_Task off the parent's snapshot, then PowerOnVM_Task).

Without --guest the template has no RUN.container, so no guest container is
started and only the API is timed; with --guest every VM's guest (cowpod's VM
image) is started by the simulator inside the power-on, which then dominates.

The last line printed is one JSON object (keys as bench/clone.py's where they
mean the same: full_ready_p50_s, instant_ready_p50_s, speedup). The simulators,
their VMs and guest containers are removed at the end, even on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import pathlib
import statistics
import sys
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._cleanup import BenchRun  # noqa: E402
from hypervisor.provider import VMSpecInfo  # noqa: E402
from hypervisor.providers.vsphere.testing import Vcsim, VSphereTestEnv, sweep_dead_simulators  # noqa: E402
from hypervisor.testing import build_images, full_clone, instant_clone, machine  # noqa: E402


def spec(name: str, *, template: bool = False) -> VMSpecInfo:
    return VMSpecInfo(name=name, class_name="small", cpu_millis=1000, memory_bytes=512 << 20,
                      image="cowpod-template", template=template)


def p50(xs: list[float]) -> float:
    return round(statistics.median(xs), 4) if xs else 0.0


async def series(env: VSphereTestEnv, n: int, *, fallback: bool = False) -> dict[str, list[float]]:
    p = env.provider()
    try:
        await full_clone(p, spec("bench-parent", template=True))
        out: dict[str, list[float]] = {"full": [], "instant": []}
        for i in range(n):
            if not fallback:
                t0 = time.perf_counter()
                await full_clone(p, spec(f"bench-full-{i}"))
                out["full"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            info = await instant_clone(p, "bench-parent", spec(f"bench-inst-{i}"))
            out["instant"].append(time.perf_counter() - t0)
            assert info.clone_kind.value == "instant" and info.parent == "bench-parent"
        return out
    finally:
        await p.close()
        await env.cleanup()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load = [round(x, 2) for x in os.getloadavg()]
    if args.guest:
        build_images()
    sims: list[Vcsim] = []
    try:
        sims.append(Vcsim.start(guest=args.guest))
        main = await series(VSphereTestEnv(sims[0]), args.n)
        sims.append(Vcsim.start(guest=args.guest, instant_clone=False))
        fb = await series(VSphereTestEnv(sims[1]), args.n, fallback=True)
    finally:
        for sim in sims:
            sim.stop()
    full, inst, linked = main["full"], main["instant"], fb["instant"]
    return {
        "bench": "clone_vsphere",
        "ready_means": "the provider call returned: the VM exists and is powered on in the simulator"
                       + (" (its guest container started)" if args.guest else " (no guest: API path only)"),
        "server": "vcsim (govmomi 0.24 simulator + InstantClone_Task, deploy/vcsim)",
        "n": args.n,
        "guest": args.guest,
        "full_ready_p50_s": p50(full),
        "instant_ready_p50_s": p50(inst),
        "speedup": round(p50(full) / p50(inst), 2) if p50(inst) > 0 else None,
        "fallback_linked_ready_p50_s": p50(linked),
        "speedup_vs_fallback": round(p50(linked) / p50(inst), 2) if p50(inst) > 0 else None,
        "full_ready_s": [round(x, 4) for x in full],
        "instant_ready_s": [round(x, 4) for x in inst],
        "fallback_linked_ready_s": [round(x, 4) for x in linked],
        "load_avg": load,
        "machine": machine(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10, help="clones of each kind to time")
    p.add_argument("--guest", action="store_true", help="start each VM's guest container (cowpod's VM image)")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args()
    logging.basicConfig(level=args.log_level.upper())
    # The simulators stop with the run (by the run id in their environment), however it ends;
    # then their guest containers go with sweep_dead_simulators (after a SIGKILL: the next run's).
    with BenchRun("clone_vsphere", sweepers=(sweep_dead_simulators,)):
        result = asyncio.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
