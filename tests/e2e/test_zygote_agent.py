"""A zygote fork that becomes a real cowpod agent inside a VM container.

The VM is `cowpod/vm:latest` run the way the docker provider runs an instant
clone child: its init (`hypervisor.vminit`) holds the agent back
(COWPOD_AGENT_START=wait). A zygote preloaded with what the agent imports
forks `agent.main.run(argv)` into it; the agent reaches the controller through
the run dir mounted at /run/cowpod and registers its node.
"""

from __future__ import annotations

import asyncio
import pathlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator

import docker
import docker.errors
import grpc
import pytest
from docker.models.containers import Container

from cowpod.client import Client
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import meta_pb2, node_pb2
from hypervisor.providers.docker.zygote import DEFAULT_PRELOAD, ZygoteConfig
from hypervisor.providers.docker.zygote_client import ZygoteProcess
from hypervisor.providers.docker.zygote_warm import VM_SYS_PATH
from hypervisor.testing import smaps_rollup_kb
from tests.polling import eventually

pytestmark = pytest.mark.e2e

VM_IMAGE = "cowpod/vm:latest"


@pytest.fixture
def run_dir() -> Iterator[pathlib.Path]:
    # Short: unix socket paths must stay under 108 bytes.
    d = pathlib.Path(tempfile.mkdtemp(prefix="cz-", dir="/tmp"))
    (d / "run" / "agents").mkdir(parents=True)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def vm(run_dir: pathlib.Path) -> Iterator[Container]:
    dock = docker.from_env()
    try:
        dock.images.get(VM_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{VM_IMAGE} missing: run deploy/build-images.sh vm")
    name = f"cowpod-zyg-vm-{uuid.uuid4().hex[:6]}"
    c: Container = dock.containers.run(
        VM_IMAGE, detach=True, name=name, hostname=name,
        labels={"cowpod.test": "1", "cowpod.zygote-test": "1"},
        environment={"COWPOD_VM_NAME": name, "COWPOD_AGENT_START": "wait", "COWPOD_AGENT_ARGV": "[]"},
        mem_limit="512m", memswap_limit="512m",
        volumes={
            "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
            str(run_dir / "run"): {"bind": "/run/cowpod", "mode": "rw"},
        },
    )
    try:
        yield c
    finally:
        c.remove(force=True)
        # The agent labels what it creates with its node; it created nothing here, but be sure.
        for leftover in dock.containers.list(all=True, filters={"label": f"cowpod.node={name}"}):
            leftover.remove(force=True)
        dock.close()


@pytest.fixture
async def controller_unix(
    etcd: EtcdMember, etcd_prefix: str, run_dir: pathlib.Path
) -> AsyncIterator[str]:
    from controller.testing import ControllerRunner

    sock = str(run_dir / "run" / "controller.sock")
    runner = ControllerRunner(etcd.endpoint, etcd_prefix, listen_unix=sock)
    await runner.start()
    try:
        yield runner.address
    finally:
        await runner.stop()


async def ready_node(client: Client, name: str) -> node_pb2.Node:
    """Poll until the agent's node is registered and Ready."""

    async def ready() -> node_pb2.Node | None:
        try:
            node: node_pb2.Node = await client.nodes.Get(meta_pb2.ObjectKey(name=name))
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return None
        return node if any(c.type == "Ready" and c.status == "True" for c in node.status.conditions) else None

    return await eventually(ready, timeout=60, what=f"node {name} Ready")



async def test_forked_agent_registers_its_node(
    controller_unix: str, vm: Container, run_dir: pathlib.Path
) -> None:
    zp = ZygoteProcess(
        ZygoteConfig(
            socket_path=str(run_dir / "zygote.sock"),
            preload=(*DEFAULT_PRELOAD, "agent.main"),
            entrypoint="agent.main:run",
            charge_to=None,
        ),
        stderr_path=str(run_dir / "zygote.log"),
    )
    await zp.start()
    try:
        clone = await zp.client.fork_into(
            vm.name,
            ["--controller", "unix:///run/cowpod/controller.sock", "--node-name", vm.name,
             "--vm-container", vm.name, "--no-pull", "--heartbeat-seconds", "1", "--insecure"],
            {"COWPOD_WARM": "1"},
            sys_path=VM_SYS_PATH,
            name="cowpod-agent",
            log_path="/var/log/cowpod/agent.log",
        )
        async with Client(controller_unix) as client:
            node = await ready_node(client, vm.name)
        assert node.metadata.name == vm.name
        top = await asyncio.to_thread(vm.top)
        col = top["Titles"].index("PID")
        assert clone.pid in {int(row[col]) for row in top["Processes"]}
        assert (await zp.client.status(clone.pid)).state == "running"
        # A live agent with channels and tasks, still mostly the zygote's pages.
        sm = await asyncio.to_thread(smaps_rollup_kb, clone.pid)
        assert sm["Shared_Clean"] + sm["Shared_Dirty"] > sm["Private_Clean"] + sm["Private_Dirty"], sm
    except BaseException:
        logs = vm.exec_run(["cat", "/var/log/cowpod/agent.log"]).output.decode(errors="replace")
        print("agent log:\n" + logs[-4000:])
        print("zygote log:\n" + (run_dir / "zygote.log").read_text()[-2000:])
        raise
    finally:
        await zp.stop()
