"""etcd goes away: frozen, then dead, for 20 s; a compaction under a resuming watch;
one member of a 3-member cluster killed.

During the outage the API answers every call within a few seconds with UNAVAILABLE
and a message naming etcd (never hangs, never UNKNOWN); health says NOT_SERVING;
the scheduler keeps its cache. When etcd returns, everything resumes: watches
continue from their last revision, new pods are scheduled and run, and no node
is declared lost or has its pods evicted because heartbeats could not be stored.
"""

from __future__ import annotations

import asyncio
import collections
import re
import signal
import time

import grpc
import pytest

from agent.hollow import HollowFleet, HollowNodeSpec
from cowpod.informer import Informer
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2
from tests.faults.cluster import ProcCluster, eventually, list_pods, run, sleeper_pod

pytestmark = pytest.mark.faults

OUTAGE_SECONDS = 20.0


def etcdctl(cluster: ProcCluster, *args: str, endpoints: str = "") -> list[str]:
    return ["etcdctl", "--endpoints", endpoints or cluster.etcd_endpoints, *args]


async def all_running(c, n: int) -> bool:  # type: ignore[no-untyped-def]
    pods = await list_pods(c)
    return len(pods) == n and all(p.status.phase == "Running" and p.spec.node_name for p in pods)


async def test_etcd_down_for_20s_then_everything_resumes(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster: ProcCluster = make_cluster(etcd_timeout=2.0, node_monitor_grace=3.0, pod_eviction_timeout=2.0)
    cluster.start_etcd()
    cluster.start_controller()
    await cluster.wait_serving()
    cluster.start_scheduler()
    seen: collections.Counter[str] = collections.Counter()

    tainted: set[str] = set()

    async def on_pod(type_: int, pod: pod_pb2.Pod) -> None:
        seen[meta_pb2.WatchEventType.Name(type_)] += 1

    async def on_node(type_: int, node: node_pb2.Node) -> None:
        if any(t.key == "node.kubernetes.io/unreachable" for t in node.spec.taints):
            tainted.add(node.metadata.name)

    async with cluster.client() as c, asyncio.TaskGroup() as tg:
        fleet = HollowFleet(c, heartbeat_s=1.0)
        await fleet.add_many([HollowNodeSpec(f"h{i}") for i in range(3)])
        fleet_task = tg.create_task(fleet.run())
        for i in range(10):
            await c.create(c.pods.Create, c.pods.Get, sleeper_pod(f"before-{i}"))
        await eventually(lambda: all_running(c, 10), what="10 pods Running", explain=cluster.describe)
        informer: Informer[pod_pb2.Pod] = Informer(c.pods.Watch, handler=on_pod, name="test-pods")
        watch_task = tg.create_task(informer.run())
        nodes: Informer[node_pb2.Node] = Informer(c.nodes.Watch, handler=on_node, name="test-nodes")
        nodes_task = tg.create_task(nodes.run())
        await eventually(lambda: _true(informer.synced and nodes.synced), what="informers synced")
        rv_before = informer.resource_version

        # --- the outage: first frozen (connections hang), then dead (connections refused).
        started = time.monotonic()
        cluster.kill_etcd(0, signal.SIGSTOP)
        codes: collections.Counter[str] = collections.Counter()
        slowest = 0.0
        details: list[str] = []
        answered: list[str] = []
        while time.monotonic() - started < OUTAGE_SECONDS:
            if time.monotonic() - started >= OUTAGE_SECONDS / 2 and cluster.etcd_alive(0):
                cluster.kill_etcd(0, signal.SIGKILL)  # frozen first, dead for the second half
            for what, call in (
                ("pods.Create", lambda: c.pods.Create(sleeper_pod("during"), timeout=30)),
                ("pods.Get", lambda: c.pods.Get(meta_pb2.ObjectKey(name="before-0"), timeout=30)),
                ("nodes.List", lambda: c.nodes.List(meta_pb2.ListOptions(), timeout=30)),
            ):
                t0 = time.monotonic()
                try:
                    await call()
                    codes["OK"] += 1
                    answered.append(f"{what} answered OK {t0 - started:.2f}s into the outage")
                except grpc.aio.AioRpcError as err:
                    codes[err.code().name] += 1
                    details.append(err.details() or "")
                slowest = max(slowest, time.monotonic() - t0)
            await asyncio.sleep(0.5)
        healthy_during = await c.healthy()
        scheduler_nodes = _gauge(cluster.metrics(cluster.scheduler_metrics_port), "cowpod_scheduler_nodes")
        assert cluster.procs["controller"].alive and cluster.procs["scheduler"].alive
        cluster.start_etcd(0)

        # --- while it was down
        assert set(codes) == {"UNAVAILABLE"}, (codes, answered)
        assert slowest < 10.0, f"a call took {slowest:.1f}s during the outage"
        assert all("etcd" in d for d in details), details[:3]
        assert not healthy_during
        assert scheduler_nodes == 3.0  # the scheduler kept its cache

        # --- after it returns
        await cluster.wait_serving()
        for i in range(5):
            await c.create(c.pods.Create, c.pods.Get, sleeper_pod(f"after-{i}"))
        await eventually(
            lambda: all_running(c, 15), timeout=60, what="15 pods Running", explain=cluster.describe
        )
        # The watch resumed from its last revision (no relist: no second initial list).
        assert informer.resource_version > rv_before
        assert {k[1] for k in informer.cache} == {
            *(f"before-{i}" for i in range(10)),
            *(f"after-{i}" for i in range(5)),
        }
        assert all(p.status.phase == "Running" for p in informer.cache.values())
        # Nobody was declared lost because heartbeats could not be stored meanwhile: node
        # lifecycle gives agents a grace period after etcd returns, as after a restart.
        await asyncio.sleep(cluster.node_monitor_grace + 1)
        assert not tainted, f"nodes marked unreachable after the outage: {sorted(tainted)}"
        assert not [p.metadata.name for p in await list_pods(c) if p.status.reason == "NodeLost"]
        for t in (watch_task, nodes_task, fleet_task):
            t.cancel()


async def test_watch_relists_after_compaction(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """A watcher resuming from a compacted revision gets OUT_OF_RANGE and relists: it learns
    about the deletion it missed as a DELETED, and about new objects as ADDED."""
    cluster: ProcCluster = make_cluster()
    cluster.start_etcd()
    cluster.start_controller()
    await cluster.wait_serving()
    events: list[tuple[str, str]] = []

    async def on_pod(type_: int, pod: pod_pb2.Pod) -> None:
        events.append((meta_pb2.WatchEventType.Name(type_), pod.metadata.name))

    async with cluster.client() as c:
        for name in ("a", "b"):
            await c.create(c.pods.Create, c.pods.Get, sleeper_pod(name))
        informer: Informer[pod_pb2.Pod] = Informer(c.pods.Watch, handler=on_pod, name="test-pods")
        task = asyncio.create_task(informer.run())
        await eventually(lambda: _true(informer.synced and len(informer.cache) == 2), what="synced")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stale_rv = informer.resource_version
        await c.pods.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="a"), grace_period_seconds=0))
        await c.create(c.pods.Create, c.pods.Get, sleeper_pod("c"))
        status = await run(*etcdctl(cluster, "endpoint", "status", "--write-out", "json"))
        rev = int(re.search(r'"revision":(\d+)', status.stdout).group(1))  # type: ignore[union-attr]
        assert (await run(*etcdctl(cluster, "compact", str(rev)))).returncode == 0
        # A restarted controller has no recent events in memory: the resume goes to etcd.
        cluster.kill("controller")
        cluster.start_controller()
        await cluster.wait_serving()
        events.clear()
        task = asyncio.create_task(informer.run())
        try:
            await eventually(
                lambda: _true({k[1] for k in informer.cache} == {"b", "c"}), what="relisted cache"
            )
        finally:
            task.cancel()
        assert ("DELETED", "a") in events and ("ADDED", "c") in events
        assert informer.resource_version > stale_rv


async def test_one_of_three_etcd_members_killed_loses_nothing(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster: ProcCluster = make_cluster(etcd_members=3, etcd_timeout=2.0)
    cluster.start_etcd()
    cluster.start_controller()
    await cluster.wait_serving()
    acked: list[str] = []
    async with cluster.client() as c:

        async def writer(prefix: str, n: int) -> None:
            for i in range(n):
                p = await c.create(c.pods.Create, c.pods.Get, sleeper_pod(f"{prefix}-{i:03d}"), attempts=40)
                acked.append(p.metadata.name)

        writers = [asyncio.create_task(writer(f"w{k}", 60)) for k in range(4)]
        await eventually(lambda: _true(len(acked) >= 40), what="first writes")
        # Kill the leader: the harder case (an election must happen).
        status = await run(*etcdctl(cluster, "endpoint", "status", "--write-out", "json"))
        leader_id = re.search(r'"leader":(\d+)', status.stdout).group(1)  # type: ignore[union-attr]
        statuses = re.findall(r'"Endpoint":"([^"]+)".*?"member_id":(\d+)', status.stdout)
        victim = next(
            i
            for i, m in enumerate(cluster.etcd)
            if any(ep.endswith(m.endpoint) and mid == leader_id for ep, mid in statuses)
        )
        cluster.kill_etcd(victim, signal.SIGKILL)
        at_kill = len(acked)
        await asyncio.gather(*writers)
        assert len(acked) == 240 and at_kill < 240
        names = {p.metadata.name for p in await list_pods(c)}
        assert names == set(acked)
        # The member comes back and catches up.
        cluster.start_etcd(victim)
        ep = cluster.etcd[victim].endpoint

        async def caught_up() -> bool:
            out = await run(
                *etcdctl(
                    cluster,
                    "get",
                    "--prefix",
                    "--keys-only",
                    "--consistency=s",
                    "/cowpod/registry/pods/",
                    endpoints=ep,
                )
            )
            return out.returncode == 0 and len([k for k in out.stdout.split() if k]) == 240

        await eventually(caught_up, timeout=30, what="restarted member caught up")
        assert (await run(*etcdctl(cluster, "endpoint", "health"))).returncode == 0


def _gauge(text: str, name: str) -> float:
    m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(m.group(1)) if m else -1.0


async def _true(value: bool) -> bool:
    return value
