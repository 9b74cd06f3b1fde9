"""A bound pod's watch event that overtakes its node's Register reply.

The scheduler binds a pending pod the moment its node's Register lands, so the
fleet's pod informer can deliver the bound pod before `HollowFleet.add` has
recorded the node. That event must not be lost: nothing else ever changes the
pod, so a dropped event left it Pending for good (the autoscaler integration
test timed out about one run in thirty). These tests order the two answers
deterministically with a fake API: Register returns only after the informer
has handled the pod's event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

from agent.hollow import HollowFleet, HollowNodeSpec
from cowpod.client import Client
from cowpod.clock import FakeClock
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2

# Generous: the fleet's status worker needs only a few loop turns; a missed pod never comes.
DEADLINE_S = 10.0


def bound_pod(name: str, node: str) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.namespace = "default"
    p.metadata.name = name
    p.metadata.uid = f"uid-{name}"
    p.spec.node_name = node
    p.spec.containers.add(name="c", image="busybox")
    p.status.phase = "Pending"
    return p


def event(type_: meta_pb2.WatchEventType, pod: pod_pb2.Pod, rv: int) -> pod_pb2.PodWatchEvent:
    return pod_pb2.PodWatchEvent(type=type_, object=pod, resource_version=rv)


class FakeApi:
    """The slice of `Client` the fleet uses: Register, Watch on pods, UpdateStatus.

    `Register` of a node first delivers the events queued for it in `on_register`
    through the watch and waits until the informer has handled them, then answers."""

    def __init__(self) -> None:
        self.nodes = self
        self.pods = self
        self._events: asyncio.Queue[pod_pb2.PodWatchEvent] = asyncio.Queue()
        self._events.put_nowait(pod_pb2.PodWatchEvent(type=meta_pb2.BOOKMARK, resource_version=1))
        self.on_register: dict[str, list[pod_pb2.PodWatchEvent]] = {}
        self.running: list[str] = []
        self.updated = asyncio.Event()

    async def call(self, fn: Any, request: Any, *, timeout: float = 30.0) -> Any:
        return await fn(request, timeout=timeout)

    async def Register(self, node: node_pb2.Node, timeout: float | None = None) -> node_pb2.Node:
        for ev in self.on_register.pop(node.metadata.name, []):
            self._events.put_nowait(ev)
        await self._events.join()  # the informer handled every event: the watch overtook the reply
        return node

    async def Heartbeat(self, req: Any, timeout: float | None = None) -> Any:
        raise AssertionError("no heartbeat is due: the fake clock never moves")

    def Watch(self, opts: meta_pb2.WatchOptions) -> AsyncIterator[pod_pb2.PodWatchEvent]:
        return self._watch()

    async def _watch(self) -> AsyncIterator[pod_pb2.PodWatchEvent]:
        while True:
            ev = await self._events.get()
            yield ev  # resumes once the informer's handler has returned
            self._events.task_done()

    async def UpdateStatus(self, pod: pod_pb2.Pod, timeout: float | None = None) -> pod_pb2.Pod:
        assert pod.status.phase == "Running"
        self.running.append(pod.metadata.name)
        self.updated.set()
        return pod


@contextlib.asynccontextmanager
async def running_fleet(api: FakeApi) -> AsyncIterator[HollowFleet]:
    fleet = HollowFleet(cast(Client, api), clock=FakeClock(), heartbeat_s=5.0, concurrency=2)
    task = asyncio.create_task(fleet.run())
    try:
        await asyncio.wait_for(fleet.synced.wait(), DEADLINE_S)
        yield fleet
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_pod_bound_before_add_records_its_node_is_marked_running() -> None:
    api = FakeApi()
    api.on_register["n1"] = [event(meta_pb2.ADDED, bound_pod("web-0", "n1"), 2)]
    async with running_fleet(api) as fleet:
        await fleet.add(HollowNodeSpec(name="n1"))
        await asyncio.wait_for(api.updated.wait(), DEADLINE_S)
        assert api.running == ["web-0"]
        assert fleet.marked_running == 1


async def test_an_early_pod_deleted_before_its_node_is_recorded_is_not_run() -> None:
    api = FakeApi()
    gone, kept = bound_pod("gone", "n1"), bound_pod("kept", "n1")
    api.on_register["n1"] = [
        event(meta_pb2.ADDED, gone, 2),
        event(meta_pb2.ADDED, kept, 3),
        event(meta_pb2.DELETED, gone, 4),
    ]
    async with running_fleet(api) as fleet:
        await fleet.add(HollowNodeSpec(name="n1"))
        await asyncio.wait_for(api.updated.wait(), DEADLINE_S)
        # Dispatched in arrival order: "gone" would have been written first.
        assert api.running == ["kept"]


async def test_pods_on_a_node_the_fleet_never_adds_are_left_alone() -> None:
    api = FakeApi()
    api.on_register["n1"] = [
        event(meta_pb2.ADDED, bound_pod("elsewhere", "real-node"), 2),
        event(meta_pb2.ADDED, bound_pod("mine", "n1"), 3),
    ]
    async with running_fleet(api) as fleet:
        await fleet.add(HollowNodeSpec(name="n1"))
        await asyncio.wait_for(api.updated.wait(), DEADLINE_S)
        assert api.running == ["mine"]
