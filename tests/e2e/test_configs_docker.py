"""ConfigMaps, Secrets and Namespaces on the real Docker engine (#14), with a real agent and
controller on etcd: env from configMapKeyRef/secretKeyRef/envFrom, configMap and secret volume
files inside the container, a ConfigMap updated while the pod runs reaching its files (env kept),
a pod waiting in CreateContainerConfigError until its ConfigMap exists, and a namespace delete
that stops and removes its pods."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import docker
import grpc
import pytest

from agent import labels as L
from agent.testing import (
    BUSYBOX,
    AgentRunner,
    cleanup_docker,
    create_and_bind,
    ensure_images,
    make_pod,
    phase_is,
    wait_pod,
)
from cowpod.client import Client
from cowpod.v1 import config_pb2, meta_pb2, namespace_pb2, pod_pb2
from tests.polling import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture
async def node(controller: Any, tmp_path: pathlib.Path) -> AsyncIterator[AgentRunner]:
    ensure_images()
    name = f"agent-{uuid.uuid4().hex[:8]}"
    cleanup_docker(name)
    runner = AgentRunner(controller.address, name, listen=f"unix://{tmp_path}/agent.sock")
    try:
        await runner.start()
        yield runner
    finally:
        await runner.stop()
        cleanup_docker(name)


async def run(client: Client, pod: str, script: str, namespace: str = "default") -> str:
    """`sh -c script` in the pod's container (busybox's applets through its shell)."""
    resp = await client.pods.Exec(pod_pb2.ExecRequest(
        pod=meta_pb2.ObjectKey(namespace=namespace, name=pod), container="app",
        command=["/bin/sh", "-c", script]))
    assert resp.exit_code == 0, (script, resp.stdout, resp.stderr)
    return str(resp.stdout.decode())


def app(script: str = "sleep 3600") -> pod_pb2.Container:
    return pod_pb2.Container(name="app", image=BUSYBOX, command=["/bin/sh", "-c", script],
                             image_pull_policy="IfNotPresent")


def waiting_reason(p: Any) -> str:
    for cs in p.status.container_statuses if p is not None else ():
        if cs.state.HasField("waiting"):
            return str(cs.state.waiting.reason)
    return ""


async def test_env_and_volumes_from_configmap_and_secret_follow_updates(
    node: AgentRunner, client: Client
) -> None:
    cm = config_pb2.ConfigMap(metadata=meta_pb2.ObjectMeta(namespace="default", name="game"))
    cm.data.update({"lives": "3", "game.properties": "enemies=aliens\n"})
    await client.configmaps.Create(cm)
    secret = config_pb2.Secret(metadata=meta_pb2.ObjectMeta(namespace="default", name="db"))
    secret.data["password"] = b"s3cr3t"
    await client.secrets.Create(secret)

    c = app()
    c.env.add(name="LIVES").value_from.config_map_key_ref.CopyFrom(
        pod_pb2.ConfigMapKeySelector(name="game", key="lives"))
    c.env.add(name="DB_PASSWORD").value_from.secret_key_ref.CopyFrom(
        pod_pb2.SecretKeySelector(name="db", key="password"))
    c.env_from.add(prefix="CFG_").config_map_ref.name = "game"
    c.volume_mounts.add(name="cfg", mount_path="/etc/game")
    c.volume_mounts.add(name="sec", mount_path="/etc/db")
    cfg = pod_pb2.Volume(name="cfg")
    cfg.config_map.name = "game"
    sec = pod_pb2.Volume(name="sec")
    sec.secret.secret_name = "db"
    sec.secret.default_mode = 0o400
    await create_and_bind(client, make_pod("cfg-demo", c, volumes=[cfg, sec]), node.config.node_name)
    await wait_pod(client, "cfg-demo", phase_is("Running"), timeout=90)

    assert (await run(client, "cfg-demo", "echo $LIVES")).strip() == "3"
    assert (await run(client, "cfg-demo", "echo $DB_PASSWORD")).strip() == "s3cr3t"
    assert (await run(client, "cfg-demo", "echo $CFG_lives")).strip() == "3"
    assert await run(client, "cfg-demo", "cat /etc/game/lives") == "3"
    assert await run(client, "cfg-demo", "cat /etc/game/game.properties") == "enemies=aliens\n"
    assert await run(client, "cfg-demo", "cat /etc/db/password") == "s3cr3t"
    assert (await run(client, "cfg-demo", "stat -L -c %a /etc/db/password")).strip() == "400"
    assert (await run(client, "cfg-demo", "readlink /etc/game/lives")).strip() == "..data/lives"
    # Read-only, as on Kubernetes.
    resp = await client.pods.Exec(pod_pb2.ExecRequest(
        pod=meta_pb2.ObjectKey(namespace="default", name="cfg-demo"), container="app",
        command=["/bin/sh", "-c", "touch /etc/game/x"]))
    assert resp.exit_code == 1 and b"Read-only file system" in resp.stdout + resp.stderr, resp

    # Updated while the pod runs: the file changes (atomically, through ..data), env does not.
    current = await client.configmaps.Get(meta_pb2.ObjectKey(namespace="default", name="game"))
    current.data["lives"] = "5"
    current.data["new-key"] = "hello"
    await client.configmaps.Update(current)

    async def updated() -> bool:
        return await run(client, "cfg-demo", "cat /etc/game/lives") == "5"

    await eventually(
        updated, what="the new ConfigMap value in the running pod's file", timeout=60.0, interval=0.3
    )
    assert await run(client, "cfg-demo", "cat /etc/game/new-key") == "hello"
    assert (await run(client, "cfg-demo", "echo $LIVES")).strip() == "3"
    versions = (await run(client, "cfg-demo", "ls -a /etc/game")).split()
    assert len([v for v in versions if v.startswith("..2")]) == 1, versions  # the old version is gone


async def test_pod_waits_for_a_missing_configmap_then_starts(node: AgentRunner, client: Client) -> None:
    c = app()
    c.env.add(name="MODE").value_from.config_map_key_ref.CopyFrom(
        pod_pb2.ConfigMapKeySelector(name="late", key="mode"))
    await create_and_bind(client, make_pod("waits", c), node.config.node_name)
    pod = await wait_pod(client, "waits", lambda p: waiting_reason(p) == "CreateContainerConfigError",
                         timeout=60)
    assert pod.status.phase == "Pending"
    late = config_pb2.ConfigMap(metadata=meta_pb2.ObjectMeta(namespace="default", name="late"))
    late.data["mode"] = "fast"
    await client.configmaps.Create(late)
    await wait_pod(client, "waits", phase_is("Running"), timeout=60)
    assert (await run(client, "waits", "echo $MODE")).strip() == "fast"


async def test_namespace_delete_stops_and_removes_its_pods(node: AgentRunner, client: Client) -> None:
    ns = f"team-{uuid.uuid4().hex[:6]}"
    await client.namespaces.Create(namespace_pb2.Namespace(metadata=meta_pb2.ObjectMeta(name=ns)))
    created = [await create_and_bind(client, make_pod(f"p{i}", app(), namespace=ns), node.config.node_name)
               for i in range(2)]
    for i in range(2):
        await wait_pod(client, f"p{i}", phase_is("Running"), namespace=ns, timeout=90)
    await client.namespaces.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name=ns)))

    async def namespace_gone() -> bool:
        try:
            await client.namespaces.Get(meta_pb2.ObjectKey(name=ns))
        except grpc.aio.AioRpcError as err:
            return err.code() == grpc.StatusCode.NOT_FOUND
        return False

    await eventually(namespace_gone, what=f"namespace {ns} removed", timeout=90, interval=0.3)
    assert list((await client.pods.List(meta_pb2.ListOptions(namespace=ns))).items) == []
    engine = docker.from_env()
    try:
        for p in created:
            left = engine.containers.list(all=True, filters={"label": f"{L.POD_UID}={p.metadata.uid}"})
            assert left == [], f"containers of {p.metadata.name} still there"
    finally:
        engine.close()
