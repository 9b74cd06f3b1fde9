"""A local user who reaches etcd's port writes themselves an admin token (issue #15,
hole 11), against a real etcd with client-certificate authentication and a real
secure controller: without the controller's etcd certificate, etcd lets nobody in —
not plaintext, not the cluster's public transport certificate, not even the admin's."""

from __future__ import annotations

import os
import pathlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import grpc
import pytest

from controller.store import EtcdStore
from controller.testing import ControllerRunner
from cowpod.auth import tokens as tok
from cowpod.auth.credentials import connect
from cowpod.clock import RealClock
from cowpod.errors import Unavailable
from cowpod.local.etcd import EtcdMember, free_port
from cowpod.local.state import connection_for
from cowpod.local.supervisor import Layout, Supervisor, UpOptions, etcd_components, probe
from cowpod.pki import ClusterPKI, TLSFiles
from cowpod.v1 import auth_pb2, meta_pb2

pytestmark = pytest.mark.integration


@pytest.fixture
def pki(tmp_path: pathlib.Path) -> ClusterPKI:
    pki = ClusterPKI(tmp_path / "pki")
    pki.ensure(now=time.time())
    pki.etcd.ensure(now=time.time())
    return pki


@pytest.fixture
def tls_etcd(tmp_path: pathlib.Path, pki: ClusterPKI) -> Iterator[EtcdMember]:
    member = EtcdMember(data_dir=tmp_path / "etcd", tls=pki.etcd.member, log_path=tmp_path / "etcd.log")
    member.start()
    try:
        member.wait_ready()
        yield member
    finally:
        member.stop()


def forged_admin_token() -> tuple[str, auth_pb2.Token]:
    bearer = tok.generate()
    record = auth_pb2.Token(spec=auth_pb2.TokenSpec(role="admin"), secret_sha256=bearer.secret_sha256)
    record.metadata.name = bearer.id
    return str(bearer), record


async def test_etcd_refuses_everyone_but_the_controller(tls_etcd: EtcdMember, pki: ClusterPKI) -> None:
    prefix = f"/etcd-auth-{uuid.uuid4().hex[:8]}"
    bearer, record = forged_admin_token()
    strangers = {
        "plaintext": None,
        "transport certificate": TLSFiles(pki.etcd.ca_cert, pki.cert("transport"), pki.key("transport")),
        "cluster admin certificate": TLSFiles(pki.etcd.ca_cert, pki.cert("admin"), pki.key("admin")),
    }
    for who, tls in strangers.items():
        store = EtcdStore([tls_etcd.endpoint], prefix, timeout=2.0, tls=tls)
        try:
            with pytest.raises(Unavailable):
                await store.create(f"registry/tokens/{record.metadata.name}", record)
        finally:
            await store.close()
        assert who  # (named for the failure message above)
    runner = ControllerRunner.secure(tls_etcd.endpoint, prefix, pki_dir=pki.directory,
                                     etcd_tls=pki.etcd.controller)
    async with runner, runner.client("admin") as admin:
        # The controller itself works over the authenticated connection...
        await admin.nodes.List(meta_pb2.ListOptions())
        # ...and the token nobody could plant is no token.
        async with runner.client("transport", token=bearer) as forged:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await forged.pods.List(meta_pb2.ListOptions())
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_cowpod_up_runs_etcd_that_only_the_controller_may_use(tmp_path: pathlib.Path) -> None:
    """The local cluster `cowpod up` starts (here three members, so peers speak TLS too)."""
    data = tmp_path / "d"
    env = {**os.environ, "COWPOD_CONFIG": str(data / "config")}
    sup = Supervisor(Layout(data), RealClock(), say=lambda _: None, progress=lambda _: None,
                     progress_done=lambda: None, env=env)
    opts = UpOptions(listen=f"127.0.0.1:{free_port()}", provider="none", detach=True, secure=True,
                     etcd_members=3)
    state = await sup.up(opts)
    try:
        pki = ClusterPKI.of(data)
        endpoints = state.etcd.split(",")
        bearer, record = forged_admin_token()
        for tls in (None, TLSFiles(pki.etcd.ca_cert, pki.cert("transport"), pki.key("transport"))):
            store = EtcdStore(endpoints, "/cowpod", timeout=2.0, tls=tls)
            try:
                with pytest.raises(Unavailable):
                    await store.create(f"registry/tokens/{record.metadata.name}", record)
            finally:
                await store.close()
        report = [await probe(c, state) for c in etcd_components(state)]
        assert report and all(h.healthy for h in report)
        async with connect(connection_for(state), clock=RealClock()) as admin:
            await admin.nodes.List(meta_pb2.ListOptions())
        transport = pki.load("transport")
        settings = replace(connection_for(state), token=bearer, client_cert_pem=transport.cert_pem,
                           client_key_pem=transport.key_pem)
        async with connect(settings) as forged:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await forged.pods.List(meta_pb2.ListOptions())
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await sup.down(purge=True, quiet=True)
