"""Watch through the real controller: resume after a restart, compaction, selectors, bookmarks."""

from __future__ import annotations

import grpc
import pytest

from controller.testing import ControllerRunner, make_node, make_pod
from cowpod.client import Client
from cowpod.v1 import meta_pb2, pod_pb2

pytestmark = pytest.mark.integration


async def next_change(call: grpc.aio.UnaryStreamCall) -> pod_pb2.PodWatchEvent:  # type: ignore[type-arg]
    while True:
        ev = await call.read()
        assert isinstance(ev, pod_pb2.PodWatchEvent)
        if ev.type != meta_pb2.BOOKMARK:
            return ev


async def test_resume_from_revision_after_controller_restart(controller: ControllerRunner,
                                                             client: Client) -> None:
    a = await client.pods.Create(make_pod("a"))
    rev = a.metadata.resource_version
    await controller.restart()
    await client.wait_ready()
    await client.pods.Create(make_pod("b"))
    b = await client.pods.Get(meta_pb2.ObjectKey(name="b"))
    b.metadata.labels["v"] = "2"
    await client.pods.Update(b)
    await client.pods.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="a")))
    call = client.pods.Watch(meta_pb2.WatchOptions(resource_version=rev))
    got = [await next_change(call) for _ in range(3)]
    call.cancel()
    assert [(e.type, e.object.metadata.name) for e in got] == [
        (meta_pb2.ADDED, "b"), (meta_pb2.MODIFIED, "b"), (meta_pb2.DELETED, "a")]
    assert all(e.resource_version > rev for e in got)
    assert got[1].object.metadata.labels["v"] == "2"


async def test_out_of_range_after_compaction(controller: ControllerRunner, client: Client) -> None:
    a = await client.pods.Create(make_pod("a"))
    old = a.metadata.resource_version
    for i in range(3):
        a.metadata.labels["i"] = str(i)
        a = await client.pods.Update(a)
    assert controller.controller is not None
    await controller.controller.store.compact(a.metadata.resource_version)
    # A fresh controller has no history of its own in memory: it must ask etcd.
    await controller.restart()
    await client.wait_ready()
    call = client.pods.Watch(meta_pb2.WatchOptions(resource_version=old))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call.read()
    assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "compacted" in (e.value.details() or "")
    # A relist + watch from now works.
    lst = await client.pods.List(meta_pb2.ListOptions())
    call = client.pods.Watch(meta_pb2.WatchOptions(resource_version=lst.resource_version))
    await client.pods.Create(make_pod("b"))
    ev = await next_change(call)
    assert (ev.type, ev.object.metadata.name) == (meta_pb2.ADDED, "b")
    call.cancel()


async def test_bound_pod_leaves_unbound_view_and_enters_node_view(client: Client) -> None:
    await make_node(client, "n1")
    await client.pods.Create(make_pod("a"))
    unbound = client.pods.Watch(meta_pb2.WatchOptions(
        list=meta_pb2.ListOptions(field_selector="spec.nodeName="), send_initial=True))
    on_n1 = client.pods.Watch(meta_pb2.WatchOptions(
        list=meta_pb2.ListOptions(field_selector="spec.nodeName=n1"), send_initial=True))
    ev = await unbound.read()
    assert (ev.type, ev.object.metadata.name) == (meta_pb2.ADDED, "a")
    assert (await unbound.read()).type == meta_pb2.BOOKMARK
    assert (await on_n1.read()).type == meta_pb2.BOOKMARK
    await client.pods.Bind(pod_pb2.Binding(pod=meta_pb2.ObjectKey(name="a"), node_name="n1"))
    ev = await next_change(unbound)
    assert (ev.type, ev.object.metadata.name) == (meta_pb2.DELETED, "a")
    ev = await next_change(on_n1)
    assert (ev.type, ev.object.spec.node_name) == (meta_pb2.ADDED, "n1")
    unbound.cancel()
    on_n1.cancel()


async def test_periodic_bookmarks(client: Client) -> None:
    call = client.pods.Watch(meta_pb2.WatchOptions(bookmark_interval_seconds=1))
    ev = await call.read()
    assert ev.type == meta_pb2.BOOKMARK
    assert ev.resource_version > 0
    call.cancel()


async def test_bad_selector_is_invalid_argument(client: Client) -> None:
    call = client.pods.Watch(meta_pb2.WatchOptions(list=meta_pb2.ListOptions(label_selector="app in (a")))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call.read()
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "labelSelector" in (e.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.pods.List(meta_pb2.ListOptions(field_selector="spec.color=red"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
