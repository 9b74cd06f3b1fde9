"""Scheduler throughput on hollow nodes, against the real controller and etcd.

    python bench/schedule.py --nodes 5000 --pods 20000 [--workload plain|mixed] [--mark-running]
                             [--concurrency 64] [--create-batch 16] [--etcd-group-commit 1]
                             [--precreate] [--profile scheduler.prof]

Starts etcd, measures its raw write rate through the controller's own etcd
client (`controller.store.EtcdStore`, pod-sized creates, one transaction each,
the same concurrency as the pod creates below), then starts the controller and
the scheduler as separate processes, registers hollow nodes from this process
(one channel, one unary Heartbeat per node every 10 s with jitter), creates the
pods as fast as `--concurrency` pods in flight allow (in PodService.CreateBatch
calls of `--create-batch`; 1 = unary Create) and watches until every pod is
bound. Prints binds/s, create->bound latency (p50/p99), scheduler CPU seconds
per 1,000 pods, CPU seconds of every process, peak RSS of the scheduler and the
controller, and the ratio binds/s : raw etcd creates/s. The last line is one
JSON object with every figure.

Also in the JSON: the controller's CPU per pod (`controller_cpu_ms_per_pod`, all of
it) and the same less what the fleet's heartbeats cost it with no pods moving
(`controller_idle_cpu_per_s`, sampled for `--idle-sample` seconds before the pods,
once every node heartbeats: `controller_cpu_us_per_heartbeat`); how long a restarted
scheduler takes to sync its caches against the full cluster (`scheduler_resync_s`,
`--no-resync` skips it); both processes' peak RSS together (`peak_rss_mib_total`);
and the machine's load average at the start and the end (`loadavg_start`,
`loadavg_end`): absolute figures on a shared machine mean little without it.

Everything shares the machine (2 cores here): etcd, the controller, the
scheduler and this process (hollow nodes + pod creation + the watch).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import pathlib
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.hollow import HollowFleet, HollowNodeSpec  # noqa: E402
from bench._cleanup import BenchRun, own_path  # noqa: E402
from cowpod.client import Client  # noqa: E402
from cowpod.local.etcd import EtcdMember, free_port  # noqa: E402
from cowpod.v1 import meta_pb2, pod_pb2  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- process accounting -------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def loadavg() -> list[float]:
    """The machine's 1/5/15-minute load averages: how much else ran beside the bench."""
    return [round(x, 2) for x in os.getloadavg()]


# ---- the controller as a separate process --------------------------------------------


def serve_controller(
    listen: str,
    etcd: str,
    prefix: str,
    lease_seconds: int,
    grace: float,
    profile: str = "",
    group_commit: int = 1,
) -> None:
    """Runs in the child process: the real Controller, insecure, without per-client
    rate limits (the bench's single client stands for thousands of agents)."""
    from controller.config import ControllerConfig
    from controller.limits import Limits
    from controller.main import setup_logging
    from controller.server import Controller
    from cowpod.gctuning import tune_for_server

    setup_logging("warning")
    tune_for_server()  # as controller.main does
    cfg = ControllerConfig(
        listen=listen,
        etcd=[etcd],
        etcd_prefix=prefix,
        insecure=True,
        node_lease_seconds=lease_seconds,
        etcd_group_commit=group_commit,
        node_monitor_grace=grace,
        limits=Limits(user_rate=1e9, user_burst=1_000_000_000, max_streams=100_000),
    )

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        ctl = Controller(cfg)
        with contextlib.suppress(asyncio.CancelledError):
            await ctl.run()
        store: Any = ctl.store
        print(f"etcd transactions sent {store.txns_sent}, callers' transactions merged {store.txns_shared}",
              file=sys.stderr, flush=True)

    if not profile:
        asyncio.run(main())
        return
    import cProfile

    prof = cProfile.Profile()
    prof.enable()
    try:
        asyncio.run(main())
    finally:
        prof.disable()
        prof.dump_stats(profile)


# ---- workloads ----------------------------------------------------------------------


def node_specs(n: int, workload: str, rng: random.Random) -> list[HollowNodeSpec]:
    out = []
    for i in range(n):
        labels = {"zone": f"zone-{i % 10}"}
        taints: list[tuple[str, str, str]] = []
        if workload == "mixed":
            if i % 4 == 0:
                labels["disk"] = "ssd"
            if i % 20 == 3:  # 5% GPU nodes; every zone keeps untainted nodes
                labels["gpu"] = "true"
                taints.append(("dedicated", "gpu", "NoSchedule"))
        out.append(
            HollowNodeSpec(
                f"hollow-{i:05d}",
                cpu_millis=32_000,
                memory_bytes=64 << 30,
                pods=110,
                labels=labels,
                taints=taints,
            )
        )
    return out


def make_pod(i: int, workload: str, rng: random.Random) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = f"bench-{i:06d}"
    p.metadata.namespace = "default"
    c = p.spec.containers.add()
    c.name = "app"
    c.image = "cowpod/busybox:latest"
    c.resources.requests.cpu_millis = 100
    c.resources.requests.memory_bytes = 128 << 20
    if workload == "mixed":
        kind = i % 20
        if kind < 5:  # 25%: node selector
            p.spec.node_selector["disk"] = "ssd"
        elif kind < 6:  # 5%: tolerate the gpu taint and ask for it
            p.spec.node_selector["gpu"] = "true"
            t = p.spec.tolerations.add()
            t.key, t.operator, t.value, t.effect = "dedicated", "Equal", "gpu", "NoSchedule"
        elif kind < 12:  # 25%: spread replicas of one app over zones
            app = f"svc-{i % 50}"
            p.metadata.labels["app"] = app
            sc = p.spec.topology_spread_constraints.add()
            sc.max_skew = 1
            sc.topology_key = "zone"
            sc.when_unsatisfiable = "DoNotSchedule"
            sc.label_selector.match_labels["app"] = app
        p.spec.priority = rng.choice([0, 0, 0, 100])
    return p


# ---- phases -------------------------------------------------------------------------


async def etcd_baseline(endpoint: str, n: int, concurrency: int, value_size: int) -> float:
    """Creates/s of pod-sized objects through the controller's etcd client."""
    from controller.store import EtcdStore

    store = EtcdStore([endpoint], "/bench-baseline")
    sample = make_pod(0, "plain", random.Random(0))
    sample.metadata.uid = "x" * 36
    pad = max(0, value_size - sample.ByteSize())
    sample.metadata.annotations["pad"] = "x" * pad
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        p = pod_pb2.Pod()
        p.CopyFrom(sample)
        p.metadata.name = f"b{i}"
        async with sem:
            await store.create(f"registry/pods/default/b{i}", p)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    dt = time.perf_counter() - t0
    await store.close()
    return n / dt


def spawn(cmd: list[str], log: pathlib.Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def healthz(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:  # loopback only
            return bool(r.status == 200)
    except OSError:
        return False


async def wait_healthz(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(healthz, url):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


@dataclasses.dataclass
class Result:
    figures: dict[str, Any]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    work = pathlib.Path(tempfile.mkdtemp(prefix="cowpod-bench-"))
    if not args.keep:
        own_path(work)
    procs: list[subprocess.Popen[bytes]] = []
    etcd = EtcdMember(data_dir=work / "etcd", log_path=work / "etcd.log")
    etcd.start()
    try:
        etcd.wait_ready()
        print(f"etcd on {etcd.endpoint}; work dir {work}", flush=True)
        sample_size = make_pod(0, args.workload, rng).ByteSize() + 200  # + uid, timestamps, status
        baseline_n = args.baseline_puts or min(args.pods, 20_000)
        etcd_rate = await etcd_baseline(etcd.endpoint, baseline_n, args.concurrency, sample_size)
        print(
            f"raw etcd creates (controller's client, concurrency {args.concurrency}): {etcd_rate:,.0f}/s",
            flush=True,
        )

        port = free_port()
        address = f"127.0.0.1:{port}"
        ctl = spawn(
            [
                sys.executable,
                __file__,
                "--serve-controller",
                address,
                "--etcd-endpoint",
                etcd.endpoint,
                "--lease-seconds",
                str(args.lease_seconds),
                "--etcd-group-commit",
                str(args.etcd_group_commit),
                *(["--controller-profile", args.controller_profile_path] if args.controller_profile else []),
            ],
            work / "controller.log",
        )
        procs.append(ctl)
        async with Client(address) as client:
            await client.wait_ready(60)
            fleet = HollowFleet(
                client,
                heartbeat_s=args.heartbeat,
                mark_running=args.mark_running,
                watch_pods=args.mark_running,
                concurrency=64,
                rng=rng,
            )
            async with asyncio.TaskGroup() as tg:
                fleet_task = tg.create_task(fleet.run(), name="fleet")
                t0 = time.perf_counter()
                await fleet.add_many(node_specs(args.nodes, args.workload, rng))
                reg_s = time.perf_counter() - t0
                print(f"{args.nodes} hollow nodes registered in {reg_s:.1f}s", flush=True)

                metrics_port = free_port()
                cfg_path = work / "scheduler.yaml"
                cfg_path.write_text(
                    f"percentageOfNodesToScore: {args.percentage}\nbatchSize: {args.batch}\n"
                    f"maxBindsInFlight: {args.binds_in_flight}\n"
                )
                cmd = [
                    sys.executable,
                    "-m",
                    "scheduler.main",
                    "--controller",
                    address,
                    "--config",
                    str(cfg_path),
                    "--metrics-listen",
                    f"127.0.0.1:{metrics_port}",
                    "--log-level",
                    "warning",
                    "--insecure",
                ]
                if args.profile:
                    cmd += ["--cprofile", args.profile_path]

                async def start_scheduler(wait: bool) -> subprocess.Popen[bytes]:
                    sched = spawn(cmd, work / "scheduler.log")
                    procs.append(sched)
                    if wait:
                        await wait_healthz(f"http://127.0.0.1:{metrics_port}/healthz", 120)
                        print("scheduler synced", flush=True)
                    return sched

                figures = await measure(args, client, rng, start_scheduler, ctl.pid, etcd, fleet, t0 + reg_s)
                fleet_task.cancel()
        figures["etcd_puts_per_s"] = round(etcd_rate, 1)
        figures["ratio"] = round(figures["binds_per_s"] / etcd_rate, 3)
        figures["nodes_register_s"] = round(reg_s, 2)
        return figures
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
        etcd.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


async def measure(
    args: argparse.Namespace,
    client: Client,
    rng: random.Random,
    start_scheduler: Callable[[bool], Awaitable[subprocess.Popen[bytes]]],
    ctl_pid: int,
    etcd: EtcdMember,
    fleet: HollowFleet,
    t_registered: float,
) -> dict[str, Any]:
    """Default: the scheduler is up and synced, then pods are created as fast as
    `--concurrency` allows; latency is create -> bound. With --precreate every pod
    exists (Pending) before the scheduler starts: binds/s is then the scheduler +
    BindBatch rate alone, and latency counts from the scheduler's start."""
    created_at: dict[str, float] = {}
    bound_at: dict[str, float] = {}
    all_bound = asyncio.Event()
    watch_ready = asyncio.Event()

    async def watch() -> None:
        opts = meta_pb2.WatchOptions(
            list=meta_pb2.ListOptions(field_selector="spec.nodeName!="), allow_batches=True
        )
        call = client.pods.Watch(opts)
        watch_ready.set()
        async for msg in call:
            now = time.perf_counter()
            for ev in msg.batch if len(msg.batch) else (msg,):
                if ev.type in (meta_pb2.ADDED, meta_pb2.MODIFIED) and ev.object.spec.node_name:
                    name = ev.object.metadata.name
                    if name not in bound_at:
                        bound_at[name] = now
                        if len(bound_at) >= args.pods:
                            all_bound.set()

    pods = [make_pod(i, args.workload, rng) for i in range(args.pods)]
    # --concurrency pods in flight, in CreateBatch calls of --create-batch pods (1 = unary Create).
    per_call = max(1, args.create_batch)
    chunks = [pods[i: i + per_call] for i in range(0, len(pods), per_call)]
    sem = asyncio.Semaphore(max(1, args.concurrency // per_call))

    async def create(chunk: list[pod_pb2.Pod]) -> None:
        async with sem:
            t = time.perf_counter()
            for p in chunk:
                created_at[p.metadata.name] = t
            if per_call == 1:
                await client.call(client.pods.Create, chunk[0], timeout=60)
                return
            req = pod_pb2.CreatePodsRequest(pods=chunk)
            resp = await client.call(client.pods.CreateBatch, req, timeout=60)
            failed = [r for r in resp.results if not r.ok]
            if failed:
                first = failed[0]
                raise RuntimeError(f"{len(failed)} creates failed, e.g. {first.pod.name}: {first.message}")

    def cpu(pid: int) -> dict[str, float]:
        return {
            "scheduler": cpu_seconds(pid),
            "controller": cpu_seconds(ctl_pid),
            "etcd": cpu_seconds(etcd.proc.pid) if etcd.proc else 0.0,
            "bench": self_cpu(),
        }

    async with asyncio.TaskGroup() as tg:
        w = tg.create_task(watch(), name="bound-watch")
        await watch_ready.wait()
        await asyncio.sleep(0.2)
        # The controller's CPU with the fleet registered and heartbeating but no pod work:
        # what a pod costs is then the rest (the heartbeats' share per pod falls as the pod
        # rate rises, so cpu_s.controller / pods alone mixes both).
        # A node's first heartbeat is due within one period of its registration: from then
        # on the fleet sends nodes/period heartbeats a second.
        await asyncio.sleep(max(0.0, t_registered + args.heartbeat - time.perf_counter()))
        idle0, hb0, t_idle = cpu_seconds(ctl_pid), fleet.heartbeats, time.perf_counter()
        await asyncio.sleep(args.idle_sample)
        idle_s = time.perf_counter() - t_idle
        idle_rate = (cpu_seconds(ctl_pid) - idle0) / idle_s
        hb_rate = (fleet.heartbeats - hb0) / idle_s
        if args.precreate:
            t0 = time.perf_counter()
            await asyncio.gather(*(create(c) for c in chunks))
            t_created = time.perf_counter()
            creates_per_s = args.pods / (t_created - t0)
            print(f"{args.pods} pods created in {t_created - t0:.1f}s ({creates_per_s:,.0f}/s)", flush=True)
            sched = await start_scheduler(False)
            cpu0 = cpu(sched.pid)
            t_start = time.perf_counter()
            created_at = dict.fromkeys(created_at, t_start)
        else:
            sched = await start_scheduler(True)
            cpu0 = cpu(sched.pid)
            t_start = time.perf_counter()
            await asyncio.gather(*(create(c) for c in chunks))
            t_created = time.perf_counter()
            creates_per_s = args.pods / (t_created - t_start)
            print(
                f"{args.pods} pods created in {t_created - t_start:.1f}s ({creates_per_s:,.0f}/s)", flush=True
            )
        deadline = time.perf_counter() + args.timeout
        while not all_bound.is_set():
            if sched.poll() is not None:
                raise RuntimeError(
                    f"the scheduler exited with {sched.returncode}; see scheduler.log (--keep)"
                )
            if time.perf_counter() > deadline:
                print(f"timeout: {len(bound_at)}/{args.pods} bound", flush=True)
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_bound.wait(), 1.0)
        w.cancel()
    sched_pid = sched.pid
    t_end = max(bound_at.values()) if bound_at else time.perf_counter()
    t_first = min(bound_at.values()) if bound_at else t_end
    cpu1 = cpu(sched_pid)
    sched_rss = peak_rss_mib(sched_pid)
    resync: dict[str, Any] = {}
    if args.resync:
        resync = await restart_scheduler(sched, start_scheduler)
    lat = sorted(bound_at[n] - created_at[n] for n in bound_at if n in created_at)
    # p99 per tenth of the pods in creation order: whether latency grows with the cluster's
    # size or comes in bursts.
    by_creation = [bound_at[n] - created_at[n] for n in sorted(created_at, key=created_at.__getitem__)
                   if n in bound_at]
    tenth = max(1, len(by_creation) // 10)
    parts = [by_creation[i: i + tenth] for i in range(0, len(by_creation), tenth)]
    p99_by_tenth = [round(sorted(part)[min(len(part) - 1, int(0.99 * len(part)))], 3) for part in parts]
    elapsed = t_end - t_start
    bound = len(bound_at)

    def pct(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))], 4) if lat else float("nan")

    used = {k: round(cpu1[k] - cpu0[k], 2) for k in cpu0}
    ctl_pod_cpu = (cpu1["controller"] - cpu0["controller"]) - idle_rate * elapsed
    ctl_rss = peak_rss_mib(ctl_pid)
    return {
        "mode": "precreate" if args.precreate else "create-while-scheduling",
        "nodes": args.nodes,
        "pods": args.pods,
        "workload": args.workload,
        "bound": bound,
        "elapsed_s": round(elapsed, 2),
        "binds_per_s": round(bound / elapsed, 1) if elapsed > 0 else 0.0,
        # From the first bind to the last: the rate once the scheduler is running.
        "steady_binds_per_s": round((bound - 1) / (t_end - t_first), 1)
        if bound > 1 and t_end > t_first
        else 0.0,
        "first_bind_s": round(t_first - t_start, 3) if bound_at else float("nan"),
        "creates_per_s": round(creates_per_s, 1),
        "p50_bind_s": pct(0.50),
        "p99_bind_s": pct(0.99),
        "p99_bind_s_by_tenth": p99_by_tenth,
        "mean_bind_s": round(statistics.fmean(lat), 4) if lat else float("nan"),
        "scheduler_cpu_s_per_1000_pods": round(used["scheduler"] * 1000 / max(bound, 1), 3),
        "cpu_s": used,
        "scheduler_peak_rss_mib": round(sched_rss, 1),
        "controller_peak_rss_mib": round(ctl_rss, 1),
        "peak_rss_mib_total": round(sched_rss + ctl_rss, 1),
        # Controller CPU per pod: all of it (heartbeats included), and less what the same
        # fleet cost it per second with no pods moving (`--idle-sample`).
        "controller_cpu_ms_per_pod": round(used["controller"] * 1000 / max(bound, 1), 3),
        "controller_idle_cpu_per_s": round(idle_rate, 3),
        "idle_heartbeats_per_s": round(hb_rate, 1),
        "controller_cpu_us_per_heartbeat": round(idle_rate * 1e6 / hb_rate, 1) if hb_rate else float("nan"),
        "controller_cpu_ms_per_pod_less_idle": round(ctl_pod_cpu * 1000 / max(bound, 1), 3),
        **resync,
    }


async def restart_scheduler(
    sched: subprocess.Popen[bytes],
    start_scheduler: Callable[[bool], Awaitable[subprocess.Popen[bytes]]],
) -> dict[str, Any]:
    """Stop the scheduler and start a new one against the full cluster: how long until its
    caches are synced again (/healthz answers 200: every node, pod and assigned pod listed
    and decoded), and its peak RSS doing so."""
    sched.send_signal(signal.SIGTERM)
    try:
        await asyncio.to_thread(sched.wait, 30)
    except subprocess.TimeoutExpired:
        sched.kill()
        await asyncio.to_thread(sched.wait)
    t0 = time.perf_counter()
    new = await start_scheduler(True)
    took = time.perf_counter() - t0
    return {
        "scheduler_resync_s": round(took, 2),
        "scheduler_resync_peak_rss_mib": round(peak_rss_mib(new.pid), 1),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=5000)
    p.add_argument("--pods", type=int, default=20000)
    p.add_argument(
        "--workload",
        choices=["plain", "mixed"],
        default="plain",
        help="mixed: node selectors, tainted GPU nodes with tolerating pods, zone spread, priorities",
    )
    p.add_argument("--concurrency", type=int, default=64, help="pod creates in flight (and baseline puts)")
    p.add_argument(
        "--create-batch",
        type=int,
        default=16,
        help="pods per PodService.CreateBatch call (1 = one unary Create per pod)",
    )
    p.add_argument(
        "--precreate",
        action="store_true",
        help="create every pod first, then start the scheduler (bind rate alone)",
    )
    p.add_argument("--mark-running", action="store_true", help="hollow agents also mark bound pods Running")
    p.add_argument("--heartbeat", type=float, default=10.0, help="hollow node heartbeat period (s)")
    p.add_argument("--lease-seconds", type=int, default=40)
    p.add_argument(
        "--etcd-group-commit", type=int, default=1, help="the controller's --etcd-group-commit (0 = off)"
    )
    p.add_argument("--percentage", type=int, default=0, help="percentageOfNodesToScore (0 = adaptive)")
    p.add_argument("--batch", type=int, default=256, help="scheduler batchSize")
    p.add_argument("--binds-in-flight", type=int, default=4)
    p.add_argument(
        "--baseline-puts", type=int, default=0, help="raw etcd creates to time (default min(pods, 20000))"
    )
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument(
        "--idle-sample",
        type=float,
        default=5.0,
        help="seconds the controller's CPU is sampled with the fleet heartbeating and no pods moving",
    )
    p.add_argument(
        "--no-resync",
        dest="resync",
        action="store_false",
        help="skip restarting the scheduler at the end (scheduler_resync_s: time to sync its caches again)",
    )
    p.add_argument("--profile", default="", help="write the scheduler's cProfile stats here")
    p.add_argument("--controller-profile", default="", help="write the controller's cProfile stats here")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--serve-controller", default="", help=argparse.SUPPRESS)
    p.add_argument("--etcd-endpoint", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.serve_controller:
        serve_controller(
            args.serve_controller,
            args.etcd_endpoint,
            "/cowpod",
            args.lease_seconds,
            float(args.lease_seconds),
            args.controller_profile,
            args.etcd_group_commit,
        )
        return
    t0 = self_cpu()
    load_start = loadavg()
    args.profile_path = str(pathlib.Path(args.profile).resolve()) if args.profile else ""
    args.controller_profile_path = (
        str(pathlib.Path(args.controller_profile).resolve()) if args.controller_profile else ""
    )
    with BenchRun("schedule"):  # SIGTERM/SIGINT/SIGKILL leave no etcd, controller or scheduler behind
        figures = asyncio.run(run(args))
    figures["machine"] = (
        f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    figures["bench_total_cpu_s"] = round(self_cpu() - t0, 1)
    figures["loadavg_start"] = load_start
    figures["loadavg_end"] = loadavg()
    print(
        f"binds/s {figures['binds_per_s']:,.0f}  raw etcd creates/s {figures['etcd_puts_per_s']:,.0f}  "
        f"ratio {figures['ratio']}  p50 {figures['p50_bind_s']}s  p99 {figures['p99_bind_s']}s  "
        f"scheduler CPU {figures['scheduler_cpu_s_per_1000_pods']}s/1000 pods  "
        f"RSS scheduler {figures['scheduler_peak_rss_mib']} MiB, "
        f"controller {figures['controller_peak_rss_mib']} MiB  "
        f"controller CPU {figures['controller_cpu_ms_per_pod']} ms/pod "
        f"({figures['controller_cpu_ms_per_pod_less_idle']} less idle)  "
        f"scheduler resync {figures.get('scheduler_resync_s', '-')}s  load {figures['loadavg_end']}",
        flush=True,
    )
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
