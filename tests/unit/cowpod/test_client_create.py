"""Client.create: a retried create never duplicates and never hides an earlier attempt that landed."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from cowpod.api.labels import CREATE_ID_ANNOTATION
from cowpod.client import Client
from cowpod.clock import FakeClock
from cowpod.v1 import meta_pb2, pod_pb2


def rpc_error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class Store:
    """A create whose first answer is lost after it committed, then a definitive refusal."""

    def __init__(self, then: grpc.StatusCode) -> None:
        self.stored: dict[str, pod_pb2.Pod] = {}
        self.then = then
        self.calls = 0

    async def create(self, pod: pod_pb2.Pod, timeout: float) -> pod_pb2.Pod:
        self.calls += 1
        if self.calls == 1:
            kept = pod_pb2.Pod()
            kept.CopyFrom(pod)
            self.stored[pod.metadata.name] = kept
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "connection reset")
        raise rpc_error(self.then, "etcd is out of space")

    async def get(self, key: meta_pb2.ObjectKey, timeout: float) -> pod_pb2.Pod:
        if key.name not in self.stored:
            raise rpc_error(grpc.StatusCode.NOT_FOUND, "not found")
        return self.stored[key.name]


class SkipClock(FakeClock):
    """Back-off sleeps pass at once (fake time moves on): the test is about outcomes."""

    async def sleep(self, seconds: float) -> None:
        await self.advance(seconds)


def pod(name: str) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    p.metadata.namespace = "default"
    return p


@pytest.mark.parametrize("refusal", [grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.RESOURCE_EXHAUSTED])
async def test_a_refused_retry_returns_the_object_the_lost_attempt_stored(refusal: grpc.StatusCode) -> None:
    store = Store(refusal)
    client = Client("127.0.0.1:1", clock=SkipClock())
    try:
        got: Any = await client.create(store.create, store.get, pod("p"))
    finally:
        await client.close()
    assert got.metadata.name == "p" and CREATE_ID_ANNOTATION in got.metadata.annotations
    assert store.calls == 2


async def test_a_refusal_with_nothing_stored_is_raised() -> None:
    store = Store(grpc.StatusCode.RESOURCE_EXHAUSTED)
    store.stored.clear()

    async def never_stores(p: pod_pb2.Pod, timeout: float) -> pod_pb2.Pod:
        store.calls += 1
        code = grpc.StatusCode.UNAVAILABLE if store.calls == 1 else grpc.StatusCode.RESOURCE_EXHAUSTED
        raise rpc_error(code, "etcd is out of space")

    client = Client("127.0.0.1:1", clock=SkipClock())
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.create(never_stores, store.get, pod("p"))
    finally:
        await client.close()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_someone_elses_object_of_that_name_is_not_ours() -> None:
    store = Store(grpc.StatusCode.RESOURCE_EXHAUSTED)
    other = pod("p")
    other.metadata.annotations[CREATE_ID_ANNOTATION] = "someone-else"

    async def lost_then_refused(p: pod_pb2.Pod, timeout: float) -> pod_pb2.Pod:
        store.calls += 1
        store.stored["p"] = other
        code = grpc.StatusCode.UNAVAILABLE if store.calls == 1 else grpc.StatusCode.RESOURCE_EXHAUSTED
        raise rpc_error(code)

    client = Client("127.0.0.1:1", clock=SkipClock())
    try:
        with pytest.raises(grpc.aio.AioRpcError):
            await client.create(lost_then_refused, store.get, pod("p"))
    finally:
        await client.close()
