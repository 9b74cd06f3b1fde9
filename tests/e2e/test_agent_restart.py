"""Restart safety: the agent runs as a real process, is killed with SIGKILL
and started again. Healthy containers keep their IDs, start times,
restartCount and readiness; containers of a pod deleted while the agent was
down are garbage-collected."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from agent.testing import PAUSE, cleanup_docker, create_and_bind, ensure_images, gone, make_pod, wait_pod
from cowpod.client import Client
from cowpod.v1 import meta_pb2, pod_pb2
from tests.polling import eventually

pytestmark = pytest.mark.e2e

READY_LINE = "initial reconcile done"


class AgentProcess:
    def __init__(self, controller: str, node: str, log: pathlib.Path) -> None:
        self.argv = [
            sys.executable, "-m", "agent.main",
            "--controller", controller,
            "--node-name", node,
            "--pause-image", PAUSE,
            "--no-pull",
            "--insecure",
            "--docker-label", "cowpod.test=1",
            "--heartbeat-seconds", "2",
            "--resync-seconds", "2",
            "--backoff-initial", "1",
            "--backoff-max", "4",
        ]  # fmt: skip
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.write_text("")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL)

    async def wait_ready(self, timeout: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while READY_LINE not in self.log.read_text():
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            if loop.time() > deadline:
                raise TimeoutError(f"agent not ready:\n{self.log.read_text()}")
            await asyncio.sleep(0.1)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def containers_of(uid: str) -> dict[str, tuple[str, str]]:
    """container id -> (status, StartedAt) of every container of a pod."""
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--no-trunc", "--filter", f"label=cowpod.pod.uid={uid}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    out: dict[str, tuple[str, str]] = {}
    for i in ids:
        got = subprocess.run(["docker", "inspect", i], capture_output=True, text=True)
        if got.returncode != 0 and "No such" in got.stderr:
            continue  # removed between the listing and the inspect (the agent's GC at work)
        got.check_returncode()
        info: Any = json.loads(got.stdout)[0]
        out[i] = (info["State"]["Status"], info["State"]["StartedAt"])
    return out


@pytest.fixture
def node_name() -> Iterator[str]:
    name = f"agent-{uuid.uuid4().hex[:8]}"
    cleanup_docker(name)
    yield name
    cleanup_docker(name)


@pytest.fixture
async def agent_proc(controller: Any, node_name: str, tmp_path: pathlib.Path) -> AsyncIterator[AgentProcess]:
    await asyncio.to_thread(ensure_images)
    p = AgentProcess(controller.address, node_name, tmp_path / "agent.log")
    try:
        yield p
    finally:
        p.kill9()


def ready(p: pod_pb2.Pod | None) -> bool:
    return p is not None and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)


async def test_kill_9_and_restart_keeps_healthy_containers(
    agent_proc: AgentProcess, client: Client, node_name: str
) -> None:
    agent_proc.start()
    await agent_proc.wait_ready()

    steady = make_pod("steady", ("app", "sleep 1000"))
    probe = steady.spec.containers[0].readiness_probe
    probe.exec.command.extend(["true"])
    probe.period_seconds = 1
    steady_uid = (await create_and_bind(client, steady, node_name)).metadata.uid
    orphan_uid = (
        await create_and_bind(client, make_pod("orphan", ("app", "sleep 1000")), node_name)
    ).metadata.uid
    before = await wait_pod(client, "steady", ready)
    await wait_pod(client, "orphan", lambda p: p is not None and p.status.phase == "Running")
    steady_containers = await asyncio.to_thread(containers_of, steady_uid)
    assert len(steady_containers) == 2 and all(s == "running" for s, _ in steady_containers.values())

    agent_proc.kill9()
    # While no agent runs: the orphan's pod object is removed outright.
    await client.pods.Delete(
        meta_pb2.DeleteOptions(
            key=meta_pb2.ObjectKey(namespace="default", name="orphan"), grace_period_seconds=0
        )
    )
    await wait_pod(client, "orphan", gone)
    assert await asyncio.to_thread(containers_of, orphan_uid)  # still there: nobody cleaned up yet

    agent_proc.start()
    await agent_proc.wait_ready()
    await eventually(
        lambda: asyncio.to_thread(lambda: not containers_of(orphan_uid)),
        timeout=60,
        what="the orphan pod's containers removed by the restarted agent",
    )

    assert await asyncio.to_thread(containers_of, steady_uid) == steady_containers
    after = await client.pods.Get(meta_pb2.ObjectKey(namespace="default", name="steady"))
    (cs_before,) = before.status.container_statuses
    (cs_after,) = after.status.container_statuses
    assert cs_after.container_id == cs_before.container_id
    assert cs_after.restart_count == cs_before.restart_count == 0
    assert ready(after)

    # The new agent is fully in charge: it still stops and finalizes pods.
    await client.pods.Delete(
        meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(namespace="default", name="steady"))
    )
    await wait_pod(client, "steady", gone, timeout=30)
    assert await asyncio.to_thread(containers_of, steady_uid) == {}
