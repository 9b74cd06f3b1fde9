"""The agent's walking skeleton on real Docker and a real controller: a pod
bound by hand runs, reports Running, serves logs and exec, and is deleted."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from agent.testing import (
    AgentRunner,
    cleanup_docker,
    create_and_bind,
    ensure_images,
    gone,
    make_pod,
    phase_is,
    wait_pod,
)
from cowpod.client import Client
from cowpod.v1 import agent_pb2_grpc, meta_pb2, pod_pb2

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def images() -> None:
    ensure_images()


@pytest.fixture
async def node(controller, images) -> AsyncIterator[AgentRunner]:  # type: ignore[no-untyped-def]
    name = f"agent-{uuid.uuid4().hex[:8]}"
    cleanup_docker(name)
    runner = AgentRunner(controller.address, name, listen="127.0.0.1:0")
    try:
        await runner.start()
        yield runner
    finally:
        await runner.stop()
        cleanup_docker(name)


async def test_pod_runs_logs_exec_delete(node: AgentRunner, client: Client) -> None:
    pod = make_pod("hello", ("main", "echo hello from cowpod; sleep 1000"))
    await create_and_bind(client, pod, node.config.node_name)
    running = await wait_pod(client, "hello", phase_is("Running"))
    (cs,) = running.status.container_statuses
    assert cs.state.HasField("running") and cs.container_id.startswith("docker://")
    assert running.status.pod_ip

    async with grpc.aio.insecure_channel(node.address) as ch:
        stub = agent_pb2_grpc.AgentServiceStub(ch)
        key = meta_pb2.ObjectKey(namespace="default", name="hello")
        chunks = [c.data async for c in stub.Logs(pod_pb2.LogsRequest(pod=key))]
        assert b"hello from cowpod" in b"".join(chunks)
        res = await stub.Exec(pod_pb2.ExecRequest(pod=key, command=["sh", "-c", "echo out; exit 7"]))
        assert res.exit_code == 7 and res.stdout == b"out\n"
        piped = await stub.Exec(pod_pb2.ExecRequest(pod=key, command=["cat"], stdin=b"through stdin"))
        assert (piped.exit_code, piped.stdout) == (0, b"through stdin")

    await client.pods.Delete(
        meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(namespace="default", name="hello"))
    )
    await wait_pod(client, "hello", gone, timeout=30)
