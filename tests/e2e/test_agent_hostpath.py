"""Hole 4 of #15 on the real Docker engine: hostPath as the Pod Security Standards'
baseline has it. Only under the prefixes a node's admin allows, read-only unless the
prefix is :rw, and never through a symbolic link — one pod plants a link to the
Docker socket in a writable shared directory, another asks for it."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent.hostpath import HostPathPrefix
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
from cowpod.v1 import pod_pb2

pytestmark = pytest.mark.e2e


def sh(name: str, script: str, *mounts: tuple[str, str]) -> pod_pb2.Container:
    c = pod_pb2.Container(name=name, image=BUSYBOX, command=["/bin/sh", "-c", script],
                          image_pull_policy="IfNotPresent")
    for vol, at in mounts:
        c.volume_mounts.add(name=vol, mount_path=at)
    return c


def host(name: str, path: pathlib.Path | str) -> pod_pb2.Volume:
    return pod_pb2.Volume(name=name, host_path=pod_pb2.HostPathVolumeSource(path=str(path)))


def waiting(pod: Any) -> tuple[str, str]:
    for cs in pod.status.container_statuses if pod is not None else ():
        if cs.state.HasField("waiting"):
            return cs.state.waiting.reason, cs.state.waiting.message
    return "", ""


@pytest.fixture
async def node(controller: Any, tmp_path: pathlib.Path) -> AsyncIterator[AgentRunner]:
    ensure_images()
    (tmp_path / "shared").mkdir()
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "data").write_text("kept\n")
    name = f"agent-{uuid.uuid4().hex[:8]}"
    cleanup_docker(name)
    runner = AgentRunner(
        controller.address, name, listen=f"unix://{tmp_path}/agent.sock",
        host_path_prefixes=(HostPathPrefix(str(tmp_path / "shared"), writable=True),
                            HostPathPrefix(str(tmp_path / "ro"))),
    )
    try:
        await runner.start()
        yield runner
    finally:
        await runner.stop()
        cleanup_docker(name)


async def test_host_path_prefixes_read_only_and_no_links(
    node: AgentRunner, client: Client, tmp_path: pathlib.Path
) -> None:
    shared, ro = tmp_path / "shared", tmp_path / "ro"
    me = node.config.node_name
    # A pod with the writable prefix plants links: to the engine's socket, and to /etc.
    plant = "ln -s /var/run/docker.sock /s/sock && ln -s /etc /s/etc && mkdir /s/ok"
    planter = sh("plant", plant, ("s", "/s"))
    await create_and_bind(client, make_pod("planter", planter, volumes=[host("s", shared)],
                                           restart_policy="Never"), me)
    await wait_pod(client, "planter", phase_is("Succeeded"), timeout=60)
    assert (shared / "sock").is_symlink() and (shared / "etc").is_symlink()

    # Another pod asks for the link, or for a path through it: refused before any container runs.
    for i, path in enumerate((shared / "sock", shared / "etc" / "cron.d")):
        thief = sh("steal", "ls -l /x; sleep 600", ("x", "/x"))
        await create_and_bind(client, make_pod(f"thief{i}", thief, volumes=[host("x", path)]), me)
        pod = await wait_pod(client, f"thief{i}", lambda p: waiting(p)[0] == "CreateContainerError",
                             timeout=60)
        message = waiting(pod)[1]
        assert "symbolic link" in message, message
        assert pod.status.phase == "Pending"

    # Outside every prefix (a path the old string checks let through): the node refuses the pod.
    outside = sh("out", "ls /x", ("x", "/x"))
    await create_and_bind(client, make_pod("outside", outside, volumes=[host("x", "/etc/cron.d")]), me)
    pod = await wait_pod(client, "outside", phase_is("Failed"), timeout=60)
    assert pod.status.reason == "HostPathNotAllowed", pod.status

    # A read-only prefix is mounted read-only even when the pod does not ask for it.
    writer = sh("w", "cat /r/data && if touch /r/new; then exit 1; fi", ("r", "/r"))
    await create_and_bind(client, make_pod("writer", writer, volumes=[host("r", ro)],
                                           restart_policy="Never"), me)
    await wait_pod(client, "writer", phase_is("Succeeded"), timeout=60)
    assert not (ro / "new").exists()

    # A plain directory under the writable prefix still works.
    fine = sh("fine", "echo hi > /o/hi", ("o", "/o"))
    await create_and_bind(client, make_pod("fine", fine, volumes=[host("o", shared / "ok")],
                                           restart_policy="Never"), me)
    await wait_pod(client, "fine", phase_is("Succeeded"), timeout=60)
    assert (shared / "ok" / "hi").read_text() == "hi\n"
