"""In-process watches: an informer inside the controller reading its watch hubs directly
(`controller.reconcile.hub_watches`) sees exactly what one over gRPC sees."""

from __future__ import annotations

import asyncio

import pytest

from controller.testing import ControllerRunner
from cowpod.client import Client
from cowpod.informer import Informer
from cowpod.v1 import meta_pb2, pod_pb2
from tests.polling import eventually

pytestmark = pytest.mark.integration


def make_pod(name: str) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name, p.metadata.namespace = name, "default"
    p.spec.containers.add(name="c", image="cowpod/busybox:latest", command=["sleep", "1d"])
    return p


async def test_an_in_process_informer_sees_what_a_grpc_one_sees(controller: ControllerRunner,
                                                                 client: Client) -> None:
    assert controller.controller is not None
    for i in range(3):
        await client.pods.Create(make_pod(f"before-{i}"))
    seen: list[tuple[int, str]] = []

    async def record(type_: int, pod: pod_pb2.Pod) -> None:
        seen.append((type_, pod.metadata.name))

    local: Informer[pod_pb2.Pod] = Informer(controller.controller.watches.pods, handler=record, name="local")
    remote: Informer[pod_pb2.Pod] = Informer(client.pods.Watch, name="remote")
    tasks = [asyncio.create_task(local.run()), asyncio.create_task(remote.run())]
    try:
        await asyncio.wait_for(asyncio.gather(local.wait_synced(), remote.wait_synced()), 20)
        assert sorted(local.cache) == sorted(remote.cache) == [("default", f"before-{i}") for i in range(3)]
        await client.pods.Create(make_pod("after"))
        await client.pods.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="before-0"),
                                                        grace_period_seconds=0))

        def same() -> bool:
            # Both changes in: the create alone would already give equal caches at one revision.
            return ("default", "after") in local.cache and ("default", "before-0") not in local.cache \
                and sorted(local.cache) == sorted(remote.cache) \
                and local.resource_version == remote.resource_version

        await eventually(same, what="both caches at the same revision with the new pod, the deleted one gone")
        assert ("default", "before-0") not in local.cache
        assert (meta_pb2.ADDED, "after") in seen and (meta_pb2.DELETED, "before-0") in seen
        assert local.cache[("default", "after")] == remote.cache[("default", "after")]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
