"""An agent's logs/exec server over TLS: only the controller's certificate gets through."""

from __future__ import annotations

import pathlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from cowpod.auth.peer import PeerCheck, node_server_credentials
from cowpod.pki import CertKey, ClusterPKI, node_subject
from cowpod.v1 import agent_pb2_grpc, meta_pb2, pod_pb2


class FakeAgent(agent_pb2_grpc.AgentServiceServicer):  # type: ignore[misc]
    async def Exec(self, request: pod_pb2.ExecRequest, context: Any) -> pod_pb2.ExecResponse:
        return pod_pb2.ExecResponse(stdout=b"ok")

    async def Logs(self, request: pod_pb2.LogsRequest, context: Any) -> AsyncIterator[pod_pb2.LogChunk]:
        yield pod_pb2.LogChunk(data=b"line\n")


@pytest.fixture
async def agent(tmp_path: pathlib.Path) -> AsyncIterator[tuple[int, ClusterPKI]]:
    pki = ClusterPKI.of(tmp_path)
    pki.ensure(now=time.time())
    node = pki.load_ca().issue(node_subject("n1"), now=time.time(), server=True, dns_names=["n1"])
    server = grpc.aio.server(interceptors=[PeerCheck()])
    agent_pb2_grpc.add_AgentServiceServicer_to_server(FakeAgent(), server)
    port = server.add_secure_port("127.0.0.1:0", node_server_credentials(node, pki.ca_cert.read_bytes()))
    await server.start()
    yield port, pki
    await server.stop(None)


async def call_as(port: int, pki: ClusterPKI, who: CertKey | None) -> tuple[grpc.StatusCode, bytes]:
    creds = grpc.ssl_channel_credentials(
        pki.ca_cert.read_bytes(), who.key_pem if who else None, who.cert_pem if who else None
    )
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds,
                                       options=[("grpc.ssl_target_name_override", "n1")]) as ch:
        stub = agent_pb2_grpc.AgentServiceStub(ch)
        req = pod_pb2.ExecRequest(pod=meta_pb2.ObjectKey(name="p"), command=["true"])
        try:
            resp = await stub.Exec(req, timeout=5)
            chunks = [c.data async for c in stub.Logs(pod_pb2.LogsRequest(), timeout=5)]
        except grpc.aio.AioRpcError as err:
            return err.code(), b""
        return grpc.StatusCode.OK, resp.stdout + b"".join(chunks)


async def test_only_the_controller_may_call_an_agent(agent: tuple[int, ClusterPKI]) -> None:
    port, pki = agent
    assert await call_as(port, pki, pki.load("controller")) == (grpc.StatusCode.OK, b"okline\n")
    assert (await call_as(port, pki, pki.load("transport")))[0] == grpc.StatusCode.PERMISSION_DENIED
    assert (await call_as(port, pki, pki.load("admin")))[0] == grpc.StatusCode.PERMISSION_DENIED
    other_node = pki.load_ca().issue(node_subject("n2"), now=time.time())
    assert (await call_as(port, pki, other_node))[0] == grpc.StatusCode.PERMISSION_DENIED
    assert (await call_as(port, pki, None))[0] == grpc.StatusCode.UNAVAILABLE
