"""Namespaces, ConfigMaps and Secrets through the real controller on a real etcd (#14):
system namespaces exist from the start, a create in a missing or terminating namespace is
refused naming metadata.namespace, deleting a namespace empties it and removes it; the
ConfigMap/Secret rules; who may read a Secret (view may not; a node only what its pods use)."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Awaitable

import grpc
import pytest

from controller.testing import ControllerRunner, code_of, make_pod
from cowpod.client import Client
from cowpod.v1 import config_pb2, meta_pb2, namespace_pb2, node_pb2, pod_pb2, workload_pb2
from tests.integration.test_security import join_node, new_token
from tests.polling import eventually

pytestmark = pytest.mark.integration


def ns(name: str) -> namespace_pb2.Namespace:
    return namespace_pb2.Namespace(metadata=meta_pb2.ObjectMeta(name=name))


def key(name: str, namespace: str = "") -> meta_pb2.ObjectKey:
    return meta_pb2.ObjectKey(namespace=namespace, name=name)


async def error_of(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def test_system_namespaces_exist_and_cannot_be_deleted(client: Client) -> None:
    async def listed() -> bool:
        names = {n.metadata.name for n in (await client.namespaces.List(meta_pb2.ListOptions())).items}
        return {"default", "kube-system", "cowpod-system", "cowpod-node-lease"} <= names

    await eventually(listed, what="the system namespaces", timeout=20.0)
    default = await client.namespaces.Get(key("default"))
    assert (default.kind, default.api_version, default.status.phase) == ("Namespace", "v1", "Active")
    err = await error_of(client.namespaces.Delete(meta_pb2.DeleteOptions(key=key("default"))))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "system namespace" in (err.details() or "")


async def test_create_in_missing_namespace_is_refused_naming_the_field(client: Client) -> None:
    err = await error_of(client.pods.Create(make_pod("web", namespace="team-a")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert (err.details() or "").startswith('metadata.namespace: namespaces "team-a" not found')
    cm = config_pb2.ConfigMap(metadata=meta_pb2.ObjectMeta(namespace="team-a", name="c"))
    assert await code_of(client.configmaps.Create(cm)) == grpc.StatusCode.NOT_FOUND
    batch = await code_of(
        client.pods.CreateBatch(pod_pb2.CreatePodsRequest(pods=[make_pod("x", namespace="team-a")]))
    )
    assert batch == grpc.StatusCode.NOT_FOUND

    created = await client.namespaces.Create(ns("team-a"))
    assert created.status.phase == "Active" and list(created.spec.finalizers) == ["kubernetes"]
    await client.pods.Create(make_pod("web", namespace="team-a"))
    assert await code_of(client.namespaces.Create(ns("team-a"))) == grpc.StatusCode.ALREADY_EXISTS
    bad = await error_of(client.namespaces.Create(ns("Team.A")))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and "metadata.name" in (bad.details() or "")


async def test_deleting_a_namespace_deletes_what_is_in_it(client: Client) -> None:
    await client.namespaces.Create(ns("doomed"))
    await client.namespaces.Create(ns("kept"))
    for space in ("doomed", "kept"):
        await client.pods.Create(make_pod("p1", namespace=space))
        cm = config_pb2.ConfigMap(metadata=meta_pb2.ObjectMeta(namespace=space, name="settings"))
        cm.data["a"] = "1"
        await client.configmaps.Create(cm)
    rs = workload_pb2.ReplicaSet(metadata=meta_pb2.ObjectMeta(namespace="doomed", name="rs"))
    rs.spec.replicas = 2
    rs.spec.template.metadata.labels["app"] = "rs"
    rs.spec.template.spec.containers.add(name="main", image="cowpod/busybox:latest")
    await client.replicasets.Create(rs)

    gone = await client.namespaces.Delete(meta_pb2.DeleteOptions(key=key("doomed")))
    assert gone.status.phase == "Terminating" and gone.metadata.HasField("deletion_timestamp")
    err = await error_of(client.pods.Create(make_pod("late", namespace="doomed")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "being terminated" in (err.details() or "")

    async def namespace_gone() -> bool:
        return await code_of(client.namespaces.Get(key("doomed"))) == grpc.StatusCode.NOT_FOUND

    await eventually(namespace_gone, what="namespace doomed removed", timeout=20.0)
    for what in (client.pods, client.configmaps, client.replicasets):
        assert list((await what.List(meta_pb2.ListOptions(namespace="doomed"))).items) == []
    # The other namespace is untouched.
    assert [
        p.metadata.name for p in (await client.pods.List(meta_pb2.ListOptions(namespace="kept"))).items
    ] == ["p1"]
    await client.configmaps.Get(key("settings", "kept"))


async def test_configmap_rules(client: Client) -> None:
    cm = config_pb2.ConfigMap(metadata=meta_pb2.ObjectMeta(namespace="default", name="game"))
    cm.data["game.properties"] = "lives=3\n"
    cm.binary_data["logo.png"] = b"\x89PNG"
    out = await client.configmaps.Create(cm)
    assert out.kind == "ConfigMap" and out.data["game.properties"] == "lives=3\n"

    bad = config_pb2.ConfigMap(metadata=meta_pb2.ObjectMeta(namespace="default", name="bad"))
    bad.data["../etc"] = "x"
    bad.data["ok"] = "1"
    bad.binary_data["ok"] = b"1"
    err = await error_of(client.configmaps.Create(bad))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").startswith("data[../etc]: invalid key")
    assert "binaryData[ok]: duplicate of a key in data" in (err.details() or "")

    out.data["game.properties"] = "lives=5\n"
    out.immutable = True
    upd = await client.configmaps.Update(out)
    assert upd.data["game.properties"] == "lives=5\n" and upd.immutable
    upd.data["game.properties"] = "lives=9\n"
    err = await error_of(client.configmaps.Update(upd))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "immutable" in (err.details() or "")
    upd = await client.configmaps.Get(key("game", "default"))
    upd.metadata.labels["tier"] = "games"
    assert (await client.configmaps.Update(upd)).metadata.labels["tier"] == "games"


async def test_secret_rules(client: Client) -> None:
    s = config_pb2.Secret(metadata=meta_pb2.ObjectMeta(namespace="default", name="db"))
    s.data["username"] = b"admin"
    s.string_data["password"] = "s3cr3t"
    s.string_data["username"] = "root"  # stringData wins over data, as in Kubernetes
    out = await client.secrets.Create(s)
    assert dict(out.data) == {"username": b"root", "password": b"s3cr3t"}
    assert not out.string_data and out.type == "Opaque"
    stored = await client.secrets.Get(key("db", "default"))
    assert not stored.string_data and stored.data["password"] == b"s3cr3t"

    stored.type = "kubernetes.io/tls"
    err = await error_of(client.secrets.Update(stored))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and (err.details() or "").startswith(
        "type: field is immutable"
    )

    tls = config_pb2.Secret(metadata=meta_pb2.ObjectMeta(namespace="default", name="tls"),
                            type="kubernetes.io/tls")
    tls.data["tls.crt"] = b"cert"
    err = await error_of(client.secrets.Create(tls))
    assert (err.details() or "").startswith(
        "data[tls.key]: required for a Secret of type 'kubernetes.io/tls'"
    )


@pytest.fixture
async def admin(secure_controller: ControllerRunner) -> AsyncIterator[Client]:
    async with secure_controller.client("admin") as c:
        yield c


async def test_view_cannot_read_secrets_and_a_node_reads_only_what_its_pods_use(
    secure_controller: ControllerRunner, admin: Client, tmp_path: pathlib.Path
) -> None:
    for name in ("used", "other"):
        s = config_pb2.Secret(metadata=meta_pb2.ObjectMeta(namespace="default", name=name))
        s.string_data["k"] = "v"
        await admin.secrets.Create(s)
        cm = config_pb2.ConfigMap(metadata=meta_pb2.ObjectMeta(namespace="default", name=name))
        await admin.configmaps.Create(cm)
    view = await new_token(admin, "view")
    edit = await new_token(admin, "edit")
    async with secure_controller.client("transport", token=view) as viewer, \
            secure_controller.client("transport", token=edit) as editor:
        assert await code_of(viewer.secrets.Get(key("used", "default"))) == grpc.StatusCode.PERMISSION_DENIED
        assert await code_of(viewer.secrets.List(meta_pb2.ListOptions())) == grpc.StatusCode.PERMISSION_DENIED
        await viewer.configmaps.Get(key("used", "default"))
        assert (await editor.secrets.Get(key("used", "default"))).data["k"] == b"v"
        assert await code_of(editor.namespaces.Create(ns("mine"))) == grpc.StatusCode.PERMISSION_DENIED

    pod = make_pod("app")
    c = pod.spec.containers[0]
    c.env.add(name="K").value_from.secret_key_ref.CopyFrom(pod_pb2.SecretKeySelector(name="used", key="k"))
    pod.spec.volumes.add(name="cfg").config_map.name = "used"
    await admin.pods.Create(pod)
    async with await join_node(secure_controller, admin, "n1", tmp_path) as n1:
        reg = node_pb2.Node(metadata=meta_pb2.ObjectMeta(name="n1"))
        await n1.nodes.Register(reg)
        # Not bound yet: nothing to read.
        assert await code_of(n1.secrets.Get(key("used", "default"))) == grpc.StatusCode.PERMISSION_DENIED
        async with secure_controller.client("scheduler") as sched:
            await sched.pods.Bind(pod_pb2.Binding(pod=key("app", "default"), node_name="n1"))
        assert (await n1.secrets.Get(key("used", "default"))).data["k"] == b"v"
        await n1.configmaps.Get(key("used", "default"))
        assert await code_of(n1.secrets.Get(key("other", "default"))) == grpc.StatusCode.PERMISSION_DENIED
        assert await code_of(n1.configmaps.Get(key("other", "default"))) == grpc.StatusCode.PERMISSION_DENIED
        assert await code_of(n1.secrets.List(meta_pb2.ListOptions())) == grpc.StatusCode.PERMISSION_DENIED


async def test_a_namespace_of_objects_stored_before_namespaces_is_adopted(
    controller: ControllerRunner, client: Client
) -> None:
    # A pod written as an older controller wrote it: no Namespace object for "legacy".
    assert controller.controller is not None
    old = make_pod("old", namespace="legacy")
    old.metadata.uid = "old-uid"
    await controller.controller.store.create("registry/pods/legacy/old", old)
    await client.pods.Create(make_pod("new", namespace="legacy"))
    adopted = await client.namespaces.Get(key("legacy"))
    assert adopted.status.phase == "Active" and adopted.metadata.annotations["cowpod.io/adopted"] == "true"
    # An empty namespace is not adopted: a typo stays an error.
    typo = await code_of(client.pods.Create(make_pod("x", namespace="legacy-typo")))
    assert typo == grpc.StatusCode.NOT_FOUND
