"""Pods through the real controller and a real etcd: CRUD, CAS, watch, delete."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from controller.testing import ControllerRunner, make_node, make_pod
from cowpod.client import Client
from cowpod.v1 import meta_pb2, pod_pb2

pytestmark = pytest.mark.integration


async def test_create_get_list_delete(client: Client) -> None:
    created = await client.pods.Create(make_pod("web", labels={"app": "web"}))
    assert created.metadata.uid
    assert created.metadata.resource_version > 0
    assert created.kind == "Pod" and created.api_version == "v1"
    assert created.status.phase == "Pending"
    assert created.spec.restart_policy == "Always"

    got = await client.pods.Get(meta_pb2.ObjectKey(namespace="default", name="web"))
    assert got == created

    await client.pods.Create(make_pod("db", labels={"app": "db"}))
    lst = await client.pods.List(meta_pb2.ListOptions(namespace="default", label_selector="app in (web)"))
    assert [p.metadata.name for p in lst.items] == ["web"]
    assert lst.resource_version >= created.metadata.resource_version

    deleted = await client.pods.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="web")))
    assert deleted.metadata.name == "web"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.pods.Get(meta_pb2.ObjectKey(name="web"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_already_exists_and_invalid(client: Client) -> None:
    await client.pods.Create(make_pod("a"))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.pods.Create(make_pod("a"))
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.pods.Create(make_pod("b", image=""))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.containers[0].image: required" in (e.value.details() or "")
    # Nothing half-written.
    lst = await client.pods.List(meta_pb2.ListOptions())
    assert [p.metadata.name for p in lst.items] == ["a"]


async def test_update_stale_version_aborts(client: Client) -> None:
    p = await client.pods.Create(make_pod("a"))
    p.metadata.labels["x"] = "1"
    p2 = await client.pods.Update(p)
    assert p2.metadata.labels["x"] == "1"
    assert p2.metadata.resource_version > p.metadata.resource_version
    p.metadata.labels["x"] = "2"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.pods.Update(p)  # p carries the old resource_version
    assert e.value.code() == grpc.StatusCode.ABORTED


async def test_watch_initial_then_changes(client: Client) -> None:
    await client.pods.Create(make_pod("a"))
    call = client.pods.Watch(meta_pb2.WatchOptions(send_initial=True))
    ev = await call.read()
    assert ev.type == meta_pb2.ADDED and ev.object.metadata.name == "a"
    ev = await call.read()
    assert ev.type == meta_pb2.BOOKMARK
    await client.pods.Create(make_pod("b"))
    ev = await call.read()
    assert ev.type == meta_pb2.ADDED and ev.object.metadata.name == "b"
    await client.pods.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="a")))
    ev = await call.read()
    assert ev.type == meta_pb2.DELETED and ev.object.metadata.name == "a"
    call.cancel()


async def test_bind_conditional(client: Client) -> None:
    await make_node(client, "n1")
    pod = await client.pods.Create(make_pod("a"))
    bound = await client.pods.Bind(pod_pb2.Binding(pod=meta_pb2.ObjectKey(name="a"), node_name="n1",
                                                   pod_uid=pod.metadata.uid))
    assert bound.spec.node_name == "n1"
    assert any(c.type == "PodScheduled" and c.status == "True" for c in bound.status.conditions)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.pods.Bind(pod_pb2.Binding(pod=meta_pb2.ObjectKey(name="a"), node_name="n1"))
    assert e.value.code() == grpc.StatusCode.ABORTED
    await client.pods.Create(make_pod("b"))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.pods.Bind(pod_pb2.Binding(pod=meta_pb2.ObjectKey(name="b"), node_name="nope"))
    assert e.value.code() == grpc.StatusCode.ABORTED
    assert "nope" in (e.value.details() or "")


async def test_restart_loses_nothing(controller: ControllerRunner, client: Client) -> None:
    await client.pods.Create(make_pod("a"))
    await controller.restart()
    got = await client.call(client.pods.Get, meta_pb2.ObjectKey(name="a"))
    assert got.metadata.name == "a"
    await asyncio.sleep(0)
