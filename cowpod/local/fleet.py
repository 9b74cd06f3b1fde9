"""The VMs of a local cluster, through the controller's VMService: create the first
ones for `up --vms N`, wait until their nodes are Ready, destroy them all on `down`.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from cowpod.cli.readiness import vm_readiness
from cowpod.client import Client
from cowpod.clock import Clock
from cowpod.v1 import meta_pb2, node_pb2, vm_pb2

Report = Callable[[str], None]


class FleetError(Exception):
    pass


def vm_names(count: int) -> list[str]:
    return [f"vm-{i}" for i in range(1, count + 1)]


def vm_object(name: str, *, cpu_millis: int, memory_bytes: int, provider: str, image: str = "") -> vm_pb2.VM:
    return vm_pb2.VM(
        api_version="cowpod.io/v1",
        kind="VM",
        metadata=meta_pb2.ObjectMeta(name=name),
        spec=vm_pb2.VMSpec(
            class_name="default",
            cpu_millis=cpu_millis,
            memory_bytes=memory_bytes,
            provider=provider,
            image=image,
        ),
    )


async def create_vms(client: Client, vms: list[vm_pb2.VM]) -> None:
    """Create each VM; one that already exists (a restarted cluster) is kept as it is."""
    for vm in vms:
        try:
            await client.call(client.vms.Create, vm, attempts=5)
        except grpc.RpcError as e:
            if isinstance(e, grpc.aio.AioRpcError) and e.code() == grpc.StatusCode.ALREADY_EXISTS:
                continue
            raise


async def wait_vms_ready(
    client: Client, names: list[str], clock: Clock, *, timeout: float, report: Report, hint: str
) -> None:
    deadline = clock.monotonic() + timeout
    status: dict[str, str] = {}
    while True:
        vms = {v.metadata.name: v for v in (await client.call(client.vms.List, meta_pb2.ListOptions())).items}
        nodes: dict[str, node_pb2.Node] = {
            n.metadata.name: n for n in (await client.call(client.nodes.List, meta_pb2.ListOptions())).items
        }
        done = True
        for name in names:
            vm = vms.get(name)
            if vm is None:
                status[name] = "not created"
                done = False
                continue
            r = vm_readiness(vm, nodes.get(vm.status.node_name))
            if r.failure:
                raise FleetError(f"{r.failure}; {hint}")
            status[name] = r.status
            done = done and r.done
        if done:
            return
        waiting = ", ".join(f"{n} {s}" for n, s in status.items())
        report(f"waiting for {len(names)} VM(s): {waiting}")
        if clock.monotonic() >= deadline:
            raise FleetError(
                f"timed out after {timeout:g}s waiting for VM nodes to be Ready ({waiting}); {hint}"
            )
        await clock.sleep(0.5)


async def destroy_all_vms(client: Client, clock: Clock, *, timeout: float, report: Report) -> list[str]:
    """Destroy every VM (with its clones and pods) and wait until none is left."""
    vms = (await client.call(client.vms.List, meta_pb2.ListOptions(), attempts=3)).items
    names = [v.metadata.name for v in vms]
    for name in names:
        try:
            await client.vms.Destroy(
                meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name=name), cascade=True), timeout=30
            )
        except grpc.RpcError as e:
            if isinstance(e, grpc.aio.AioRpcError) and e.code() == grpc.StatusCode.NOT_FOUND:
                continue
            raise
    deadline = clock.monotonic() + timeout
    while True:
        left = (await client.call(client.vms.List, meta_pb2.ListOptions(), attempts=3)).items
        if not left:
            return names
        report(
            f"destroying {len(left)} VM(s): " + ", ".join(f"{v.metadata.name} {v.status.phase}" for v in left)
        )
        if clock.monotonic() >= deadline:
            raise FleetError(
                f"timed out after {timeout:g}s waiting for VMs to be destroyed: "
                + ", ".join(v.metadata.name for v in left)
            )
        await clock.sleep(0.5)
