"""etcd refuses a write: its disk quota is full (NOSPACE), or a request is over its size
limit. The client gets a clear RESOURCE_EXHAUSTED naming the cause (not UNKNOWN, not an
endless UNAVAILABLE), and nothing is half-written: the refused object does not exist and
everything stored before is intact and readable."""

from __future__ import annotations

import grpc
import pytest

from cowpod.v1 import meta_pb2
from tests.faults.cluster import ProcCluster, get_pod, list_pods, sleeper_pod

pytestmark = pytest.mark.faults


def big_pod(name: str, kib: int) -> object:
    p = sleeper_pod(name)
    # Many annotations below the controller's per-object limits; the value is incompressible
    # enough that etcd's database really grows.
    for i in range(kib // 16):
        p.metadata.annotations[f"fill.cowpod.io/a{i}"] = (name + str(i)) * (
            16 * 1024 // (len(name) + len(str(i))) - 1
        )
    return p


async def test_disk_quota_full_gives_a_clear_error_and_writes_nothing(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster: ProcCluster = make_cluster(etcd_quota_bytes=2 * 1024 * 1024, etcd_timeout=10.0)
    cluster.start_etcd()
    cluster.start_controller()
    await cluster.wait_serving()
    async with cluster.client() as c:
        stored: list[str] = []
        refused: grpc.aio.AioRpcError | None = None
        for i in range(200):
            name = f"fill-{i:03d}"
            try:
                # Retries a slow moment (UNAVAILABLE) harmlessly; RESOURCE_EXHAUSTED is final.
                await c.create(c.pods.Create, c.pods.Get, big_pod(name, 240), timeout=15)
            except grpc.aio.AioRpcError as err:
                refused = err
                break
            stored.append(name)
        assert refused is not None, "etcd never filled up"
        assert stored, "nothing fit at all"
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused
        assert "space" in (refused.details() or "") and "etcd" in (refused.details() or ""), refused.details()
        # The refused pod does not exist; everything before it does; reads still work.
        assert await get_pod(c, f"fill-{len(stored):03d}") is None
        names = {p.metadata.name for p in await list_pods(c)}
        assert names == set(stored)
        # A small write is refused the same way (the alarm stays until an operator acts).
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await c.pods.Create(sleeper_pod("small"), timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await get_pod(c, "small") is None


async def test_request_over_etcds_size_limit_is_refused_whole(make_cluster) -> None:  # type: ignore[no-untyped-def]
    # etcd accepts at most 128 KiB per request here; the controller's own limit is higher.
    cluster: ProcCluster = make_cluster(etcd_args=("--max-request-bytes", str(128 * 1024)), etcd_timeout=10.0)
    cluster.start_etcd()
    cluster.start_controller()
    await cluster.wait_serving()
    async with cluster.client() as c:
        await c.pods.Create(sleeper_pod("small"), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await c.pods.Create(big_pod("huge", 200), timeout=10)
        err = info.value
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
        assert "too large" in (err.details() or "") and "etcd" in (err.details() or ""), err.details()
        assert await get_pod(c, "huge") is None
        # An update that grows an object over the limit leaves the stored object as it was.
        small = await get_pod(c, "small")
        assert small is not None
        grown = big_pod("small", 200)
        grown.metadata.resource_version = small.metadata.resource_version
        grown.spec.CopyFrom(small.spec)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await c.pods.Update(grown, timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        after = await c.pods.Get(meta_pb2.ObjectKey(name="small"))
        assert after == small
