"""Smoke test: a few hundred hollow nodes in this process, the real controller
and etcd, the scheduler; every pod ends up Running, spread as asked."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from agent.hollow import HollowNodeSpec
from controller.testing import ControllerRunner
from cowpod.client import Client
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import meta_pb2, pod_pb2
from tests.integration.scheduler_harness import (
    all_pods,
    fast_controller,
    hollow_fleet,
    pod,
    running_scheduler,
)
from tests.polling import eventually

pytestmark = pytest.mark.integration

NODES = 300


@pytest.fixture
async def controller(etcd: EtcdMember, etcd_prefix: str) -> AsyncIterator[ControllerRunner]:
    async with fast_controller(etcd.endpoint, etcd_prefix) as runner:
        yield runner


@pytest.fixture
async def client(controller: ControllerRunner) -> AsyncIterator[Client]:
    async with Client(controller.address) as c:
        yield c


def spread_pod(name: str) -> pod_pb2.Pod:
    p = pod(name, cpu=50, memory=16 << 20, labels={"app": "web"})
    c = p.spec.topology_spread_constraints.add()
    c.max_skew = 1
    c.topology_key = "kubernetes.io/hostname"
    c.when_unsatisfiable = "DoNotSchedule"
    c.label_selector.match_labels["app"] = "web"
    return p


async def test_hundreds_of_hollow_nodes(client: Client, controller: ControllerRunner) -> None:
    specs = [
        HollowNodeSpec(f"hollow-{i:04d}", cpu_millis=2000, memory_bytes=4 << 30, labels={"zone": f"z{i % 3}"})
        for i in range(NODES)
    ]
    async with (
        hollow_fleet(client, specs, heartbeat_s=2.0) as fleet,
        running_scheduler(controller.address, "s") as (app, _),
    ):
        nodes = (await client.nodes.List(meta_pb2.ListOptions())).items
        assert len(nodes) == NODES
        assert all(any(c.type == "Ready" and c.status == "True" for c in n.status.conditions) for n in nodes)
        await app.leading.wait()
        sem = asyncio.Semaphore(32)

        async def create(p: pod_pb2.Pod) -> None:
            async with sem:
                await client.pods.Create(p)

        await asyncio.gather(
            *(create(spread_pod(f"web-{i}")) for i in range(NODES)),
            *(create(pod(f"batch-{i}", cpu=100, memory=64 << 20)) for i in range(NODES)),
        )

        async def all_running() -> bool:
            ps = await all_pods(client)
            return len(ps) == 2 * NODES and all(p.status.phase == "Running" for p in ps)

        await eventually(all_running, timeout=120, what="600 pods Running")
        ps = await all_pods(client)
        web = Counter(p.spec.node_name for p in ps if p.metadata.labels.get("app") == "web")
        assert len(web) == NODES and set(web.values()) == {1}  # one replica per VM
        assert fleet.marked_running == 2 * NODES
        assert app.scheduler.scheduled == 2 * NODES
        # Heartbeats flow (one loop for all nodes, not a task per node).
        await eventually(lambda: _ge(fleet.heartbeats, NODES), timeout=30, what="a heartbeat per node")


async def _ge(a: int, b: int) -> bool:
    return a >= b
