"""Logs and exec are proxied to the pod's agent; errors say what is missing. Also: etcd down."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator

import grpc
import pytest

from controller.config import ControllerConfig
from controller.server import Controller
from controller.testing import make_pod
from cowpod.client import Client
from cowpod.local.etcd import free_port
from cowpod.v1 import agent_pb2_grpc, meta_pb2, node_pb2, pod_pb2

pytestmark = pytest.mark.integration


class FakeAgent(agent_pb2_grpc.AgentServiceServicer):  # type: ignore[misc]
    async def Logs(self, request: pod_pb2.LogsRequest, context: object) -> AsyncIterator[pod_pb2.LogChunk]:
        for i in range(3):
            yield pod_pb2.LogChunk(data=f"{request.pod.name}/{request.container} line {i}\n".encode())

    async def Exec(self, request: pod_pb2.ExecRequest,
                   context: grpc.aio.ServicerContext) -> pod_pb2.ExecResponse:  # type: ignore[type-arg]
        if request.container == "nope":
            await context.abort(grpc.StatusCode.NOT_FOUND, "container nope not found")
        return pod_pb2.ExecResponse(stdout=" ".join(request.command).encode(), exit_code=7)


@pytest.fixture
async def agent_socket(tmp_path: pathlib.Path) -> AsyncIterator[str]:
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(FakeAgent(), server)
    path = tmp_path / "agent.sock"
    server.add_insecure_port(f"unix:{path}")
    await server.start()
    yield f"unix://{path}"
    await server.stop(0)


async def register(client: Client, name: str, endpoint: str) -> None:
    n = node_pb2.Node()
    n.metadata.name = name
    n.status.daemon_endpoint = endpoint
    await client.nodes.Register(n)


async def test_logs_and_exec_reach_the_agent(client: Client, agent_socket: str) -> None:
    await register(client, "n1", agent_socket)
    await client.pods.Create(make_pod("web"))
    await client.pods.Bind(pod_pb2.Binding(pod=meta_pb2.ObjectKey(name="web"), node_name="n1"))
    chunks = [c.data async for c in client.pods.Logs(pod_pb2.LogsRequest(
        pod=meta_pb2.ObjectKey(name="web"), container="main"))]
    assert b"".join(chunks) == b"web/main line 0\nweb/main line 1\nweb/main line 2\n"
    resp = await client.pods.Exec(pod_pb2.ExecRequest(pod=meta_pb2.ObjectKey(name="web"), container="main",
                                                      command=["echo", "hi"]))
    assert (resp.stdout, resp.exit_code) == (b"echo hi", 7)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.pods.Exec(pod_pb2.ExecRequest(pod=meta_pb2.ObjectKey(name="web"), container="nope"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert "container nope" in (e.value.details() or "")


async def test_proxy_errors_are_clear(client: Client, tmp_path: pathlib.Path) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.pods.Exec(pod_pb2.ExecRequest(pod=meta_pb2.ObjectKey(name="ghost")))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    await client.pods.Create(make_pod("pending"))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.pods.Exec(pod_pb2.ExecRequest(pod=meta_pb2.ObjectKey(name="pending")))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not bound" in (e.value.details() or "")
    await register(client, "dead", f"unix://{tmp_path}/nobody.sock")
    await client.pods.Create(make_pod("web"))
    await client.pods.Bind(pod_pb2.Binding(pod=meta_pb2.ObjectKey(name="web"), node_name="dead"))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.pods.Exec(pod_pb2.ExecRequest(pod=meta_pb2.ObjectKey(name="web")), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert 'node "dead"' in (e.value.details() or "")


async def test_etcd_unreachable_is_unavailable_not_a_hang(etcd_prefix: str) -> None:
    cfg = ControllerConfig(listen="127.0.0.1:0", etcd=[f"127.0.0.1:{free_port()}"], etcd_prefix=etcd_prefix,
                           etcd_timeout=1.0, insecure=True, shutdown_grace=0.1)
    ctrl = Controller(cfg)
    task = asyncio.create_task(ctrl.run())
    try:
        await asyncio.wait_for(ctrl.started.wait(), 10)
        async with Client(ctrl.address) as client:
            assert not await client.healthy()
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await client.pods.Get(meta_pb2.ObjectKey(name="x"), timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "etcd at 127.0.0.1" in (e.value.details() or "")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
