"""Least privilege against a real secure controller (TLS, real etcd), issue #15 hole 9:
an edit token calling what the authorizer's table does not give it, the scheduler's
certificate taking another component's lease, and tokens that never expire."""

from __future__ import annotations

import io
import pathlib
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from controller.testing import ControllerRunner, code_of
from cowpod.auth.tokens import DEFAULT_TOKEN_TTL
from cowpod.cli.main import main
from cowpod.clock import FakeClock
from cowpod.leases import AUTOSCALER_LEASE_NAME, SCHEDULER_LEASE_NAME, SYSTEM_NAMESPACE
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import auth_pb2, auth_pb2_grpc, lease_pb2, meta_pb2, workload_pb2
from tests.integration.test_fuzz_api import ThreadedController
from tests.integration.test_security_cli import cluster  # noqa: F401  (a fixture)

pytestmark = pytest.mark.integration



@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=time.time())


@pytest.fixture
async def secure(
    etcd: EtcdMember, etcd_prefix: str, tmp_path: pathlib.Path, clock: FakeClock
) -> AsyncIterator[ControllerRunner]:
    runner = ControllerRunner.secure(etcd.endpoint, etcd_prefix, pki_dir=tmp_path / "pki", clock=clock)
    async with runner:
        yield runner


async def create_token(secure: ControllerRunner, role: str, ttl: int = 0) -> auth_pb2.Token:
    async with secure.client("admin") as admin:
        stub = auth_pb2_grpc.TokenServiceStub(admin.channel)
        return await stub.Create(auth_pb2.CreateTokenRequest(role=role, ttl_seconds=ttl))


def lease(namespace: str, name: str) -> lease_pb2.Lease:
    return lease_pb2.Lease(metadata=meta_pb2.ObjectMeta(namespace=namespace, name=name),
                           spec=lease_pb2.LeaseSpec(holder_identity="sched-1", lease_duration_seconds=15))


async def test_edit_token_gets_only_what_the_table_gives(secure: ControllerRunner) -> None:
    token = (await create_token(secure, "edit")).token
    rs = workload_pb2.ReplicaSet(metadata=meta_pb2.ObjectMeta(namespace="default", name="web"))
    rs.spec.replicas = 1
    rs.spec.selector.match_labels["app"] = "web"
    rs.spec.template.metadata.labels["app"] = "web"
    rs.spec.template.spec.containers.add(name="main", image="cowpod/busybox:latest")
    async with secure.client("transport", token=token) as editor:
        await editor.replicasets.Create(rs)
        # Status belongs to the ReplicaSet controller: a user writing it could lie about replicas.
        rs.status.ready_replicas = 99
        assert await code_of(editor.replicasets.UpdateStatus(rs)) == grpc.StatusCode.PERMISSION_DENIED
        # Methods of services the table does not list for users are admin-only.
        stub = auth_pb2_grpc.BootstrapServiceStub(editor.channel)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.SignServingCertificate(auth_pb2.ServingCertificateRequest())
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "not in the authorization table" in (e.value.details() or "")
    async with secure.client("admin") as admin:
        stored = await admin.replicasets.Get(meta_pb2.ObjectKey(namespace="default", name="web"))
    assert stored.status.ready_replicas != 99


async def test_scheduler_takes_only_its_own_lease(secure: ControllerRunner) -> None:
    async with secure.client("scheduler") as sched:
        # The autoscaler's leadership lease: taking it would stop the autoscaler.
        code = await code_of(sched.leases.Create(lease(SYSTEM_NAMESPACE, AUTOSCALER_LEASE_NAME)))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        code = await code_of(sched.leases.Create(lease("default", "anything")))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        await sched.leases.Create(lease(SYSTEM_NAMESPACE, SCHEDULER_LEASE_NAME))
    async with secure.client("admin") as admin:
        listed = await admin.leases.List(meta_pb2.ListOptions(namespace=SYSTEM_NAMESPACE))
    assert [x.metadata.name for x in listed.items] == [SCHEDULER_LEASE_NAME]


async def test_tokens_expire_by_default(secure: ControllerRunner) -> None:
    created = await create_token(secure, "view")
    assert created.spec.HasField("expires_at")
    lifetime = created.spec.expires_at.seconds - created.metadata.creation_timestamp.seconds
    assert lifetime == DEFAULT_TOKEN_TTL


async def test_a_token_created_without_ttl_stops_working_at_the_configured_default(
    etcd: EtcdMember, etcd_prefix: str, tmp_path: pathlib.Path, clock: FakeClock
) -> None:
    runner = ControllerRunner.secure(etcd.endpoint, etcd_prefix, pki_dir=tmp_path / "pki", clock=clock,
                                     token_ttl=600)
    async with runner:
        created = await create_token(runner, "edit")
        assert created.spec.expires_at.seconds - created.metadata.creation_timestamp.seconds == 600
        async with runner.client("transport", token=created.token) as editor:
            await editor.pods.List(meta_pb2.ListOptions())
            await clock.advance(601)
            assert await code_of(editor.pods.List(meta_pb2.ListOptions())) == grpc.StatusCode.UNAUTHENTICATED


def test_token_list_shows_the_default_expiry(
    cluster: tuple[ThreadedController, dict[str, str]],  # noqa: F811
) -> None:
    _, env = cluster
    out, err = io.StringIO(), io.StringIO()
    code = main(["token", "create", "--role", "view"], env=env, stdout=out, stderr=err, stdin=io.StringIO())
    assert code == 0 and "expires never" not in err.getvalue()
    out = io.StringIO()
    assert main(["token", "list"], env=env, stdout=out, stderr=err, stdin=io.StringIO()) == 0
    expected = time.strftime("%Y-%m-%d", time.gmtime(time.time() + DEFAULT_TOKEN_TTL))
    rows = [line for line in out.getvalue().splitlines() if " view " in line]
    assert len(rows) == 1 and expected in rows[0], out.getvalue()
