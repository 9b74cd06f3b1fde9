"""Soak under chaos: pods created, deleted and recreated for M minutes while a random
component is SIGKILLed every few seconds. Nothing acknowledged may be lost.

    .venv/bin/python bench/soak.py --minutes 2 [--seed 1] [--pods 20] [--agents 2] [--rate 4] [--kill-every 5]

The cluster is real processes on loopback (tests/faults/cluster.py): one etcd member,
the controller, the scheduler and `--agents` node agents on the host's Docker.

- Workload: `--pods` slots; at about `--rate` operations per second, workers pick a slot,
  delete its pod (gracefully) and create the next generation (`soak-<slot>-<gen>`) with
  `Client.create` (retries UNAVAILABLE, idempotent by name and create-id). A create that
  returned is *acknowledged*.
- Chaos: every `--kill-every` s (jittered), whatever state the cluster is in, one of
  etcd, controller, scheduler or an agent that is up is SIGKILLed, left down 0.5-2 s and
  restarted; outages may overlap. After each restart a probe pod (pinned to the killed
  agent's node when an agent was killed) is created and waited for until Running: the
  time from the kill until then is that kill's *recovery*.
- Watching: one pod watch (an Informer that resumes across controller restarts) records
  every pod's node over time; a pod seen bound to a second node is a *double bind*. The
  Docker engine is sampled every 2 s: a pod whose container runs on two nodes at once is
  a *double run*.
- At the end everything is restarted, the cluster settles, and every pod whose latest
  acknowledged operation was its create must be stored with the acknowledged uid; each
  one that is not is *lost*.

Prints progress on stderr and, last, one JSON object on stdout with `acknowledged`,
`lost` (must be 0), `double_binds` (must be 0), `kills`, `max_recovery_s` and details.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import pathlib
import platform
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests/faults/cluster.py is the harness

import grpc  # noqa: E402

from bench._cleanup import BenchRun, own_docker, own_path  # noqa: E402
from cowpod.client import Client  # noqa: E402
from cowpod.informer import Informer  # noqa: E402
from cowpod.v1 import meta_pb2, pod_pb2  # noqa: E402
from tests.faults.cluster import FAULTS_LABEL, ProcCluster, run, sleeper_pod  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Slot:
    gen: int = 0
    # The latest acknowledged operation on this slot: ("create", name, uid) or ("delete", name, "").
    last: tuple[str, str, str] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class Stats:
    acknowledged: int = 0
    deletes: int = 0
    create_errors: int = 0
    kills: collections.Counter[str] = field(default_factory=collections.Counter)
    recoveries: list[tuple[str, float]] = field(default_factory=list)
    unrecovered: int = 0
    double_runs: set[str] = field(default_factory=set)


class Soak:
    def __init__(self, args: argparse.Namespace, root: pathlib.Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.cluster = ProcCluster(
            root,
            node_monitor_grace=5.0,
            node_monitor_period=1.0,
            pod_eviction_timeout=300.0,
            etcd_timeout=2.0,
            heartbeat_seconds=1.0,
        )
        self.nodes = [f"soak{i}-{self.cluster.run_id}" for i in range(args.agents)]
        self.slots = [Slot() for _ in range(args.pods)]
        self.stats = Stats()
        self.nodes_seen: dict[str, list[str]] = collections.defaultdict(list)
        self.stop = asyncio.Event()

    # -- components

    def components(self) -> list[str]:
        return ["etcd", "controller", "scheduler", *(f"agent-{n}" for n in self.nodes)]

    def start_all(self) -> None:
        c = self.cluster
        if not c.etcd_alive(0):
            c.start_etcd()
        if "controller" not in c.procs or not c.procs["controller"].alive:
            c.start_controller()
        if "scheduler" not in c.procs or not c.procs["scheduler"].alive:
            c.start_scheduler()
        for n in self.nodes:
            p = c.procs.get(f"agent-{n}")
            if p is None or not p.alive:
                c.start_agent(n)

    def kill(self, name: str) -> None:
        if name == "etcd":
            self.cluster.kill_etcd(0, signal.SIGKILL)
        else:
            self.cluster.kill(name)

    def restart(self, name: str) -> None:
        if name == "etcd":
            self.cluster.start_etcd(0)
        else:
            self.cluster.procs[name].start()

    # -- watching

    async def on_pod(self, _type: int, pod: pod_pb2.Pod) -> None:
        node = pod.spec.node_name
        seen = self.nodes_seen[pod.metadata.uid]
        if node and (not seen or seen[-1] != node):
            seen.append(node)

    async def sample_docker(self) -> None:
        fmt = '{{.Label "cowpod.pod.uid"}} {{.Label "cowpod.node"}}'
        while not self.stop.is_set():
            out = await run(
                "docker",
                "ps",
                "--filter",
                f"label={FAULTS_LABEL}={self.cluster.run_id}",
                "--filter",
                "label=cowpod.container.name=main",
                "--format",
                fmt,
            )
            where: dict[str, set[str]] = collections.defaultdict(set)
            for line in out.stdout.splitlines():
                uid, _, node = line.partition(" ")
                if uid:
                    where[uid].add(node)
            self.stats.double_runs.update(uid for uid, ns in where.items() if len(ns) > 1)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 2.0)

    # -- workload

    async def churn(self, c: Client, worker: int) -> None:
        rng = random.Random(self.args.seed * 1000 + worker)
        while not self.stop.is_set():
            i = rng.randrange(len(self.slots))
            slot = self.slots[i]
            if slot.lock.locked():
                await asyncio.sleep(0.01)
                continue
            async with slot.lock:
                if slot.last is not None and slot.last[0] == "create":
                    await self.delete(c, slot.last[1])
                    slot.last = ("delete", slot.last[1], "")
                    self.stats.deletes += 1
                slot.gen += 1
                name = f"soak-{i}-{slot.gen}"
                try:
                    pod = await c.create(
                        c.pods.Create, c.pods.Get, sleeper_pod(name), timeout=10, attempts=60, max_delay=2.0
                    )
                except grpc.RpcError as err:
                    self.stats.create_errors += 1
                    log(f"create {name} failed for good: {err}")
                    continue
                slot.last = ("create", name, pod.metadata.uid)
                self.stats.acknowledged += 1
            mean = self.args.workers / self.args.rate
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), rng.uniform(0.5, 1.5) * mean)

    async def delete(self, c: Client, name: str) -> None:
        """Until acknowledged (or the pod is already gone)."""
        opts = meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(namespace="default", name=name))
        for _ in range(120):
            try:
                await c.pods.Delete(opts, timeout=10)
                return
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.NOT_FOUND:
                    return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"could not delete {name}")

    # -- chaos

    async def chaos(self, c: Client) -> None:
        """Kill a random live component every few seconds, whatever state the cluster is in;
        each kill gets its own restart and recovery probe, so outages may overlap."""
        down_now: set[str] = set()
        async with asyncio.TaskGroup() as tg:
            k = 0
            while not self.stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(
                        self.stop.wait(), self.rng.uniform(0.5, 1.5) * self.args.kill_every
                    )
                if self.stop.is_set():
                    break
                victim = self.rng.choice([x for x in self.components() if x not in down_now])
                down = self.rng.uniform(0.5, 2.0)
                k += 1
                self.kill(victim)
                down_now.add(victim)
                self.stats.kills[victim] += 1
                log(f"kill {k}: {victim} (down {down:.1f}s)")
                tg.create_task(self.restart_and_probe(c, k, victim, down, time.monotonic(), down_now))

    async def restart_and_probe(
        self, c: Client, k: int, victim: str, down: float, t_kill: float, down_now: set[str]
    ) -> None:
        await asyncio.sleep(down)
        self.restart(victim)
        down_now.discard(victim)
        recovered = await self.probe(c, k, victim, t_kill)
        if recovered is None:
            self.stats.unrecovered += 1
            log(f"kill {k}: {victim}: NOT recovered within {self.args.recovery_timeout:.0f}s")
        else:
            self.stats.recoveries.append((victim, recovered))
            log(
                f"kill {k}: {victim}: recovered in {recovered:.1f}s "
                f"(acknowledged so far {self.stats.acknowledged})"
            )

    async def probe(self, c: Client, k: int, victim: str, t_kill: float) -> float | None:
        """A pod created after the kill runs: the whole pipeline works again."""
        node = victim.removeprefix("agent-") if victim.startswith("agent-") else ""
        name = f"probe-{k}"
        deadline = t_kill + self.args.recovery_timeout
        try:
            await c.create(
                c.pods.Create,
                c.pods.Get,
                sleeper_pod(name, node=node),
                timeout=10,
                attempts=60,
                max_delay=1.0,
            )
            while time.monotonic() < deadline:
                with contextlib.suppress(grpc.RpcError):
                    p = await c.pods.Get(meta_pb2.ObjectKey(namespace="default", name=name), timeout=5)
                    if p.status.phase == "Running":
                        return time.monotonic() - t_kill
                await asyncio.sleep(0.1)
            return None
        finally:
            with contextlib.suppress(grpc.RpcError, RuntimeError):
                await c.call(
                    c.pods.Delete,
                    meta_pb2.DeleteOptions(
                        key=meta_pb2.ObjectKey(namespace="default", name=name), grace_period_seconds=0
                    ),
                    attempts=20,
                )

    # -- the run

    async def main(self) -> dict[str, object]:
        cluster = self.cluster
        self.start_all()
        await cluster.wait_serving(60)
        async with cluster.client() as c:
            deadline_ready = time.monotonic() + 60
            while True:
                nodes = (await c.call(c.nodes.List, meta_pb2.ListOptions())).items
                if sum(
                    1
                    for n in nodes
                    if any(x.type == "Ready" and x.status == "True" for x in n.status.conditions)
                ) == len(self.nodes):
                    break
                if time.monotonic() > deadline_ready:
                    raise RuntimeError(f"nodes not Ready:\n{cluster.describe()}")
                await asyncio.sleep(0.2)
            log(
                f"cluster up: {len(self.nodes)} nodes; soaking {self.args.minutes} min, seed {self.args.seed}"
            )
            informer: Informer[pod_pb2.Pod] = Informer(c.pods.Watch, handler=self.on_pod, name="soak-pods")
            t0 = time.monotonic()
            async with asyncio.TaskGroup() as tg:
                watch = tg.create_task(informer.run())
                sampler = tg.create_task(self.sample_docker())
                workers = [tg.create_task(self.churn(c, w)) for w in range(self.args.workers)]
                chaos = tg.create_task(self.chaos(c))
                await asyncio.sleep(self.args.minutes * 60)
                self.stop.set()
                await asyncio.gather(chaos, *workers)
                log("chaos over; restarting anything down and letting the cluster settle")
                self.start_all()
                await cluster.wait_serving(60)
                settled = await self.settle(c)
                lost, wrong = await self.count_lost(c)
                sampler.cancel()
                watch.cancel()
            elapsed = time.monotonic() - t0
        double_binds = sum(1 for ns in self.nodes_seen.values() if len(ns) > 1)
        recov = [r for _, r in self.stats.recoveries]
        by_comp: dict[str, float] = {}
        for comp, r in self.stats.recoveries:
            key = "agent" if comp.startswith("agent-") else comp
            by_comp[key] = round(max(by_comp.get(key, 0.0), r), 2)
        kills_by: collections.Counter[str] = collections.Counter()
        for comp, n in self.stats.kills.items():
            kills_by["agent" if comp.startswith("agent-") else comp] += n
        return {
            "minutes": self.args.minutes,
            "seed": self.args.seed,
            "pods": self.args.pods,
            "agents": self.args.agents,
            "elapsed_s": round(elapsed, 1),
            "deletes": self.stats.deletes,
            "create_errors": self.stats.create_errors,
            "kills_by_component": dict(sorted(kills_by.items())),
            "max_recovery_s_by_component": dict(sorted(by_comp.items())),
            "median_recovery_s": round(sorted(recov)[len(recov) // 2], 2) if recov else None,
            "unrecovered_kills": self.stats.unrecovered,
            "double_runs": len(self.stats.double_runs),
            "pods_watched": len(self.nodes_seen),
            "settled": settled,
            "wrong_uid": wrong,
            "machine": f"{platform.machine()}, {_cpus()} CPUs, Python {platform.python_version()}",
            "acknowledged": self.stats.acknowledged,
            "lost": lost,
            "double_binds": double_binds,
            "kills": sum(self.stats.kills.values()),
            "max_recovery_s": round(max(recov), 2) if recov else None,
        }

    async def settle(self, c: Client, timeout: float = 120.0) -> bool:
        """Every pod we last created is bound and Running; every pod we deleted is gone."""
        want = {s.last[1] for s in self.slots if s.last is not None and s.last[0] == "create"}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.RpcError):
                pods = (await c.pods.List(meta_pb2.ListOptions(namespace="default"), timeout=10)).items
                running = {p.metadata.name for p in pods if p.status.phase == "Running" and p.spec.node_name}
                soak = {p.metadata.name for p in pods if p.metadata.name.startswith("soak-")}
                if want <= running and soak == want:
                    return True
            await asyncio.sleep(0.5)
        return False

    async def count_lost(self, c: Client) -> tuple[int, int]:
        resp = await c.call(c.pods.List, meta_pb2.ListOptions(namespace="default"), attempts=20)
        stored = {p.metadata.name: p.metadata.uid for p in resp.items}
        lost = wrong = 0
        for s in self.slots:
            if s.last is None or s.last[0] != "create":
                continue
            _, name, uid = s.last
            if name not in stored:
                lost += 1
                log(f"LOST: {name} (uid {uid}) was acknowledged and is not stored")
            elif stored[name] != uid:
                wrong += 1
                lost += 1
                log(f"LOST: {name} is stored with uid {stored[name]}, acknowledged as {uid}")
        return lost, wrong


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=2.0, help="how long the chaos lasts (default 2)")
    p.add_argument("--seed", type=int, default=1, help="seeds the victims, their downtimes and the workload")
    p.add_argument("--pods", type=int, default=20, help="pod slots churned (default 20)")
    p.add_argument("--agents", type=int, default=2, help="node agents on the host's Docker (default 2)")
    p.add_argument("--workers", type=int, default=4, help="concurrent churn workers (default 4)")
    p.add_argument(
        "--rate", type=float, default=4.0, help="delete+recreate operations per second (default 4)"
    )
    p.add_argument("--kill-every", type=float, default=5.0, help="mean seconds between kills (default 5)")
    p.add_argument(
        "--recovery-timeout", type=float, default=90.0, help="seconds a probe may take (default 90)"
    )
    p.add_argument("--keep", action="store_true", help="keep the data dir (logs) afterwards")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM/SIGINT: the teardown below runs, then BenchRun stops what is left; after a SIGKILL
    # the next bench run does (the cluster's processes by run id, its containers by label).
    with BenchRun("soak"):
        return soak_run(args)


def soak_run(args: argparse.Namespace) -> int:
    root = pathlib.Path(tempfile.mkdtemp(prefix="cowpod-soak-"))
    soak = Soak(args, root)
    own_docker(label=f"{FAULTS_LABEL}={soak.cluster.run_id}")
    if not args.keep:
        own_path(root)
    try:
        result = asyncio.run(soak.main())
    finally:
        soak.cluster.teardown()
        if args.keep:
            log(f"logs kept in {root / 'logs'}")
        else:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))
    ok = result["lost"] == 0 and result["double_binds"] == 0 and result["settled"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
