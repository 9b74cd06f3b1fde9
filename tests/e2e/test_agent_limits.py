"""Hole 5 and the NET_RAW item of #15 on the real Docker engine: a fork bomb stays
inside its container's PID limit, and pods hold no NET_RAW (no raw or packet sockets,
so no ARP spoofing on the VM's shared bridge)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from agent.testing import (
    AgentRunner,
    cleanup_docker,
    create_and_bind,
    ensure_images,
    make_pod,
    phase_is,
    wait_pod,
)
from cowpod.client import Client
from cowpod.v1 import meta_pb2, pod_pb2
from tests.polling import eventually

pytestmark = pytest.mark.e2e

LIMIT = 64
_CG = "/sys/fs/cgroup/pids"  # cgroup v1; v2 has the files one level up
# The raw-socket check runs first: after the bomb, the killed sleeps stay zombies until the
# shell reaps them, and until then nothing in the container can fork.
BOMB = f"""
while read k v; do [ "$k" = CapEff: ] && echo "capeff=$v"; done < /proc/self/status
arping -c 1 -w 1 -I eth0 127.0.0.1 2>&1 | grep -q 'not permitted' && echo "raw sockets refused"
(n=0; while [ $n -lt {LIMIT * 3} ]; do sleep 300 & n=$((n+1)); done) 2>/dev/null
read cur < {_CG}/pids.current 2>/dev/null || read cur < /sys/fs/cgroup/pids.current
read max < {_CG}/pids.max 2>/dev/null || read max < /sys/fs/cgroup/pids.max
echo "pids current=$cur max=$max"
kill -9 -1
"""


async def until_nothing_runs(pod: Any, timeout: float = 60) -> None:
    """An evicted pod's containers are killed, not left running (polls the engine)."""
    flt = ["--filter", f"label=cowpod.pod.uid={pod.metadata.uid}", "--filter", "status=running"]

    async def nothing_runs() -> bool:
        out = await asyncio.to_thread(subprocess.run, ["docker", "ps", "-q", *flt],
                                      capture_output=True, text=True)
        return not out.stdout.split()

    await eventually(nothing_runs, timeout=timeout, interval=0.2,
                     what=f"no running container of pod {pod.metadata.name}")


@pytest.fixture
async def node(controller: Any, tmp_path: pathlib.Path) -> AsyncIterator[AgentRunner]:
    ensure_images()
    name = f"agent-{uuid.uuid4().hex[:8]}"
    cleanup_docker(name)
    runner = AgentRunner(controller.address, name, listen=f"unix://{tmp_path}/agent.sock", pids_limit=LIMIT)
    try:
        await runner.start()
        yield runner
    finally:
        await runner.stop()
        cleanup_docker(name)


async def test_fork_bomb_is_bounded_and_net_raw_is_dropped(node: AgentRunner, client: Client) -> None:
    pod = make_pod("bomb", ("bomb", BOMB), restart_policy="Never")
    await create_and_bind(client, pod, node.config.node_name)
    await wait_pod(client, "bomb", phase_is("Succeeded", "Failed"), timeout=120)
    req = pod_pb2.LogsRequest(pod=meta_pb2.ObjectKey(namespace="default", name="bomb"), container="bomb")
    out = b"".join([c.data async for c in client.pods.Logs(req)]).decode()
    assert f"max={LIMIT}" in out, out
    current = int(out.split("pids current=")[1].split()[0])
    assert LIMIT - 8 <= current <= LIMIT, out  # it filled its limit, and no more
    capeff = int(out.split("capeff=")[1].split()[0], 16)
    assert not capeff & (1 << 13), out  # CAP_NET_RAW
    assert "raw sockets refused" in out, out


async def test_disk_empty_dir_over_its_size_limit_is_evicted(node: AgentRunner, client: Client) -> None:
    """Docker's local volumes have no quota: a pod filled the host's disk through one."""
    c = pod_pb2.Container(name="fill", image="cowpod/busybox:latest", image_pull_policy="IfNotPresent",
                          command=["sh", "-c", "dd if=/dev/zero of=/scratch/big bs=1M count=4; sleep 600"])
    c.volume_mounts.add(name="scratch", mount_path="/scratch")
    vol = pod_pb2.Volume(name="scratch", empty_dir=pod_pb2.EmptyDirVolumeSource(size_limit_bytes=1 << 20))
    await create_and_bind(client, make_pod("filler", c, volumes=[vol]), node.config.node_name)
    pod = await wait_pod(client, "filler", phase_is("Failed"), timeout=120)
    assert pod.status.reason == "Evicted", pod.status
    assert 'EmptyDir volume "scratch" exceeds the limit' in pod.status.message
    await until_nothing_runs(pod)
    # Within the limit, nothing happens.
    ok = pod_pb2.Container(name="small", image="cowpod/busybox:latest", image_pull_policy="IfNotPresent",
                           command=["sh", "-c", "dd if=/dev/zero of=/scratch/f bs=1k count=100; sleep 600"])
    ok.volume_mounts.add(name="scratch", mount_path="/scratch")
    await create_and_bind(client, make_pod("small", ok, volumes=[vol]), node.config.node_name)
    await wait_pod(client, "small", phase_is("Running"), timeout=60)
    await node.agent.enforce_volume_limits()  # type: ignore[union-attr]
    still = await client.pods.Get(meta_pb2.ObjectKey(namespace="default", name="small"))
    assert still.status.phase == "Running"


async def test_container_over_its_ephemeral_storage_limit_is_evicted(
    node: AgentRunner, client: Client
) -> None:
    """The writable layer has no quota on overlay2: a container filled the host's disk there."""
    c = pod_pb2.Container(name="fill", image="cowpod/busybox:latest", image_pull_policy="IfNotPresent",
                          command=["sh", "-c", "dd if=/dev/zero of=/big bs=1M count=4; sleep 600"])
    c.resources.limits.ephemeral_storage_bytes = 1 << 20
    await create_and_bind(client, make_pod("layer", c), node.config.node_name)
    pod = await wait_pod(client, "layer", phase_is("Failed"), timeout=120)
    assert pod.status.reason == "Evicted", pod.status
    assert "exceeded its local ephemeral storage limit" in pod.status.message
    await until_nothing_runs(pod)


async def test_node_reports_its_engine_disk_and_disk_requests_that_do_not_fit_are_not_bound(
    node: AgentRunner, client: Client
) -> None:
    """The agent measures the disk of Docker's data root (visible here: the agent runs on the
    engine's host) as ephemeral-storage; a pod asking more than is left is refused at bind."""
    info = await asyncio.to_thread(subprocess.run, ["docker", "info", "-f", "{{.DockerRootDir}}"],
                                   capture_output=True, text=True, check=True)
    root = info.stdout.strip()
    st = os.statvfs(root)
    n = await client.nodes.Get(meta_pb2.ObjectKey(name=node.config.node_name))
    assert n.status.capacity.ephemeral_storage_bytes == st.f_blocks * st.f_frsize
    alloc = n.status.allocatable.ephemeral_storage_bytes
    assert 0 < alloc < n.status.capacity.ephemeral_storage_bytes
    c = pod_pb2.Container(name="c", image="cowpod/busybox:latest", image_pull_policy="IfNotPresent",
                          command=["sleep", "600"])
    c.resources.requests.ephemeral_storage_bytes = alloc + 1
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await create_and_bind(client, make_pod("hog", c), node.config.node_name)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "insufficient ephemeral-storage" in (e.value.details() or "")
