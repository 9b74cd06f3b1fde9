"""The interceptor on a real gRPC server over TLS (loopback), with fakes behind it:
who gets in, who is refused, and with which status code."""

from __future__ import annotations

import pathlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from controller.auth.interceptor import AuthInterceptor
from controller.auth.services import BootstrapServicer, IdentityServicer, TokenServicer
from controller.auth.setup import SERVICES
from controller.auth.tokens import MemoryTokenRepository, TokenManager
from controller.limits import Limits
from controller.metrics import Metrics
from controller.rpc import service_handler
from controller.testing import code_of
from cowpod.auth.config import ConnectionSettings
from cowpod.auth.credentials import channel_credentials
from cowpod.clock import FakeClock
from cowpod.errors import NotFound
from cowpod.pki import (
    CertificateAuthority,
    CertKey,
    ClusterPKI,
    Subject,
    key_to_pem,
    make_csr,
    new_key,
    node_subject,
)
from cowpod.v1 import auth_pb2, auth_pb2_grpc, meta_pb2, pod_pb2, pod_pb2_grpc

# TLS checks certificates against the real clock, so they are issued now.
NOW = time.time()
POD_SERVICE = pod_pb2.DESCRIPTOR.services_by_name["PodService"]


class FakePods:
    """Just enough PodService to see what the interceptor lets through."""

    def __init__(self) -> None:
        self.pods = {
            ("default", "mine"): "n1",
            ("default", "theirs"): "n2",
        }
        self.created: list[str] = []
        self.status_updates: list[str] = []

    async def node_of(self, namespace: str, name: str) -> str:
        try:
            return self.pods[(namespace, name)]
        except KeyError:
            raise NotFound(f'pods "{namespace}/{name}" not found') from None

    def _pod(self, ns: str, name: str) -> pod_pb2.Pod:
        return pod_pb2.Pod(
            metadata=meta_pb2.ObjectMeta(namespace=ns, name=name),
            spec=pod_pb2.PodSpec(node_name=self.pods[(ns, name)]),
        )

    async def Create(self, req: pod_pb2.Pod, ctx: Any) -> pod_pb2.Pod:
        self.created.append(req.metadata.name)
        return req

    async def Get(self, req: meta_pb2.ObjectKey, ctx: Any) -> pod_pb2.Pod:
        return self._pod(req.namespace, req.name)

    async def List(self, req: meta_pb2.ListOptions, ctx: Any) -> pod_pb2.PodList:
        return pod_pb2.PodList()

    async def UpdateStatus(self, req: pod_pb2.Pod, ctx: Any) -> pod_pb2.Pod:
        self.status_updates.append(req.metadata.name)
        return self._pod(req.metadata.namespace, req.metadata.name)

    async def Watch(self, req: meta_pb2.WatchOptions, ctx: Any) -> AsyncIterator[pod_pb2.PodWatchEvent]:
        yield pod_pb2.PodWatchEvent(type=meta_pb2.BOOKMARK, resource_version=7)

    async def ExecStream(self, requests: AsyncIterator[pod_pb2.ExecStreamRequest],
                         ctx: Any) -> AsyncIterator[pod_pb2.ExecStreamResponse]:
        """Echoes stdin until the client closes it, then exits 0."""
        async for r in requests:
            yield pod_pb2.ExecStreamResponse(stdout=r.stdin)
        yield pod_pb2.ExecStreamResponse(exit_code=0)

    def __getattr__(self, name: str) -> Any:
        async def unimplemented(req: Any, ctx: Any) -> Any:
            raise NotImplementedError(name)

        return unimplemented


class Harness:
    def __init__(self, tmp: pathlib.Path) -> None:
        self.pki = ClusterPKI.of(tmp)
        self.pki.ensure(now=NOW)
        self.ca = self.pki.load_ca()
        self.clock = FakeClock(start=NOW)
        self.tokens = TokenManager(MemoryTokenRepository(), self.clock)
        self.pods = FakePods()
        self.port = 0
        self.server: grpc.aio.Server | None = None
        self.channels: list[grpc.aio.Channel] = []

    async def start(self, limits: Limits) -> None:
        interceptor = AuthInterceptor(
            tokens=self.tokens, limits=limits, clock=self.clock, pod_node=self.pods.node_of
        )
        server = grpc.aio.server(interceptors=[interceptor])
        metrics = Metrics()
        server.add_generic_rpc_handlers([
            service_handler(POD_SERVICE, self.pods, metrics),
            service_handler(SERVICES[0], TokenServicer(self.tokens), metrics),
            service_handler(SERVICES[1], BootstrapServicer(self.tokens, self.ca, self.clock), metrics),
            service_handler(SERVICES[2], IdentityServicer(), metrics),
        ])
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        own = self.pki.load("controller")
        creds = grpc.ssl_server_credentials(
            [(own.key_pem, own.cert_pem)], root_certificates=self.ca.cert_pem, require_client_auth=True
        )
        self.port = server.add_secure_port("127.0.0.1:0", creds)
        await server.start()
        self.server = server

    def channel(self, cert: CertKey | None, token: str = "", *, ca: bytes | None = None) -> grpc.aio.Channel:
        s = ConnectionSettings(
            server=f"127.0.0.1:{self.port}", ca_pem=ca or self.ca.cert_pem,
            client_cert_pem=cert.cert_pem if cert else None, client_key_pem=cert.key_pem if cert else None,
            token=token,
        )
        creds, call, opts = channel_credentials(s)
        assert creds is not None
        if call is not None:
            creds = grpc.composite_channel_credentials(creds, call)
        ch = grpc.aio.secure_channel(s.server, creds, options=opts)
        self.channels.append(ch)
        return ch

    def cert(self, subject: Subject) -> CertKey:
        return self.ca.issue(subject, now=NOW)

    async def stop(self) -> None:
        for ch in self.channels:
            await ch.close()
        if self.server is not None:
            await self.server.stop(None)


@pytest.fixture
async def h(tmp_path: pathlib.Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path)
    await harness.start(Limits(user_rate=5, user_burst=5, system_rate=100, system_burst=100))
    yield harness
    await harness.stop()


def transport(h: Harness) -> CertKey:
    return h.pki.load("transport")



POD = pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(namespace="default", name="web"))


async def test_no_client_certificate_is_refused_at_handshake(h: Harness) -> None:
    ch = h.channel(None)
    code = await code_of(health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5))
    assert code == grpc.StatusCode.UNAVAILABLE
    plain = grpc.aio.insecure_channel(f"127.0.0.1:{h.port}")
    h.channels.append(plain)
    code = await code_of(health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5))
    assert code == grpc.StatusCode.UNAVAILABLE


async def test_certificate_from_another_ca_is_refused(h: Harness) -> None:
    rogue_ca = CertificateAuthority.create("rogue", now=NOW)
    rogue = rogue_ca.issue(Subject("admin", ("system:masters",)), now=NOW)
    ch = h.channel(rogue)
    code = await code_of(pod_pb2_grpc.PodServiceStub(ch).Create(POD, timeout=5))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert h.pods.created == []


async def test_transport_certificate_alone_is_unauthenticated(h: Harness) -> None:
    ch = h.channel(transport(h))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await pod_pb2_grpc.PodServiceStub(ch).List(meta_pb2.ListOptions(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "needs credentials" in (e.value.details() or "")
    ok = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert ok.status == health_pb2.HealthCheckResponse.SERVING


async def test_admin_certificate_and_whoami(h: Harness) -> None:
    ch = h.channel(h.pki.load("admin"))
    await pod_pb2_grpc.PodServiceStub(ch).Create(POD, timeout=5)
    who = await auth_pb2_grpc.IdentityServiceStub(ch).WhoAmI(auth_pb2.WhoAmIRequest(), timeout=5)
    assert (who.user, who.role, who.authenticated_by) == ("admin", "admin", "certificate")
    assert h.pods.created == ["web"]


async def test_view_token_cannot_create(h: Harness) -> None:
    admin = h.channel(h.pki.load("admin"))
    tokens = auth_pb2_grpc.TokenServiceStub(admin)
    tok = await tokens.Create(auth_pb2.CreateTokenRequest(role="view"), timeout=5)
    ch = h.channel(transport(h), tok.token)
    pods = pod_pb2_grpc.PodServiceStub(ch)
    await pods.List(meta_pb2.ListOptions(), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await pods.Create(POD, timeout=5)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "view role only reads" in (e.value.details() or "")
    assert h.pods.created == []
    who = await auth_pb2_grpc.IdentityServiceStub(ch).WhoAmI(auth_pb2.WhoAmIRequest(), timeout=5)
    assert (who.role, who.authenticated_by) == ("view", "token")


async def test_bad_token_is_unauthenticated_even_with_admin_cert(h: Harness) -> None:
    ch = h.channel(h.pki.load("admin"), "abcdefgh." + "x" * 32)
    code = await code_of(pod_pb2_grpc.PodServiceStub(ch).List(meta_pb2.ListOptions(), timeout=5))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_node_certificate_limited_to_own_pods(h: Harness) -> None:
    ch = h.channel(h.cert(node_subject("n1")))
    pods = pod_pb2_grpc.PodServiceStub(ch)
    got = await pods.Get(meta_pb2.ObjectKey(namespace="default", name="mine"), timeout=5)
    assert got.spec.node_name == "n1"
    assert await code_of(pods.Get(meta_pb2.ObjectKey(namespace="default", name="theirs"), timeout=5)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    mine = pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(namespace="default", name="mine"))
    theirs = pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(namespace="default", name="theirs"))
    await pods.UpdateStatus(mine, timeout=5)
    assert await code_of(pods.UpdateStatus(theirs, timeout=5)) == grpc.StatusCode.PERMISSION_DENIED
    assert h.pods.status_updates == ["mine"]
    assert await code_of(pods.Create(POD, timeout=5)) == grpc.StatusCode.PERMISSION_DENIED
    # Streams are gated too.
    watch = pods.Watch(meta_pb2.WatchOptions(list=meta_pb2.ListOptions(field_selector="spec.nodeName=n2")))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for _ in watch:
            pass
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    ok = pods.Watch(meta_pb2.WatchOptions(list=meta_pb2.ListOptions(field_selector="spec.nodeName=n1")))
    events = [ev async for ev in ok]
    assert [ev.resource_version for ev in events] == [7]


async def test_rate_limit_is_resource_exhausted(h: Harness) -> None:
    created = await h.tokens.create(role="view")
    ch = h.channel(transport(h), created.token)
    pods = pod_pb2_grpc.PodServiceStub(ch)
    codes = [await code_of(pods.List(meta_pb2.ListOptions(), timeout=5)) for _ in range(7)]
    assert codes[:5] == [grpc.StatusCode.OK] * 5
    assert codes[5] == grpc.StatusCode.RESOURCE_EXHAUSTED
    await h.clock.advance(1.0)
    assert await code_of(pods.List(meta_pb2.ListOptions(), timeout=5)) == grpc.StatusCode.OK


async def test_client_streams_count_against_the_users_stream_cap(tmp_path: pathlib.Path) -> None:
    """A heartbeat or exec stream holds the server as long as a watch does: it counts
    against the user's `max_streams` while open, and frees its place when it ends."""
    h = Harness(tmp_path)
    await h.start(Limits(user_rate=100, user_burst=100, system_rate=100, system_burst=100, max_streams=1))
    try:
        pods = pod_pb2_grpc.PodServiceStub(h.channel(h.pki.load("admin")))
        first = pods.ExecStream(timeout=10)
        await first.write(pod_pb2.ExecStreamRequest(stdin=b"hi"))
        assert (await first.read()).stdout == b"hi"
        second = pods.ExecStream(timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await second.read()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "1 open streams" in (refused.value.details() or "")
        await first.done_writing()
        assert (await first.read()).exit_code == 0
        assert await first.code() == grpc.StatusCode.OK
        third = pods.ExecStream(timeout=10)
        await third.write(pod_pb2.ExecStreamRequest(stdin=b"again"))
        assert (await third.read()).stdout == b"again"
        await third.done_writing()
        assert (await third.read()).exit_code == 0
        assert await third.code() == grpc.StatusCode.OK
    finally:
        await h.stop()


async def test_oversized_labels_are_invalid_argument(h: Harness) -> None:
    ch = h.channel(h.pki.load("admin"))
    big = pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(name="web", labels={f"k{i}": "v" for i in range(100)}))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await pod_pb2_grpc.PodServiceStub(ch).Create(big, timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (e.value.details() or "").startswith("metadata.labels: at most 64 labels")


async def test_bootstrap_exchange_gives_a_working_node_certificate(h: Harness) -> None:
    admin = h.channel(h.pki.load("admin"))
    created = await auth_pb2_grpc.TokenServiceStub(admin).Create(
        auth_pb2.CreateTokenRequest(role="bootstrap", single_use=True, ttl_seconds=600), timeout=5
    )
    key = key_to_pem(new_key())
    anon = auth_pb2_grpc.BootstrapServiceStub(h.channel(transport(h)))
    # A CSR for another identity is refused, and does not burn the token.
    bad = make_csr(key, Subject("admin", ("system:masters",)))
    req = auth_pb2.ExchangeTokenRequest(token=created.token, node_name="n1", csr_pem=bad)
    assert await code_of(anon.ExchangeToken(req, timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT
    req.csr_pem = make_csr(key, node_subject("n1"))
    resp = await anon.ExchangeToken(req, timeout=5)
    # Single use: the second exchange fails.
    assert await code_of(anon.ExchangeToken(req, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
    node = h.channel(CertKey(resp.certificate_pem, key))
    who = await auth_pb2_grpc.IdentityServiceStub(node).WhoAmI(auth_pb2.WhoAmIRequest(), timeout=5)
    assert (who.role, who.node_name) == ("node", "n1")


async def test_expired_bootstrap_token_fails(h: Harness) -> None:
    admin = h.channel(h.pki.load("admin"))
    created = await auth_pb2_grpc.TokenServiceStub(admin).Create(
        auth_pb2.CreateTokenRequest(role="bootstrap", ttl_seconds=60), timeout=5
    )
    await h.clock.advance(61)
    key = key_to_pem(new_key())
    csr = make_csr(key, node_subject("n1"))
    req = auth_pb2.ExchangeTokenRequest(token=created.token, node_name="n1", csr_pem=csr)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await auth_pb2_grpc.BootstrapServiceStub(h.channel(transport(h))).ExchangeToken(req, timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in (e.value.details() or "")
