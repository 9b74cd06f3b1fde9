"""Instant clone vs cold boot on the qemu provider, in one run on one machine.

    .venv/bin/python bench/clone_qemu.py [--n 5] [--image tiny|real|<dir>] [--memory-mb 256]
                                         [--accel auto|kvm|tcg]
    .venv/bin/python bench/clone_qemu.py --cluster [--n 3] [--memory-mb 1024]   # the real guest, node Ready

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

With `--cluster` (the real guest image, .build/qemu): an etcd member, the
controller and the VM manager run in this process, and "ready" is the node's
Ready condition as a watch sees it: VMService.Create of a full clone -> its
node Ready, VMService.Clone of the template parent -> the child's node Ready.

The last line printed is one JSON object. Everything runs in a private data dir
and RAM-file prefix and is removed at the end, even on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pathlib
import shutil
import statistics
import sys
import time
import uuid
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._cleanup import BenchRun, own_path  # noqa: E402
from cowpod.api.labels import (  # noqa: E402
    CLASS_LABEL,
    PARENT_TAINT_EFFECT,
    PARENT_TAINT_KEY,
    PARENT_TAINT_VALUE,
)
from hypervisor.provider import VMSpecInfo  # noqa: E402
from hypervisor.providers.qemu.provider import QemuProvider  # noqa: E402
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


def snapshot_ram_mb(p: QemuProvider, parent: str) -> float:
    """What the parent's guest had touched when it was quiesced: the frozen RAM
    file's allocated pages (a tmpfs file holds only the pages that were written)."""
    rec = read_record(p.vm_dir(parent))
    assert rec is not None and rec.snapshot
    snap = Snapshot.load(pathlib.Path(rec.snapshot))
    return round(snap.ram.stat().st_blocks * 512 / 2**20, 1) if snap.ram else 0.0


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



def memory_report(child_private: float, child_guest_private: float, parent_mem: dict[str, Any],
                  kid_mem: list[dict[str, Any]], full_mem: dict[str, Any], snap_mb: float) -> dict[str, Any]:
    """The memory keys both modes print: a clone's private memory against the running
    parent, what it copied of the guest's memory, the snapshot and a full clone."""
    return {
        "parent_rss_mb": parent_mem["rss_mb"],
        "child_private_pct_of_parent_rss": round(100 * child_private / parent_mem["rss_mb"], 1),
        # What the clone copied of the guest's memory, against what the parent's guest uses.
        "child_guest_private_mb": child_guest_private,
        "parent_guest_rss_mb": parent_mem["guest_rss_mb"],
        "child_guest_private_pct_of_parent_guest":
            round(100 * child_guest_private / max(parent_mem["guest_rss_mb"], 0.1), 1),
        # The parent at the fork point: its guest RAM in the snapshot; a full clone at Ready.
        "snapshot_ram_mb": snap_mb,
        "child_guest_private_pct_of_snapshot": round(100 * child_guest_private / max(snap_mb, 0.1), 1),
        "child_private_pct_of_full_clone": round(100 * child_private / full_mem["private_mb"], 1),
        "parent": parent_mem,
        "children": kid_mem,
        "full_clone_memory": full_mem,
        "load_before_after": [LOAD0, list(os.getloadavg())],
        "machine": machine(),
    }

async def run(args: argparse.Namespace) -> dict[str, Any]:
    image = tiny_image() if args.image == "tiny" else DEFAULT_IMAGE_DIR if args.image == "real" \
        else pathlib.Path(args.image)
    env = QemuTestEnv.create(image, accel=args.accel, tcg_cache_mb=args.tcg_cache_mb)
    own_path(env.data_dir, env.settings.ram_dir / f"cowpod.{env.cluster_id}.*")  # after a SIGKILL too
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
        snap_mb = snapshot_ram_mb(p, parent.name)
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
            **memory_report(child_private, child_guest_private, parent_mem, kid_mem, full_mem, snap_mb),
        }
    finally:
        await p.close()
        env.cleanup()


LOAD0 = list(os.getloadavg())


async def run_cluster(args: argparse.Namespace) -> dict[str, Any]:
    """Create -> node Ready and Clone -> node Ready through a real controller."""
    import tempfile

    from controller.autoscaler.reconciler import Autoscaler, Options
    from controller.testing import ControllerRunner
    from cowpod.client import Client
    from cowpod.clock import RealClock
    from cowpod.clusterconfig import ClusterConfig, VMClass
    from cowpod.informer import Informer
    from cowpod.local.etcd import EtcdMember
    from cowpod.v1 import meta_pb2, node_pb2, pod_pb2, vm_pb2
    from hypervisor.manager import VMManager
    from hypervisor.provider import ControllerAddress
    from scheduler.app import SchedulerApp
    from scheduler.config import SchedulerConfig

    cls = VMClass("bench", 2000, args.memory_mb << 20, max=4)
    running_at: dict[str, float] = {}

    async def on_pod(_t: int, p: pod_pb2.Pod) -> None:
        if p.status.phase == "Running":
            running_at.setdefault(p.metadata.name, time.time())
            changed.set()

    env = QemuTestEnv.create(DEFAULT_IMAGE_DIR, accel=args.accel, boot_timeout_s=900.0, start_timeout_s=300.0,
                             tcg_cache_mb=args.tcg_cache_mb)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="cpq-etcd-"))
    own_path(env.data_dir, env.settings.ram_dir / f"cowpod.{env.cluster_id}.*", tmp)  # after a SIGKILL too
    etcd = EtcdMember(data_dir=tmp / "etcd", log_path=tmp / "etcd.log")
    etcd.start()
    ready_at: dict[str, float] = {}
    changed = asyncio.Event()

    async def on_node(_t: int, n: node_pb2.Node) -> None:
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions):
            ready_at.setdefault(n.metadata.name, time.time())
            changed.set()

    async def seen(table: dict[str, float], name: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while name not in table:
            changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{name} not Ready/Running in {timeout:.0f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)
        return table[name]

    async def ready(name: str, timeout: float) -> float:
        return await seen(ready_at, name, timeout)

    def vm(name: str, template: bool = False) -> vm_pb2.VM:
        v = vm_pb2.VM(metadata=meta_pb2.ObjectMeta(name=name), spec=vm_pb2.VMSpec(
            class_name=cls.name, cpu_millis=cls.cpu_millis, memory_bytes=cls.memory_bytes, template=template))
        v.spec.node_labels[CLASS_LABEL] = cls.name
        return v

    try:
        etcd.wait_ready()
        async with (
            ControllerRunner(etcd.endpoint, "/bench", data_dir=env.data_dir) as runner,
            Client(runner.address) as client,
            asyncio.TaskGroup() as tg,
        ):
            controller = ControllerAddress(tcp=runner.address)
            p = QemuProvider(env.settings, env.context(controller), powerdown_grace_s=1.0)
            manager = VMManager(client, "qemu", env.data_dir, provider=p, controller=controller,
                                cluster_id=env.cluster_id, resync_seconds=1.0)
            tasks = [tg.create_task(manager.run(), name="bench-vm-manager"),
                     tg.create_task(Informer(client.nodes.Watch, handler=on_node, name="bench-nodes").run(),
                                    name="bench-nodes"),
                     tg.create_task(Informer(client.pods.Watch, handler=on_pod, name="bench-pods").run(),
                                    name="bench-pods")]
            try:
                full: list[float] = []
                for i in range(args.n):
                    name = f"full-{i}"
                    t0 = time.time()
                    await client.vms.Create(vm(name))
                    full.append(await ready(name, 900) - t0)
                    full_mem = memory(p.pid(name))
                    await client.vms.Destroy(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name=name)))
                t0 = time.time()
                # The autoscaler's warm parent for the class (it adopts it by name).
                parent = f"{cls.name}-parent"
                await client.vms.Create(vm(parent, template=True))
                parent_ready = await ready(parent, 900) - t0
                node = await client.nodes.Get(meta_pb2.ObjectKey(name=parent))
                node.spec.taints.add(
                    key=PARENT_TAINT_KEY, value=PARENT_TAINT_VALUE, effect=PARENT_TAINT_EFFECT
                )
                await client.nodes.Update(node)
                instant: list[float] = []
                kids = [f"kid-{i}" for i in range(args.n)]
                for k in kids:
                    t0 = time.time()
                    await client.vms.Clone(vm_pb2.CloneRequest(parent=parent, names=[k]))
                    instant.append(await ready(k, 300) - t0)
                parent_mem = memory(p.pid(parent))
                kid_mem = [memory(p.pid(k)) for k in kids]
                snap_mb = snapshot_ram_mb(p, parent)
                infos = [await p.get(k) for k in kids]
                provider_s = [i.ready_at - i.created_at for i in infos if i.ready_at]
                for k in kids:
                    await client.vms.Destroy(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name=k)))
                # Gone for the scheduler too, or it binds the pods below to a node about to go.
                deadline = time.monotonic() + 120
                while set(kids) & {n.metadata.name for n in
                                   (await client.nodes.List(meta_pb2.ListOptions())).items}:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the clones' nodes are still there")
                    await asyncio.sleep(0.2)

                # Pending -> Running: no node has room (the parent is tainted); the
                # autoscaler instant-clones the parent, the scheduler binds, the agent runs.
                sched = SchedulerApp(client, SchedulerConfig(initial_backoff_s=0.5), clock=RealClock(),
                                     identity="bench-scheduler")
                ccfg = ClusterConfig(vm_classes=(cls,), scan_interval_s=1.0, max_vms=4)
                autoscaler = Autoscaler(client, ccfg, options=Options(leader_elect=False))
                tasks += [tg.create_task(sched.run(), name="bench-scheduler"),
                          tg.create_task(autoscaler.run(), name="bench-autoscaler")]
                pods = [f"pod-{i}" for i in range(args.pods)]
                created: dict[str, float] = {}
                for n in pods:
                    pod = pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(name=n, namespace="default"))
                    c = pod.spec.containers.add(name="main", image="cowpod/busybox:latest",
                                                command=["sleep", "3600"])
                    c.resources.requests.cpu_millis = 200
                    c.resources.requests.memory_bytes = 32 << 20
                    created[n] = time.time()
                    await client.pods.Create(pod)
                pending = [await seen(running_at, n, 600) - created[n] for n in pods]
                vms = (await client.vms.List(meta_pb2.ListOptions())).items
                made = [v for v in vms if not v.spec.template]
            finally:
                for t in tasks:
                    t.cancel()
                await p.close()
        child_private = statistics.median(m["private_mb"] for m in kid_mem)
        child_guest_private = statistics.median(m["guest_private_mb"] for m in kid_mem)
        return {
            "bench": "clone_qemu --cluster",
            "image": str(DEFAULT_IMAGE_DIR),
            "accel": p.accel,
            "ready_means": "the node's Ready condition (VMService.Create/Clone -> watch)",
            "n": args.n,
            "memory_mb": args.memory_mb,
            "tcg_cache_mb": args.tcg_cache_mb,
            "full_ready_p50_s": p50(full),
            "instant_ready_p50_s": p50(instant),
            "speedup": round(p50(full) / p50(instant), 1) if instant else 0.0,
            "full_ready_s": [round(x, 3) for x in full],
            "instant_ready_s": [round(x, 3) for x in instant],
            # The provider's part of an instant clone: call -> the guest's "started".
            "instant_provider_p50_s": p50(provider_s),
            "template_parent_ready_s": round(parent_ready, 3),
            "pending_to_running_p50_s": p50(pending),
            "pending_to_running_s": [round(x, 3) for x in pending],
            "pending_vms": sorted(f"{v.metadata.name}:{v.status.clone_kind}" for v in made),
            "child_private_mb": child_private,
            "child_shared_mb": statistics.median(m["shared_mb"] for m in kid_mem),
            **memory_report(child_private, child_guest_private, parent_mem, kid_mem, full_mem, snap_mb),
        }
    finally:
        etcd.stop()
        env.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5, help="full clones and instant clones to time, each")
    ap.add_argument("--image", default="tiny",
                    help="tiny (busybox guest, built on demand), real (.build/qemu), or an image dir")
    ap.add_argument("--memory-mb", type=int, default=256, help="guest memory")
    ap.add_argument("--accel", default="tcg", choices=("auto", "kvm", "tcg"))
    ap.add_argument("--tcg-cache-mb", type=int, default=0, help="TCG's code cache per VM (0: QEMU's default)")
    ap.add_argument("--pods", type=int, default=3, help="--cluster: pods applied at once with no room")
    ap.add_argument("--cluster", action="store_true",
                    help="the real guest through a controller and the VM manager: node Ready times")
    args = ap.parse_args()

    # SIGTERM and SIGINT: the run's `finally` removes its VMs, then BenchRun stops what is left
    # (QEMU, etcd: by the run id in their environment); after a SIGKILL, the next bench run does.
    with BenchRun("clone_qemu"):
        result = asyncio.run(run_cluster(args) if args.cluster else run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
