"""`cowpod up --etcd-members 3` through the supervisor: three local members, the controller
given every endpoint, one member killed, the cluster still answers; `status` shows every
member and `down` stops them all."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from cowpod.auth.credentials import connect
from cowpod.clock import RealClock
from cowpod.local import process
from cowpod.local.etcd import free_port
from cowpod.local.state import connection_for
from cowpod.local.supervisor import Layout, Supervisor, UpOptions, etcd_components
from cowpod.v1 import node_pb2, pod_pb2

pytestmark = pytest.mark.integration


def cowpod_cli(data_dir: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = pathlib.Path(sys.executable).parent / "cowpod"
    env = {**os.environ, "COWPOD_DATA_DIR": str(data_dir), "COWPOD_CONFIG": str(data_dir / "config")}
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=60)


def a_pod(name: str) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    c = p.spec.containers.add()
    c.name = "main"
    c.image = "cowpod/busybox:latest"
    return p


async def test_three_local_members_survive_losing_one(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "d"
    said: list[str] = []
    env = {**os.environ, "COWPOD_CONFIG": str(data / "config")}
    sup = Supervisor(Layout(data), RealClock(), say=said.append, progress=lambda _: None,
                     progress_done=lambda: None, env=env)
    opts = UpOptions(listen=f"127.0.0.1:{free_port()}", provider="none", detach=True, secure=False,
                     etcd_members=3)
    state = await sup.up(opts)
    try:
        members = etcd_components(state)
        assert [m.name for m in members] == ["etcd-0", "etcd-1", "etcd-2"]
        assert state.etcd == ",".join(m.address for m in members)
        ctl = state.component("controller")
        assert ctl is not None and state.etcd in ctl.command

        status = cowpod_cli(data, "status", "-o", "json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["etcd"] == state.etcd and report["healthy"] is True
        assert {c["name"] for c in report["components"]} >= {"etcd-0", "etcd-1", "etcd-2", "controller"}

        os.kill(members[0].pid, signal.SIGKILL)  # one member (possibly the leader) dies
        async with connect(connection_for(state), clock=RealClock()) as client:
            # Writes continue on the other two (the client retries the blip of an election).
            created = await client.create(client.pods.Create, client.pods.Get, a_pod("after-the-loss"))
            assert created.metadata.uid
            node = node_pb2.Node()
            node.metadata.name = "n-after"
            await client.call(client.nodes.Register, node, attempts=10)
        nodes = cowpod_cli(data, "get", "nodes")
        assert nodes.returncode == 0 and "n-after" in nodes.stdout, nodes.stderr
        pods = cowpod_cli(data, "get", "pods")
        assert "after-the-loss" in pods.stdout, pods.stderr

        text = cowpod_cli(data, "status")
        assert f"etcd: {state.etcd}" in text.stdout
        assert text.returncode == 1 and "etcd-0" in text.stderr  # the dead member is reported
    finally:
        assert await sup.down(purge=False)
    for m in etcd_components(state):
        assert not process.is_ours(m.pid, m.command)
