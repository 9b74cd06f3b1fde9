"""podAntiAffinity, podAffinity and PriorityClasses through the real scheduler, a real
controller and etcd, on hollow nodes: replicas one per VM, the one that cannot be placed
explained as Kubernetes explains it, a follower next to its leader's VM class."""

from __future__ import annotations

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

HOSTNAME = "kubernetes.io/hostname"
CLASS = "cowpod.io/class"


@pytest.fixture
async def controller(etcd: EtcdMember, etcd_prefix: str) -> AsyncIterator[ControllerRunner]:
    async with fast_controller(etcd.endpoint, etcd_prefix) as runner:
        yield runner


@pytest.fixture
async def client(controller: ControllerRunner) -> AsyncIterator[Client]:
    async with Client(controller.address) as c:
        yield c


def term(key: str, **match: str) -> pod_pb2.PodAffinityTerm:
    return pod_pb2.PodAffinityTerm(label_selector=pod_pb2.LabelSelector(match_labels=match), topology_key=key)


async def test_anti_affinity_one_per_vm_and_affinity_to_a_class(
    client: Client, controller: ControllerRunner
) -> None:
    specs = [HollowNodeSpec("small-1", labels={CLASS: "small"}),
             HollowNodeSpec("small-2", labels={CLASS: "small"}),
             HollowNodeSpec("big-1", labels={CLASS: "big"})]
    async with hollow_fleet(client, specs, heartbeat_s=5.0), running_scheduler(controller.address, "s1"):
        for i in range(4):
            p = pod(f"web-{i}", labels={"app": "web"})
            p.spec.affinity.pod_anti_affinity.required_during_scheduling_ignored_during_execution.append(
                term(HOSTNAME, app="web"))
            await client.pods.Create(p)

        async def three_placed_one_explained() -> bool:
            ps = await all_pods(client)
            bound = [p for p in ps if p.spec.node_name]
            waiting = [p for p in ps if not p.spec.node_name]
            return len(bound) == 3 and len(waiting) == 1 and any(
                c.type == "PodScheduled" and c.status == "False" for c in waiting[0].status.conditions)

        await eventually(three_placed_one_explained, what="3 web pods on 3 VMs, 1 pending", timeout=60.0)
        ps = await all_pods(client)
        assert sorted(p.spec.node_name for p in ps if p.spec.node_name) == ["big-1", "small-1", "small-2"]
        pending = next(p for p in ps if not p.spec.node_name)
        why = next(c.message for c in pending.status.conditions if c.type == "PodScheduled")
            # The placed replicas' own anti-affinity is checked first, as in Kubernetes.
        assert why == "0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules."

        leader = pod("db", labels={"app": "db"})
        leader.spec.node_selector[CLASS] = "big"
        await client.pods.Create(leader)
        follower = pod("cache")
        follower.spec.affinity.pod_affinity.required_during_scheduling_ignored_during_execution.append(
            term(CLASS, app="db"))
        await client.pods.Create(follower)

        async def follower_placed() -> bool:
            got = await client.pods.Get(meta_pb2.ObjectKey(namespace="default", name="cache"))
            return bool(got.spec.node_name)

        await eventually(follower_placed, what="cache placed", timeout=60.0)
        got = await client.pods.Get(meta_pb2.ObjectKey(namespace="default", name="cache"))
        assert got.spec.node_name == "big-1"
