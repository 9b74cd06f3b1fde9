"""Each security rule against a real controller (TLS, real etcd): who gets in,
who may do what, what is stored, and with which status code the rest fail."""

from __future__ import annotations

import pathlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controller.limits import Limits
from controller.testing import ControllerRunner, code_of
from cowpod.auth.bootstrap import ensure_node_certificate, node_settings
from cowpod.auth.config import ConnectionSettings
from cowpod.auth.credentials import connect
from cowpod.client import Client
from cowpod.clock import FakeClock
from cowpod.local.etcd import EtcdMember
from cowpod.pki import CertificateAuthority, Subject
from cowpod.v1 import auth_pb2, auth_pb2_grpc, meta_pb2, node_pb2, pod_pb2, vm_pb2

pytestmark = pytest.mark.integration


def make_pod(name: str, **labels: str) -> pod_pb2.Pod:
    p = pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(name=name, namespace="default", labels=labels))
    p.spec.containers.add(name="main", image="cowpod/busybox:latest")
    return p


def make_node(name: str) -> node_pb2.Node:
    n = node_pb2.Node(metadata=meta_pb2.ObjectMeta(name=name))
    n.status.capacity.cpu_millis = 2000
    n.status.capacity.memory_bytes = 2 << 30
    n.status.capacity.pods = 10
    return n



@pytest.fixture
async def secure(
    etcd: EtcdMember, etcd_prefix: str, tmp_path: pathlib.Path
) -> AsyncIterator[ControllerRunner]:
    runner = ControllerRunner.secure(
        etcd.endpoint, etcd_prefix, pki_dir=tmp_path / "pki", listen_unix=str(tmp_path / "run" / "c.sock"),
    )
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()


@pytest.fixture
async def admin(secure: ControllerRunner) -> AsyncIterator[Client]:
    async with secure.client("admin") as c:
        yield c


async def new_token(admin: Client, role: str, **kw: Any) -> str:
    stub = auth_pb2_grpc.TokenServiceStub(admin.channel)
    created = await stub.Create(auth_pb2.CreateTokenRequest(role=role, **kw))
    return str(created.token)


async def join_node(secure: ControllerRunner, admin: Client, name: str, tmp: pathlib.Path) -> Client:
    """An agent's first start: bootstrap token -> CSR -> node certificate -> a client as the node."""
    token = await new_token(admin, "bootstrap", single_use=True, node_name=name)
    transport = secure.settings("transport")
    pair = await ensure_node_certificate(
        transport, node_name=name, cert_dir=tmp / "node-certs", token=token, clock=FakeClock(time.time())
    )
    return connect(node_settings(transport, pair))


async def test_connection_without_certificate_is_refused(secure: ControllerRunner) -> None:
    s = secure.settings("admin")
    no_cert = ConnectionSettings(server=s.server, ca_pem=s.ca_pem, tls_server_name=s.tls_server_name)
    async with connect(no_cert) as c:
        assert await code_of(c.pods.List(meta_pb2.ListOptions(), timeout=5)) == grpc.StatusCode.UNAVAILABLE
    async with Client(secure.address) as plain:
        assert not await plain.healthy(timeout=3)
        code = await code_of(plain.pods.List(meta_pb2.ListOptions(), timeout=5))
        assert code == grpc.StatusCode.UNAVAILABLE


async def test_certificate_of_another_ca_is_refused(secure_controller: ControllerRunner) -> None:
    secure = secure_controller
    rogue = CertificateAuthority.create("rogue", now=time.time())
    pair = rogue.issue(Subject("admin", ("system:masters",)), now=time.time())
    s = secure.settings("admin")
    forged = ConnectionSettings(
        server=s.server, ca_pem=s.ca_pem, client_cert_pem=pair.cert_pem, client_key_pem=pair.key_pem
    )
    async with connect(forged) as c:
        assert await code_of(c.pods.Create(make_pod("x"), timeout=5)) == grpc.StatusCode.UNAVAILABLE


async def test_unix_socket_requires_tls_and_identity(secure: ControllerRunner) -> None:
    path = secure.config.listen_unix
    async with Client(f"unix://{path}") as plain:
        code = await code_of(plain.pods.List(meta_pb2.ListOptions(), timeout=5))
        assert code == grpc.StatusCode.UNAVAILABLE
    anon = secure.settings("transport")
    async with connect(ConnectionSettings(**{**anon.__dict__, "server": f"unix://{path}"})) as c:
        code = await code_of(c.pods.List(meta_pb2.ListOptions(), timeout=5))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        # Health answers anyone who completed the handshake (supervisors, load balancers).
        resp = await health_pb2_grpc.HealthStub(c.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    adm = secure.settings("admin")
    async with connect(ConnectionSettings(**{**adm.__dict__, "server": f"unix://{path}"})) as c:
        await c.pods.List(meta_pb2.ListOptions(), timeout=5)


async def test_view_token_reads_but_cannot_create(secure: ControllerRunner, admin: Client) -> None:
    await admin.pods.Create(make_pod("web"))
    token = await new_token(admin, "view")
    async with secure.client("transport", token=token) as viewer:
        listed = await viewer.pods.List(meta_pb2.ListOptions(namespace="default"))
        assert [p.metadata.name for p in listed.items] == ["web"]
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await viewer.pods.Create(make_pod("evil"))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "view role only reads" in (e.value.details() or "")
        code = await code_of(viewer.pods.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="web"))))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        tokens = auth_pb2_grpc.TokenServiceStub(viewer.channel)
        assert await code_of(tokens.Create(auth_pb2.CreateTokenRequest(role="admin"))) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    listed = await admin.pods.List(meta_pb2.ListOptions(namespace="default"))
    assert [p.metadata.name for p in listed.items] == ["web"]


async def test_edit_token_creates_pods_but_not_nodes(secure: ControllerRunner, admin: Client) -> None:
    token = await new_token(admin, "edit")
    async with secure.client("transport", token=token) as editor:
        await editor.pods.Create(make_pod("web"))
        assert await code_of(editor.nodes.Register(make_node("n9"))) == grpc.StatusCode.PERMISSION_DENIED
        binding = pod_pb2.Binding(pod=meta_pb2.ObjectKey(name="web"), node_name="x")
        assert await code_of(editor.pods.Bind(binding)) == grpc.StatusCode.PERMISSION_DENIED


async def test_token_is_stored_hashed_and_revocable(secure: ControllerRunner, admin: Client) -> None:
    token = await new_token(admin, "view")
    token_id, secret = token.split(".")
    assert secure.controller is not None
    raw = await secure.controller.store.get_raw(f"registry/tokens/{token_id}")
    assert raw is not None and secret.encode() not in raw.value
    stub = auth_pb2_grpc.TokenServiceStub(admin.channel)
    listed = await stub.List(meta_pb2.ListOptions())
    assert [t.metadata.name for t in listed.items] == [token_id]
    assert all(not t.secret_sha256 and not t.token for t in listed.items)
    await stub.Revoke(auth_pb2.RevokeTokenRequest(name=token_id))
    async with secure.client("transport", token=token) as c:
        assert await code_of(c.pods.List(meta_pb2.ListOptions())) == grpc.StatusCode.UNAUTHENTICATED


async def test_agent_certificate_is_limited_to_its_node(
    secure: ControllerRunner, admin: Client, tmp_path: pathlib.Path
) -> None:
    async with await join_node(secure, admin, "n1", tmp_path) as n1, \
            await join_node(secure, admin, "n2", tmp_path / "other") as n2:
        who = await auth_pb2_grpc.IdentityServiceStub(n1.channel).WhoAmI(auth_pb2.WhoAmIRequest())
        assert (who.user, who.role, who.node_name) == ("system:node:n1", "node", "n1")
        await n1.nodes.Register(make_node("n1"))
        await n2.nodes.Register(make_node("n2"))
        # Another node: neither register, update, heartbeat nor read.
        assert await code_of(n1.nodes.Register(make_node("n2"))) == grpc.StatusCode.PERMISSION_DENIED
        other = await admin.nodes.Get(meta_pb2.ObjectKey(name="n2"))
        other.spec.unschedulable = True
        assert await code_of(n1.nodes.Update(other)) == grpc.StatusCode.PERMISSION_DENIED
        assert await code_of(n1.nodes.UpdateStatus(other)) == grpc.StatusCode.PERMISSION_DENIED
        assert await code_of(n1.nodes.Heartbeat(node_pb2.HeartbeatRequest(node_name="n2"))) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert await code_of(n1.nodes.Get(meta_pb2.ObjectKey(name="n2"))) == grpc.StatusCode.PERMISSION_DENIED
        await n1.nodes.Heartbeat(node_pb2.HeartbeatRequest(node_name="n1"))
        # Pods: it cannot create or bind them.
        assert await code_of(n1.pods.Create(make_pod("sneaky"))) == grpc.StatusCode.PERMISSION_DENIED
        await admin.pods.Create(make_pod("a"))
        await admin.pods.Create(make_pod("b"))
        bind_a = pod_pb2.Binding(pod=meta_pb2.ObjectKey(namespace="default", name="a"), node_name="n1")
        assert await code_of(n1.pods.Bind(bind_a)) == grpc.StatusCode.PERMISSION_DENIED
        async with secure.client("scheduler") as sched:
            await sched.pods.Bind(bind_a)
            await sched.pods.Bind(
                pod_pb2.Binding(pod=meta_pb2.ObjectKey(namespace="default", name="b"), node_name="n2")
            )
            # The scheduler binds and reads; it may say why a pod is pending, on unbound pods only.
            assert await code_of(sched.pods.Create(make_pod("c"))) == grpc.StatusCode.PERMISSION_DENIED
            await admin.pods.Create(make_pod("pending"))
            pending = await sched.pods.Get(meta_pb2.ObjectKey(namespace="default", name="pending"))
            pending.status.message = "0/2 nodes fit"
            await sched.pods.UpdateStatus(pending)
            bound = await sched.pods.Get(meta_pb2.ObjectKey(namespace="default", name="a"))
            bound.status.message = "tampered"
            assert await code_of(sched.pods.UpdateStatus(bound)) == grpc.StatusCode.PERMISSION_DENIED
        # It sees and reports on its own pods only.
        mine = await n1.pods.List(meta_pb2.ListOptions(field_selector="spec.nodeName=n1"))
        assert [p.metadata.name for p in mine.items] == ["a"]
        assert await code_of(n1.pods.List(meta_pb2.ListOptions())) == grpc.StatusCode.PERMISSION_DENIED
        assert await code_of(n1.pods.Get(meta_pb2.ObjectKey(namespace="default", name="b"))) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        a = await n1.pods.Get(meta_pb2.ObjectKey(namespace="default", name="a"))
        a.status.phase = "Running"
        await n1.pods.UpdateStatus(a)
        b = await admin.pods.Get(meta_pb2.ObjectKey(namespace="default", name="b"))
        b.status.phase = "Failed"
        assert await code_of(n1.pods.UpdateStatus(b)) == grpc.StatusCode.PERMISSION_DENIED
        b_now = await admin.pods.Get(meta_pb2.ObjectKey(namespace="default", name="b"))
        assert b_now.status.phase != "Failed"
        # VMs are not for nodes.
        assert await code_of(n1.vms.List(meta_pb2.ListOptions())) == grpc.StatusCode.PERMISSION_DENIED
        assert await code_of(n1.vms.Create(vm_pb2.VM(metadata=meta_pb2.ObjectMeta(name="vm-x")))) == (
            grpc.StatusCode.PERMISSION_DENIED
        )


async def test_expired_bootstrap_token_fails(
    etcd: EtcdMember, etcd_prefix: str, tmp_path: pathlib.Path
) -> None:
    clock = FakeClock(start=time.time())
    runner = ControllerRunner.secure(etcd.endpoint, etcd_prefix, pki_dir=tmp_path / "pki", clock=clock)
    async with runner:
        async with runner.client("admin") as admin:
            token = await new_token(admin, "bootstrap", ttl_seconds=600)
        await clock.advance(601)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await ensure_node_certificate(
                runner.settings("transport"), node_name="n1", cert_dir=tmp_path / "certs", token=token,
                clock=clock,
            )
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "expired" in (e.value.details() or "")
        assert not (tmp_path / "certs" / "n1.crt").exists()


async def test_single_use_bootstrap_token_works_once(
    secure: ControllerRunner, admin: Client, tmp_path: pathlib.Path
) -> None:
    token = await new_token(admin, "bootstrap", single_use=True)
    transport = secure.settings("transport")
    clock = FakeClock(time.time())
    await ensure_node_certificate(
        transport, node_name="n1", cert_dir=tmp_path / "a", token=token, clock=clock
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await ensure_node_certificate(
            transport, node_name="n2", cert_dir=tmp_path / "b", token=token, clock=clock
        )
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_limits_and_rate(etcd: EtcdMember, etcd_prefix: str, tmp_path: pathlib.Path) -> None:
    clock = FakeClock(start=time.time())
    limits = Limits(system_rate=1.0, system_burst=5)
    runner = ControllerRunner.secure(etcd.endpoint, etcd_prefix, pki_dir=tmp_path / "pki", clock=clock,
                                     limits=limits)
    async with runner, runner.client("admin") as admin:
        # Request size: over 4 MiB is refused by gRPC itself.
        huge = make_pod("huge")
        huge.metadata.annotations["a"] = "x" * (5 * 1024 * 1024)
        assert await code_of(admin.pods.Create(huge)) == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Manifest size, labels, annotations: INVALID_ARGUMENT naming the field.
        big = make_pod("big")
        for i in range(8):
            big.metadata.annotations[f"k{i}"] = "x" * (200 * 1024)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await admin.pods.Create(big)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "object is 1.6 MiB; the maximum is 1.0 MiB" in (e.value.details() or "")
        labels = make_pod("labels", **{f"k{i}": "v" for i in range(65)})
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await admin.pods.Create(labels)
        assert (e.value.details() or "").startswith("metadata.labels: at most 64 labels")
        # Rate: the clock stands still, so a burst of 5 is used up within 6 calls.
        errors = []
        for _ in range(6):
            try:
                await admin.pods.List(meta_pb2.ListOptions())
            except grpc.aio.AioRpcError as err:
                errors.append(err)
        assert errors and errors[-1].code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "rate limit for admin" in (errors[-1].details() or "")
        await clock.advance(1.0)
        await admin.pods.List(meta_pb2.ListOptions())
        listed = await runner.controller.store.list_raw("registry/pods/") if runner.controller else None
        assert listed is not None and listed[0] == []


async def test_no_pod_may_mount_the_docker_socket(secure: ControllerRunner, admin: Client) -> None:
    pod = make_pod("sock")
    pod.spec.volumes.add(name="d", host_path=pod_pb2.HostPathVolumeSource(path="/var/run/docker.sock"))
    pod.spec.containers[0].volume_mounts.add(name="d", mount_path="/var/run/docker.sock")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await admin.pods.Create(pod)  # not even an admin
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = e.value.details() or ""
    assert details.startswith("spec.volumes[0].hostPath.path: /var/run/docker.sock is never")
    pod.spec.volumes[0].host_path.path = "/"
    assert await code_of(admin.pods.Create(pod)) == grpc.StatusCode.INVALID_ARGUMENT
    assert (await admin.pods.List(meta_pb2.ListOptions())).items == []
