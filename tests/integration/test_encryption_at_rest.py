"""Secrets encrypted at rest through the real controller on a real etcd: what etcd holds
is ciphertext under the `k8s:enc:aesgcm:v1:<key>:` prefix while the API, lists and watches
give plaintext; a key rotation (new key first, old second, rewrite, drop the old) keeps
every Secret readable; a Secret whose key was dropped is named in the error, left out of
lists, and can still be deleted; ConfigMaps stay plaintext."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from controller import encryption
from controller.configs import CONFIGMAPS, SECRETS
from controller.encryption import EncryptionConfig
from controller.store import EtcdStore
from controller.testing import ControllerRunner
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import config_pb2, meta_pb2

pytestmark = pytest.mark.integration

K1, K2, K3 = encryption.new_key(), encryption.new_key(), encryption.new_key()


def enc(*keys: tuple[str, str], identity: bool = True) -> EncryptionConfig:
    providers: list[dict[str, object]] = [{"aesgcm": {"keys": [{"name": n, "secret": s} for n, s in keys]}}]
    if identity:
        providers.append({"identity": {}})
    return encryption.parse({"resources": [{"resources": ["secrets"], "providers": providers}]})


def secret(name: str, value: bytes) -> config_pb2.Secret:
    return config_pb2.Secret(metadata=meta_pb2.ObjectMeta(namespace="default", name=name),
                             data={"password": value})


def key(name: str) -> meta_pb2.ObjectKey:
    return meta_pb2.ObjectKey(namespace="default", name=name)


@pytest.fixture
async def raw(etcd: EtcdMember, etcd_prefix: str) -> AsyncIterator[EtcdStore]:
    """The project's etcd client on the test's prefix, without encryption: the bytes etcd holds."""
    store = EtcdStore([etcd.endpoint], etcd_prefix)
    try:
        yield store
    finally:
        await store.close()


async def stored(raw: EtcdStore, name: str) -> bytes:
    kv = await raw.get_raw(SECRETS.key("default", name))
    assert kv is not None
    return kv.value


async def restart_with(runner: ControllerRunner, cfg: EncryptionConfig | None, *,
                       rewrite: bool = False) -> None:
    await runner.stop()
    runner.config = dataclasses.replace(runner.config, encryption=cfg, encryption_rewrite=rewrite)
    await runner.start()


async def next_change(call: grpc.aio.UnaryStreamCall) -> config_pb2.SecretWatchEvent:  # type: ignore[type-arg]
    while True:
        ev = await call.read()
        assert isinstance(ev, config_pb2.SecretWatchEvent)
        if ev.type != meta_pb2.BOOKMARK:
            return ev


async def test_secrets_are_ciphertext_in_etcd_and_survive_a_key_rotation(
    etcd: EtcdMember, etcd_prefix: str, raw: EtcdStore
) -> None:
    pw = f"hunter2-{uuid.uuid4().hex}".encode()
    runner = ControllerRunner(etcd.endpoint, etcd_prefix)  # encryption off: a Secret from before
    await runner.start()
    try:
        async with runner.client() as client:
            await client.wait_ready()
            await client.secrets.Create(secret("before", pw))
            assert pw in await stored(raw, "before")

            await restart_with(runner, enc(("k1", K1)))
            await client.wait_ready()
            created = await client.secrets.Create(secret("db", pw))
            cm = config_pb2.ConfigMap(metadata=meta_pb2.ObjectMeta(namespace="default", name="page"),
                                      data={"index.html": pw.decode()})
            await client.configmaps.Create(cm)

            value = await stored(raw, "db")
            assert value.startswith(b"k8s:enc:aesgcm:v1:k1:")
            assert pw not in value and b"password" not in value and b"default" not in value
            cm_kv = await raw.get_raw(CONFIGMAPS.key("default", "page"))
            assert cm_kv is not None and pw in cm_kv.value  # only the listed resources
            assert pw in await stored(raw, "before")  # written before: plaintext until rewritten

            # Every read path gives plaintext: get, list, and a watch served by the hub.
            assert (await client.secrets.Get(key("db"))).data["password"] == pw
            assert (await client.secrets.Get(key("before"))).data["password"] == pw  # identity
            listed = await client.secrets.List(meta_pb2.ListOptions(namespace="default"))
            assert {s.metadata.name: s.data["password"] for s in listed.items} == {"before": pw, "db": pw}
            call = client.secrets.Watch(meta_pb2.WatchOptions(
                resource_version=created.metadata.resource_version))
            changed = await client.secrets.Get(key("db"))
            changed.data["password"] = pw + b"-2"
            await client.secrets.Update(changed)
            ev = await next_change(call)
            call.cancel()
            assert (ev.type, ev.object.data["password"]) == (meta_pb2.MODIFIED, pw + b"-2")

            # Rotation, step 2: the new key first, the old one second. Old values still read;
            # new writes use the new key.
            await restart_with(runner, enc(("k2", K2), ("k1", K1)))
            await client.wait_ready()
            assert (await client.secrets.Get(key("db"))).data["password"] == pw + b"-2"
            await client.secrets.Create(secret("new", pw))
            assert (await stored(raw, "new")).startswith(b"k8s:enc:aesgcm:v1:k2:")
            assert (await stored(raw, "db")).startswith(b"k8s:enc:aesgcm:v1:k1:")

            # Step 3: rewrite everything with the first key, at start-up.
            await restart_with(runner, enc(("k2", K2), ("k1", K1)), rewrite=True)
            await client.wait_ready()
            for name in ("before", "db", "new"):
                assert (await stored(raw, name)).startswith(b"k8s:enc:aesgcm:v1:k2:"), name

            # Step 4: drop the old key and identity; everything still reads.
            await restart_with(runner, enc(("k2", K2), identity=False))
            await client.wait_ready()
            listed = await client.secrets.List(meta_pb2.ListOptions(namespace="default"))
            assert sorted(s.metadata.name for s in listed.items) == ["before", "db", "new"]
            assert (await client.secrets.Get(key("before"))).data["password"] == pw
    finally:
        await runner.stop()


async def test_a_secret_under_a_dropped_key_is_named_left_out_of_lists_and_deletable(
    etcd: EtcdMember, etcd_prefix: str, raw: EtcdStore
) -> None:
    runner = ControllerRunner(etcd.endpoint, etcd_prefix, encryption=enc(("old", K1)))
    await runner.start()
    try:
        async with runner.client() as client:
            await client.wait_ready()
            await client.secrets.Create(secret("lost", b"x"))
            await restart_with(runner, enc(("k3", K3)))  # "old" dropped before a rewrite
            await client.wait_ready()
            await client.secrets.Create(secret("fine", b"y"))

            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.secrets.Get(key("lost"))
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert (err.value.details() or "").startswith(
                'secrets "default/lost" is encrypted with aesgcm key \'old\'')
            listed = await client.secrets.List(meta_pb2.ListOptions(namespace="default"))
            assert [s.metadata.name for s in listed.items] == ["fine"]
            call = client.secrets.Watch(meta_pb2.WatchOptions(send_initial=True))
            ev = await next_change(call)
            call.cancel()
            assert ev.object.metadata.name == "fine"

            # The remedy Kubernetes gives: delete it (and recreate it).
            await client.secrets.Delete(meta_pb2.DeleteOptions(key=key("lost")))
            assert await raw.get_raw(SECRETS.key("default", "lost")) is None
            await client.secrets.Create(secret("lost", b"again"))
            assert (await stored(raw, "lost")).startswith(b"k8s:enc:aesgcm:v1:k3:")
            assert (await client.secrets.Get(key("lost"))).data["password"] == b"again"
    finally:
        await runner.stop()
