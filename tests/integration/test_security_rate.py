"""Locking a token user out by flooding junk under their token id, against a real secure
controller (TLS, real etcd) with a clock that stands still, so no bucket refills during
the test (issue #15, hole 6): buckets are charged after authentication, and failures
are limited per source address, never per the token id they name."""

from __future__ import annotations

import pathlib
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from controller.limits import Limits
from controller.testing import ControllerRunner, code_of
from cowpod.auth.config import ConnectionSettings
from cowpod.auth.credentials import connect
from cowpod.clock import FakeClock
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import auth_pb2, auth_pb2_grpc, meta_pb2

pytestmark = pytest.mark.integration



@pytest.fixture
async def secure(
    etcd: EtcdMember, etcd_prefix: str, tmp_path: pathlib.Path
) -> AsyncIterator[ControllerRunner]:
    runner = ControllerRunner.secure(
        etcd.endpoint, etcd_prefix, pki_dir=tmp_path / "pki", clock=FakeClock(start=time.time()),
        listen_unix=str(tmp_path / "run" / "c.sock"), limits=Limits(),
    )
    async with runner:
        yield runner


async def view_token(secure: ControllerRunner) -> str:
    async with secure.client("admin") as admin:
        stub = auth_pb2_grpc.TokenServiceStub(admin.channel)
        return str((await stub.Create(auth_pb2.CreateTokenRequest(role="view"))).token)


def over_unix(settings: ConnectionSettings, secure: ControllerRunner) -> ConnectionSettings:
    return ConnectionSettings(**{**settings.__dict__, "server": f"unix://{secure.config.listen_unix}"})


async def test_junk_under_a_users_token_id_does_not_lock_the_user_out(secure: ControllerRunner) -> None:
    token = await view_token(secure)
    token_id = token.split(".")[0]
    async with secure.client("transport", token=token) as victim:
        await victim.pods.List(meta_pb2.ListOptions())
        # 250 calls with the victim's id and wrong secrets (the id is not secret: logs show it),
        # more than a user's whole burst (200), from the victim's own address.
        codes = []
        for i in range(250):
            junk = f"{token_id}.{i:032d}"
            async with secure.client("transport", token=junk) as attacker:
                codes.append(await code_of(attacker.pods.List(meta_pb2.ListOptions(), timeout=5)))
        assert set(codes) == {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert codes[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED  # the attacker's source is limited
        # The junk never touched the victim's bucket: the rest of its burst still goes through.
        for _ in range(Limits().user_burst - 1):
            await victim.pods.List(meta_pb2.ListOptions(), timeout=5)


async def test_failed_attempts_are_limited_per_source_address(secure: ControllerRunner) -> None:
    token = await view_token(secure)
    async with secure.client("transport", token=token) as victim:
        await victim.pods.List(meta_pb2.ListOptions())
    # Unknown ids and malformed tokens from one address use up that address's failure budget...
    codes = []
    for i in range(Limits().failed_auth_burst + 5):
        junk = f"{i:08d}.{i:032d}" if i % 2 else "not-a-token"
        async with secure.client("transport", token=junk) as attacker:
            codes.append(await code_of(attacker.pods.List(meta_pb2.ListOptions(), timeout=5)))
    burst = Limits().failed_auth_burst
    assert codes[:burst] == [grpc.StatusCode.UNAUTHENTICATED] * burst
    assert set(codes[burst:]) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    # ...a fresh connection from it (new port) is no way around it...
    async with secure.client("transport", token="0000zzzz.00000000000000000000000000000000") as again:
        code = await code_of(again.pods.List(meta_pb2.ListOptions(), timeout=5))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # ...while a token known to work still does, from the same address,
    async with secure.client("transport", token=token) as victim:
        await victim.pods.List(meta_pb2.ListOptions(), timeout=5)
    # and another source (the VMs' unix socket) still gets an honest answer.
    async with connect(over_unix(secure.settings("transport", token="0000zzzz.0000"), secure)) as other:
        code = await code_of(other.pods.List(meta_pb2.ListOptions(), timeout=5))
    assert code == grpc.StatusCode.UNAUTHENTICATED
