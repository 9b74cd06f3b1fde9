"""`cowpod up --secrets-encryption` through the supervisor (real etcd and controller
processes): the key file is made once (0600), the controller gets it, etcd holds only
ciphertext, and a later `up` without the flag keeps using it so the Secret still reads."""

from __future__ import annotations

import os
import pathlib
import stat

import pytest

from controller import encryption
from controller.configs import SECRETS
from controller.store import EtcdStore
from cowpod.auth.credentials import connect
from cowpod.clock import RealClock
from cowpod.local.etcd import free_port
from cowpod.local.state import ClusterState, connection_for
from cowpod.local.supervisor import Layout, Supervisor, UpOptions
from cowpod.v1 import config_pb2, meta_pb2

pytestmark = pytest.mark.integration

VALUE = b"local-cluster-password-1234"


def supervisor(data: pathlib.Path, said: list[str]) -> Supervisor:
    env = {**os.environ, "COWPOD_CONFIG": str(data / "config")}
    return Supervisor(Layout(data), RealClock(), say=said.append, progress=lambda _: None,
                      progress_done=lambda: None, env=env)


async def stored(state: ClusterState) -> bytes:
    store = EtcdStore(state.etcd.split(","), "/cowpod")
    try:
        kv = await store.get_raw(SECRETS.key("default", "db"))
    finally:
        await store.close()
    assert kv is not None
    return kv.value


async def test_up_with_secrets_encryption_keeps_its_key(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "d"
    said: list[str] = []
    sup = supervisor(data, said)
    opts = UpOptions(listen=f"127.0.0.1:{free_port()}", provider="none", detach=True, secure=False,
                     secrets_encryption=True)
    state = await sup.up(opts)
    key_file = Layout(data).encryption_config
    try:
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        made = key_file.read_text()
        assert encryption.load(key_file).describe() == "secrets with aesgcm:key1"
        assert any(str(key_file) in line for line in said)
        ctl = state.component("controller")
        assert ctl is not None and ["--encryption-config", str(key_file)] == ctl.command[-2:]
        async with connect(connection_for(state), clock=RealClock()) as client:
            s = config_pb2.Secret(metadata=meta_pb2.ObjectMeta(namespace="default", name="db"),
                                  data={"password": VALUE})
            await client.create(client.secrets.Create, client.secrets.Get, s)
        value = await stored(state)
        assert value.startswith(b"k8s:enc:aesgcm:v1:key1:") and VALUE not in value
    finally:
        assert await sup.down(purge=False)

    # Again without the flag: the file is the cluster's, so the controller still gets it.
    sup = supervisor(data, said)
    state = await sup.up(UpOptions(listen=f"127.0.0.1:{free_port()}", provider="none", detach=True,
                                   secure=False))
    try:
        assert key_file.read_text() == made
        async with connect(connection_for(state), clock=RealClock()) as client:
            got = await client.call(client.secrets.Get, meta_pb2.ObjectKey(namespace="default", name="db"))
            assert got.data["password"] == VALUE
    finally:
        assert await sup.down(purge=True)
    assert not key_file.exists()
