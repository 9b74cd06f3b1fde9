"""Attacks on identities against a real secure controller (TLS, real etcd), each refused:
a bootstrap token buying a certificate that serves as the controller, a node's
certificate used the wrong way round, one node breaking another's logs/exec by
advertising its agent endpoint (issue #15, holes 1 and 7)."""

from __future__ import annotations

import pathlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from controller.testing import ControllerRunner, code_of
from cowpod.auth.bootstrap import ensure_node_certificate, ensure_serving_certificate, node_settings
from cowpod.auth.config import ConnectionSettings
from cowpod.auth.credentials import connect
from cowpod.auth.peer import PeerCheck, node_server_credentials
from cowpod.client import Client
from cowpod.clock import FakeClock
from cowpod.local.etcd import EtcdMember
from cowpod.pki import CertKey, extended_key_usages, key_to_pem, make_csr, new_key, node_subject
from cowpod.v1 import agent_pb2_grpc, auth_pb2, auth_pb2_grpc, meta_pb2, node_pb2, pod_pb2

pytestmark = pytest.mark.integration



@pytest.fixture
async def secure(
    etcd: EtcdMember, etcd_prefix: str, tmp_path: pathlib.Path
) -> AsyncIterator[ControllerRunner]:
    async with ControllerRunner.secure(etcd.endpoint, etcd_prefix, pki_dir=tmp_path / "pki") as runner:
        yield runner


@pytest.fixture
async def admin(secure: ControllerRunner) -> AsyncIterator[Client]:
    async with secure.client("admin") as c:
        yield c


async def new_token(admin: Client, role: str, **kw: Any) -> str:
    stub = auth_pb2_grpc.TokenServiceStub(admin.channel)
    created = await stub.Create(auth_pb2.CreateTokenRequest(role=role, **kw))
    return str(created.token)


async def join(
    secure: ControllerRunner, admin: Client, name: str, cert_dir: pathlib.Path
) -> ConnectionSettings:
    """An agent's first start: its client certificate by bootstrap token, then its serving one."""
    token = await new_token(admin, "bootstrap", single_use=True, node_name=name)
    transport = secure.settings("transport")
    clock = FakeClock(time.time())
    pair = await ensure_node_certificate(
        transport, node_name=name, cert_dir=cert_dir, token=token, clock=clock
    )
    node = node_settings(transport, pair)
    await ensure_serving_certificate(node, node_name=name, cert_dir=cert_dir, clock=clock)
    return node


def serving_pair(cert_dir: pathlib.Path, name: str) -> CertKey:
    d = cert_dir / "serving"
    return CertKey((d / f"{name}.crt").read_bytes(), (d / f"{name}.key").read_bytes())


def client_pair(node: ConnectionSettings) -> CertKey:
    assert node.client_cert_pem is not None and node.client_key_pem is not None
    return CertKey(node.client_cert_pem, node.client_key_pem)


async def rogue_server(pair: CertKey, ca_pem: bytes) -> tuple[grpc.aio.Server, str]:
    """A server presenting `pair`, answering health checks: what a thief would run."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_secure_port("127.0.0.1:0", node_server_credentials(pair, ca_pem))
    await server.start()
    return server, f"127.0.0.1:{port}"


async def reaches(settings: ConnectionSettings) -> bool:
    async with connect(settings) as c:
        return await c.healthy(timeout=5)


async def test_bootstrap_token_cannot_join_under_a_name_of_the_controller(
    secure: ControllerRunner, admin: Client, tmp_path: pathlib.Path
) -> None:
    token = await new_token(admin, "bootstrap", single_use=True)
    stub_client = secure.client("transport")
    async with stub_client as c:
        stub = auth_pb2_grpc.BootstrapServiceStub(c.channel)
        for name in ("cowpod-controller", "localhost", "127.0.0.1", "api.cowpod-controller"):
            csr = make_csr(key_to_pem(new_key()), node_subject(name))
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.ExchangeToken(
                    auth_pb2.ExchangeTokenRequest(token=token, node_name=name, csr_pem=csr)
                )
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            assert "nodeName" in (e.value.details() or "")
    # The refusals did not burn the single-use token: a proper name still joins with it.
    pair = await ensure_node_certificate(
        secure.settings("transport"), node_name="n1", cert_dir=tmp_path / "n1",
        token=token, clock=FakeClock(time.time()),
    )
    assert extended_key_usages(pair.cert_pem) == {"client"}


async def test_node_certificates_cannot_pose_as_the_controller(
    secure: ControllerRunner, admin: Client, tmp_path: pathlib.Path
) -> None:
    node = await join(secure, admin, "n1", tmp_path / "n1")
    ca_pem = secure.settings("admin").ca_pem
    assert ca_pem is not None
    # The stolen client certificate cannot serve at all: not as the controller, not even as n1.
    server, address = await rogue_server(client_pair(node), ca_pem)
    try:
        victim = ConnectionSettings(**{**secure.settings("admin").__dict__, "server": address})
        assert not await reaches(victim)
        assert not await reaches(ConnectionSettings(**{**victim.__dict__, "tls_server_name": "n1"}))
    finally:
        await server.stop(None)
    # The serving certificate serves as n1 only: a client looking for the controller refuses it.
    server, address = await rogue_server(serving_pair(tmp_path / "n1", "n1"), ca_pem)
    try:
        victim = ConnectionSettings(**{**secure.settings("admin").__dict__, "server": address})
        assert not await reaches(victim)
        assert await reaches(ConnectionSettings(**{**victim.__dict__, "tls_server_name": "n1"}))
    finally:
        await server.stop(None)


async def test_serving_certificates_are_for_the_callers_node_and_cannot_call(
    secure: ControllerRunner, admin: Client, tmp_path: pathlib.Path
) -> None:
    node = await join(secure, admin, "n1", tmp_path / "n1")
    for_n2 = auth_pb2.ServingCertificateRequest(csr_pem=make_csr(key_to_pem(new_key()), node_subject("n2")))
    async with connect(node) as n1:
        stub = auth_pb2_grpc.BootstrapServiceStub(n1.channel)
        assert await code_of(stub.SignServingCertificate(for_n2)) == grpc.StatusCode.INVALID_ARGUMENT
    async with secure.client("transport") as anon:
        stub = auth_pb2_grpc.BootstrapServiceStub(anon.channel)
        assert await code_of(stub.SignServingCertificate(for_n2)) == grpc.StatusCode.UNAUTHENTICATED
    async with secure.client("transport", token=await new_token(admin, "edit")) as editor:
        stub = auth_pb2_grpc.BootstrapServiceStub(editor.channel)
        assert await code_of(stub.SignServingCertificate(for_n2)) == grpc.StatusCode.PERMISSION_DENIED
    # A serving certificate is no client certificate: the handshake refuses it.
    serving = serving_pair(tmp_path / "n1", "n1")
    as_client = ConnectionSettings(**{**node.__dict__, "client_cert_pem": serving.cert_pem,
                                      "client_key_pem": serving.key_pem})
    async with connect(as_client) as c:
        code = await code_of(c.nodes.Get(meta_pb2.ObjectKey(name="n1"), timeout=5))
    assert code == grpc.StatusCode.UNAVAILABLE


class FakeAgent(agent_pb2_grpc.AgentServiceServicer):
    """An agent's logs/exec server that says whose it is."""

    def __init__(self, node: str) -> None:
        self.node = node

    async def Exec(self, request: pod_pb2.ExecRequest, context: Any) -> pod_pb2.ExecResponse:
        return pod_pb2.ExecResponse(stdout=self.node.encode())


async def agent_server(node: str, pair: CertKey, ca_pem: bytes) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server(interceptors=[PeerCheck()])
    agent_pb2_grpc.add_AgentServiceServicer_to_server(FakeAgent(node), server)
    port = server.add_secure_port("127.0.0.1:0", node_server_credentials(pair, ca_pem))
    await server.start()
    return server, f"127.0.0.1:{port}"


async def register(node: ConnectionSettings, name: str, endpoint: str) -> None:
    n = node_pb2.Node(metadata=meta_pb2.ObjectMeta(name=name))
    n.status.capacity.cpu_millis = 2000
    n.status.capacity.memory_bytes = 2 << 30
    n.status.capacity.pods = 10
    n.status.daemon_endpoint = endpoint
    async with connect(node) as c:
        await c.nodes.Register(n)


async def bound_pod(admin: Client, secure: ControllerRunner, name: str, node: str) -> None:
    p = pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(name=name, namespace="default"))
    p.spec.containers.add(name="main", image="cowpod/busybox:latest")
    await admin.pods.Create(p)
    async with secure.client("scheduler") as sched:
        key = meta_pb2.ObjectKey(namespace="default", name=name)
        await sched.pods.Bind(pod_pb2.Binding(pod=key, node_name=node))


async def test_a_node_advertising_anothers_endpoint_neither_gets_its_traffic_nor_breaks_it(
    secure: ControllerRunner, admin: Client, tmp_path: pathlib.Path
) -> None:
    ca_pem = secure.settings("admin").ca_pem
    assert ca_pem is not None
    n1 = await join(secure, admin, "n1", tmp_path / "n1")
    n2 = await join(secure, admin, "n2", tmp_path / "n2")
    server, endpoint = await agent_server("n2", serving_pair(tmp_path / "n2", "n2"), ca_pem)
    try:
        await register(n2, "n2", endpoint)
        await register(n1, "n1", endpoint)  # the attacker claims n2's agent as its own
        await bound_pod(admin, secure, "mine", "n1")
        await bound_pod(admin, secure, "theirs", "n2")
        exec_mine = pod_pb2.ExecRequest(pod=meta_pb2.ObjectKey(namespace="default", name="mine"))
        exec_theirs = pod_pb2.ExecRequest(pod=meta_pb2.ObjectKey(namespace="default", name="theirs"))
        # The controller checks the agent's certificate against the pod's node: n2's agent is no n1.
        assert await code_of(admin.pods.Exec(exec_mine, timeout=10)) == grpc.StatusCode.UNAVAILABLE
        # ...and the failed attempt did not poison the channel n2's own pods use.
        resp = await admin.pods.Exec(exec_theirs, timeout=10)
        assert resp.stdout == b"n2"
        assert await code_of(admin.pods.Exec(exec_mine, timeout=10)) == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)
