"""Helpers for scheduler integration tests: pods, a hollow fleet, in-process schedulers."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator

from agent.hollow import HollowFleet, HollowNodeSpec
from controller.limits import Limits
from controller.testing import ControllerRunner
from cowpod.client import Client
from cowpod.clock import RealClock
from cowpod.v1 import meta_pb2, pod_pb2
from scheduler.app import SchedulerApp
from scheduler.config import LeaderElectionConfig, SchedulerConfig

# Short enough that a fail-over test waits seconds, long enough that a leader on a loaded CI
# machine (an etcd fsync or a busy event loop can hold one renewal for a second or two) keeps
# its lease: the renew deadline bounds how long a renewal may take, the lease adds a margin.
FAST_LEASE = LeaderElectionConfig(
    lease_name="sched-test",
    namespace="kube-system",
    lease_duration_s=5.0,
    renew_deadline_s=4.0,
    retry_period_s=0.25,
)
# How long a test waits for something that must happen (a takeover after expiry, a count):
# generous, because only a hang should fail a test, never a slow machine.
PATIENCE_S = 60.0


def pod(
    name: str,
    *,
    cpu: int = 100,
    memory: int = 64 << 20,
    labels: dict[str, str] | None = None,
    ns: str = "default",
) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    p.metadata.namespace = ns
    p.metadata.labels.update(labels or {})
    c = p.spec.containers.add()
    c.name = "main"
    c.image = "cowpod/busybox:latest"
    c.resources.requests.cpu_millis = cpu
    c.resources.requests.memory_bytes = memory
    return p


async def all_pods(client: Client) -> list[pod_pb2.Pod]:
    return list((await client.pods.List(meta_pb2.ListOptions())).items)


async def bound_count(client: Client) -> int:
    return sum(1 for p in await all_pods(client) if p.spec.node_name)


async def usage_by_node(client: Client) -> dict[str, tuple[int, int, int]]:
    use: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for p in await all_pods(client):
        if p.spec.node_name:
            u = use[p.spec.node_name]
            u[0] += sum(c.resources.requests.cpu_millis for c in p.spec.containers)
            u[1] += sum(c.resources.requests.memory_bytes for c in p.spec.containers)
            u[2] += 1
    return {k: (v[0], v[1], v[2]) for k, v in use.items()}


@contextlib.asynccontextmanager
async def fast_controller(etcd_endpoint: str, prefix: str) -> AsyncIterator[ControllerRunner]:
    """A controller whose per-client rate limit does not throttle a test that
    creates hundreds of pods and heartbeats hundreds of hollow nodes from one client."""
    async with ControllerRunner(
        etcd_endpoint, prefix, limits=Limits(user_rate=1e6, user_burst=1_000_000)
    ) as runner:
        yield runner


@contextlib.asynccontextmanager
async def hollow_fleet(
    client: Client, specs: list[HollowNodeSpec], **kw: object
) -> AsyncIterator[HollowFleet]:
    fleet = HollowFleet(client, **kw)  # type: ignore[arg-type]
    task = asyncio.create_task(fleet.run(), name="test-fleet")
    try:
        await fleet.add_many(specs)
        await asyncio.wait_for(fleet.synced.wait(), 30)
        yield fleet
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def running_scheduler(
    address: str,
    identity: str,
    *,
    cfg: SchedulerConfig | None = None,
    leader_elect: bool = False,
    release_on_exit: bool = True,
) -> AsyncIterator[tuple[SchedulerApp, asyncio.Task[None]]]:
    """A scheduler with its own client (its own channel, like a separate process)."""
    async with Client(address) as client:
        app = SchedulerApp(
            client,
            cfg or SchedulerConfig(leader_election=FAST_LEASE),
            clock=RealClock(),
            identity=identity,
            leader_elect=leader_elect,
            release_on_exit=release_on_exit,
        )
        task = asyncio.create_task(app.run(), name=f"scheduler-{identity}")
        try:
            yield app, task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
