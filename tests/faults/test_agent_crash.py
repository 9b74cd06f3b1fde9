"""Agents are SIGKILLed on a real Docker engine (no VM container).

1. A killed agent leaves its containers running; while it is down its node goes
   Ready=Unknown (pods stay: they tolerate it for 300 s), a pod is deleted, one is
   added and one container dies. The restarted agent adopts what runs (nothing
   healthy is restarted: same container, same start time), stops the deleted pod,
   starts the new one, restarts the dead container, and statuses catch up.
2. An agent that stays dead loses its node: its pods are evicted (Failed, NodeLost)
   after their toleration, the ReplicaSet replaces them on the other node, and
   when the agent comes back it stops the evicted pods instead of running
   duplicates. `cowpod get events` shows why; /metrics counts the evictions;
   `cowpod drain` then moves the pods back.
"""

from __future__ import annotations

import re

import pytest

from cowpod.v1 import meta_pb2, node_pb2, pod_pb2, workload_pb2
from tests.faults.cluster import (
    BUSYBOX,
    ProcCluster,
    cli,
    containers,
    eventually,
    get_pod,
    list_pods,
    run,
    sleeper_pod,
)

pytestmark = pytest.mark.faults

UNREACHABLE = "node.kubernetes.io/unreachable"


async def node_ready(c, name: str) -> str:  # type: ignore[no-untyped-def]
    node: node_pb2.Node = await c.nodes.Get(meta_pb2.ObjectKey(name=name), timeout=5)
    return next((x.status for x in node.status.conditions if x.type == "Ready"), "")


async def is_running(c, name: str) -> bool:  # type: ignore[no-untyped-def]
    p = await get_pod(c, name)
    return (
        p is not None and p.status.phase == "Running" and all(cs.ready for cs in p.status.container_statuses)
    )


def app_containers(cluster: ProcCluster, pod: str) -> list[dict[str, str]]:
    return containers(cluster.run_id, f"cowpod.pod.name={pod}", "cowpod.container.name=main")


async def test_killed_agent_keeps_pods_and_reconciles_on_restart(make_cluster, docker_images) -> None:  # type: ignore[no-untyped-def]
    cluster: ProcCluster = make_cluster(pod_eviction_timeout=300.0)
    node = f"fa-{cluster.run_id}"
    cluster.start_etcd()
    cluster.start_controller()
    await cluster.wait_serving()
    cluster.start_agent(node)
    async with cluster.client() as c:
        await eventually(
            lambda: _eq(node_ready(c, node), "True"), what="node Ready", explain=cluster.describe
        )
        for name in ("keep", "remove", "crash"):
            await c.create(c.pods.Create, c.pods.Get, sleeper_pod(name, node=node))
        for name in ("keep", "remove", "crash"):
            await eventually(
                lambda n=name: is_running(c, n), what=f"{name} Running", explain=cluster.describe
            )
        [before] = app_containers(cluster, "keep")
        keep_pod = await get_pod(c, "keep")
        assert keep_pod is not None
        restarts_before = keep_pod.status.container_statuses[0].restart_count

        cluster.kill(f"agent-{node}")
        # The pods' containers do not depend on the agent.
        assert [x["state"] for x in app_containers(cluster, "keep")] == ["running"]
        await eventually(lambda: _eq(node_ready(c, node), "Unknown"), what="node Ready=Unknown")
        # Meanwhile: a pod is deleted, one is added, a container dies.
        await c.pods.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="remove")))
        await c.create(c.pods.Create, c.pods.Get, sleeper_pod("added", node=node))
        [crashing] = app_containers(cluster, "crash")
        assert (await run("docker", "kill", crashing["id"])).returncode == 0
        removing = await get_pod(c, "remove")
        assert removing is not None and removing.metadata.HasField(
            "deletion_timestamp"
        )  # waits for its agent
        still = await get_pod(c, "keep")
        assert still is not None and still.status.phase == "Running"  # tolerated: not evicted

        cluster.start_agent(node)
        await eventually(
            lambda: _eq(node_ready(c, node), "True"), what="node Ready again", explain=cluster.describe
        )
        await eventually(lambda: is_running(c, "added"), what="added pod Running", explain=cluster.describe)
        await eventually(lambda: _gone(c, "remove"), what="deleted pod finalized", explain=cluster.describe)
        assert app_containers(cluster, "remove") == []

        async def crash_restarted() -> bool:
            p = await get_pod(c, "crash")
            return (
                p is not None
                and p.status.phase == "Running"
                and p.status.container_statuses[0].restart_count >= 1
                and p.status.container_statuses[0].ready
            )

        await eventually(
            crash_restarted, what="dead container restarted and reported", explain=cluster.describe
        )
        # The healthy pod was adopted, not restarted.
        [after] = [x for x in app_containers(cluster, "keep") if x["state"] == "running"]
        assert (after["id"], after["started"]) == (before["id"], before["started"])
        keep_after = await get_pod(c, "keep")
        assert keep_after is not None and keep_after.metadata.uid == keep_pod.metadata.uid
        assert keep_after.status.container_statuses[0].restart_count == restarts_before
        n = await c.nodes.Get(meta_pb2.ObjectKey(name=node))
        assert not any(t.key == UNREACHABLE for t in n.spec.taints)


def replicaset(name: str, replicas: int, cpu_millis: int) -> workload_pb2.ReplicaSet:
    rs = workload_pb2.ReplicaSet()
    rs.metadata.name = name
    rs.metadata.namespace = "default"
    rs.spec.replicas = replicas
    rs.spec.template.metadata.labels["app"] = name
    t = rs.spec.template.spec
    ctr = t.containers.add(name="main", image=BUSYBOX, command=["sleep", "100000"])
    ctr.resources.requests.cpu_millis = cpu_millis
    ctr.resources.requests.memory_bytes = 8 << 20
    t.termination_grace_period_seconds = 1
    return rs


def active(pods: list[pod_pb2.Pod]) -> list[pod_pb2.Pod]:
    return [p for p in pods if not p.metadata.HasField("deletion_timestamp") and p.status.phase != "Failed"]


async def test_lost_node_pods_are_replaced_and_never_duplicated(make_cluster, docker_images) -> None:  # type: ignore[no-untyped-def]
    cluster: ProcCluster = make_cluster(node_monitor_grace=3.0, pod_eviction_timeout=2.0)
    nodes = [f"fl{i}-{cluster.run_id}" for i in (1, 2)]
    cluster.start_etcd()
    cluster.start_controller()
    await cluster.wait_serving()
    cluster.start_scheduler()
    for n in nodes:
        cluster.start_agent(n)
    async with cluster.client() as c:
        for n in nodes:
            await eventually(
                lambda n=n: _eq(node_ready(c, n), "True"), what=f"{n} Ready", explain=cluster.describe
            )
        # 600m each: at most 3 per node, so the survivor always has room for the replacements.
        await c.replicasets.Create(replicaset("web", 2, 600))

        async def running_pods(n: int) -> bool:
            pods = active(await list_pods(c, "app=web"))
            return len(pods) == n and all(p.status.phase == "Running" for p in pods)

        await eventually(
            lambda: running_pods(2), timeout=60, what="2 replicas Running", explain=cluster.describe
        )
        first = active(await list_pods(c, "app=web"))
        victim = first[0].spec.node_name
        survivor = next(n for n in nodes if n != victim)
        lost = [p.metadata.name for p in first if p.spec.node_name == victim]

        cluster.kill(f"agent-{victim}")
        await eventually(lambda: _eq(node_ready(c, victim), "Unknown"), what="victim Ready=Unknown")

        async def evicted() -> bool:
            ps = [await get_pod(c, name) for name in lost]
            return all(
                p is not None and p.status.phase == "Failed" and p.status.reason == "NodeLost" for p in ps
            )

        await eventually(evicted, what="pods of the lost node Failed/NodeLost", explain=cluster.describe)
        await eventually(
            lambda: running_pods(2), timeout=60, what="replacements Running", explain=cluster.describe
        )
        replaced = active(await list_pods(c, "app=web"))
        assert all(p.spec.node_name == survivor for p in replaced)
        assert not {p.metadata.name for p in replaced} & set(lost)
        # Nobody could stop the lost pods' containers yet: for a while both run.
        assert all(any(x["state"] == "running" for x in app_containers(cluster, name)) for name in lost)

        # Why, for a human: events and metrics.
        out = (await cli(cluster, "get", "events")).stdout
        assert "NodeLost" in out and f"pod/{lost[0]}" in out and "SuccessfulCreate" in out
        m = re.search(
            r'^cowpod_controller_evictions_total\{reason="NodeLost"\} (\S+)$', cluster.metrics(), re.M
        )
        assert m is not None and float(m.group(1)) >= len(lost)

        # The agent returns: it stops the evicted pods rather than keeping duplicates.
        cluster.start_agent(victim)
        await eventually(lambda: _eq(node_ready(c, victim), "True"), what="victim Ready again")

        async def no_duplicates() -> bool:
            running = [x for name in lost for x in app_containers(cluster, name) if x["state"] == "running"]
            return not running and all([await _gone(c, name) for name in lost])

        await eventually(
            no_duplicates, timeout=60, what="evicted pods stopped and finalized", explain=cluster.describe
        )
        assert await running_pods(2)

        # Drain the survivor: its pods move back (the ReplicaSet replaces them on the other node).
        done = await cli(cluster, "drain", survivor, "--timeout", "60s")
        assert done.returncode == 0, done.stderr
        assert f"node/{survivor} drained" in done.stdout
        await eventually(
            lambda: running_pods(2), timeout=60, what="pods Running after the drain", explain=cluster.describe
        )
        assert all(p.spec.node_name == victim for p in active(await list_pods(c, "app=web")))
        sn = await c.nodes.Get(meta_pb2.ObjectKey(name=survivor))
        assert sn.spec.unschedulable


async def _eq(value, expected: str) -> bool:  # type: ignore[no-untyped-def]
    return bool((await value) == expected)


async def _gone(c, name: str) -> bool:  # type: ignore[no-untyped-def]
    return await get_pod(c, name) is None
