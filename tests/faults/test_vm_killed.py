"""A VM container is killed (docker provider, cowpod/vm:latest with the real agent inside).

Its node goes away (NotReady, then deleted by the VM manager, which marks the VM
Failed), the pods that ran nested in it are cleaned up (their containers removed,
their objects Failed with reason NodeLost, then deleted), and the ReplicaSet's
pods are replaced on the surviving VM.
"""

from __future__ import annotations

import contextlib
import pathlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from cowpod.v1 import meta_pb2, node_pb2, vm_pb2
from hypervisor.providers.docker.provider import vm_container_prefix
from tests.faults.cluster import ProcCluster, cli, eventually, get_pod, list_pods, run
from tests.faults.conftest import image_present
from tests.faults.test_agent_crash import active, replicaset

pytestmark = pytest.mark.faults

VM_IMAGE = "cowpod/vm:latest"


@pytest.fixture
def short_dir() -> Iterator[pathlib.Path]:
    """The data dir holds the controller's unix socket: keep its path short (sun_path)."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="cpf-", dir="/tmp"))
    (d / "run").mkdir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def docker_rm(*filters: str) -> None:
    flt = [a for f in filters for a in ("--filter", f)]
    ids = subprocess.run(["docker", "ps", "-aq", *flt], capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True)


async def test_killed_vm_loses_its_node_and_its_pods_are_replaced(
    make_cluster, short_dir, docker_images
) -> None:  # type: ignore[no-untyped-def]
    if not image_present(VM_IMAGE):
        pytest.fail(f"{VM_IMAGE} is missing: run deploy/build-images.sh")
    sock = str(short_dir / "run" / "controller.sock")
    cluster: ProcCluster = make_cluster(
        node_monitor_grace=40.0,
        pod_eviction_timeout=300.0,
        controller_args=["--provider", "docker", "--data-dir", str(short_dir), "--listen-unix", sock],
    )
    cluster.controller_env["COWPOD_CLUSTER_ID"] = f"faults-{cluster.run_id}"
    vms = [f"vk{i}-{cluster.run_id}" for i in (1, 2)]
    vm_prefix = vm_container_prefix(cluster.controller_env["COWPOD_CLUSTER_ID"])  # its VMs' container names
    cluster.start_etcd()
    cluster.start_controller()
    try:
        await cluster.wait_serving()
        cluster.start_scheduler()
        async with cluster.client() as c:
            for name in vms:
                await c.vms.Create(
                    vm_pb2.VM(
                        metadata=meta_pb2.ObjectMeta(name=name),
                        spec=vm_pb2.VMSpec(class_name="small", cpu_millis=600, memory_bytes=256 << 20),
                    )
                )

            async def nodes_ready() -> bool:
                ns = (await c.nodes.List(meta_pb2.ListOptions(), timeout=5)).items
                ready = {n.metadata.name for n in ns if _ready(n) == "True"}
                return set(vms) <= ready

            await eventually(nodes_ready, timeout=120, what="both VMs' nodes Ready", explain=cluster.describe)
            # 200m each: two fit on one VM, so the survivor can take the replacements.
            await c.replicasets.Create(replicaset("web", 2, 200))

            async def running(n: int) -> bool:
                pods = active(await list_pods(c, "app=web"))
                return len(pods) == n and all(p.status.phase == "Running" for p in pods)

            await eventually(lambda: running(2), timeout=90, what="2 pods Running", explain=cluster.describe)
            first = active(await list_pods(c, "app=web"))
            victim = first[0].spec.node_name
            survivor = next(v for v in vms if v != victim)
            lost = [p.metadata.name for p in first if p.spec.node_name == victim]
            nested = (
                await run("docker", "ps", "-q", "--filter", f"label=cowpod.node={victim}")
            ).stdout.split()
            assert nested, "the victim's pods should run as containers nested in its VM"

            assert (await run("docker", "kill", vm_prefix + victim)).returncode == 0

            async def node_lost() -> bool:
                try:
                    n = await c.nodes.Get(meta_pb2.ObjectKey(name=victim), timeout=5)
                except Exception as err:  # NOT_FOUND: the VM manager deleted it
                    return "NOT_FOUND" in str(err)
                return _ready(n) != "True"

            await eventually(
                node_lost, timeout=60, what="the victim's node NotReady or gone", explain=cluster.describe
            )

            async def cleaned() -> bool:
                left = (
                    await run("docker", "ps", "-aq", "--filter", f"label=cowpod.node={victim}")
                ).stdout.split()
                return not left and all([await get_pod(c, n) is None for n in lost])

            await eventually(
                cleaned, timeout=60, what="the victim's pods cleaned up", explain=cluster.describe
            )
            await eventually(
                lambda: running(2), timeout=90, what="replacements Running", explain=cluster.describe
            )
            assert all(p.spec.node_name == survivor for p in active(await list_pods(c, "app=web")))
            vm = await c.vms.Get(meta_pb2.ObjectKey(name=victim))
            assert vm.status.phase == "Failed"
            events = (await cli(cluster, "get", "events")).stdout
            assert "NodeLost" in events and "VMFailed" in events
            for name in vms:
                with contextlib.suppress(Exception):
                    await c.vms.Destroy(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name=name)), timeout=10)
    finally:
        cluster.teardown()
        # VMs first (their agents would start the pods again), then what nested in them.
        docker_rm(f"label=cowpod.cluster=faults-{cluster.run_id}")
        for name in vms:
            docker_rm(f"name={vm_prefix}{name}")
        for name in vms:
            docker_rm(f"label=cowpod.node={name}")


def _ready(n: node_pb2.Node) -> str:
    return next((x.status for x in n.status.conditions if x.type == "Ready"), "")
