"""The VMs of a local cluster, through the controller's VMService: create the first
ones for `up --vms N`, wait until their nodes are Ready, destroy them all on `down`.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from cowpod.cli.readiness import vm_readiness
from cowpod.client import Client
from cowpod.clock import Clock
from cowpod.leases import AUTOSCALER_LEASE_NAME, SYSTEM_NAMESPACE
from cowpod.v1 import lease_pb2, meta_pb2, node_pb2, vm_pb2

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


# The autoscaler acts only while it holds this lease (controller/autoscaler/leader.py).
AUTOSCALER_LEASE = meta_pb2.ObjectKey(namespace=SYSTEM_NAMESPACE, name=AUTOSCALER_LEASE_NAME)
FENCE_HOLDER = "cowpod-down"


async def fence_autoscaler(client: Client, *, hold_seconds: int = 3600) -> None:
    """Take the autoscaler's leader lease, so it stops cloning VMs (and
    replacing warm parents) while `down` destroys them. Compare-and-swap, as
    any candidate would; the autoscaler sees a fresh foreign holder and stands
    down at its next renewal."""
    spec = lease_pb2.LeaseSpec(holder_identity=FENCE_HOLDER, lease_duration_seconds=hold_seconds)
    spec.renew_time.GetCurrentTime()
    for _ in range(5):
        try:
            lease = await client.leases.Get(AUTOSCALER_LEASE, timeout=10)
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
            meta = meta_pb2.ObjectMeta(namespace=AUTOSCALER_LEASE.namespace, name=AUTOSCALER_LEASE.name)
            fresh = lease_pb2.Lease(metadata=meta, spec=spec)
            try:
                await client.leases.Create(fresh, timeout=10)
                return
            except grpc.aio.AioRpcError as e2:
                if e2.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
                continue
        lease.spec.CopyFrom(spec)
        try:
            await client.leases.Update(lease, timeout=10)
            return
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.ABORTED:
                raise
    raise FleetError("could not take the autoscaler's lease: it kept changing")


async def destroy_all_vms(client: Client, clock: Clock, *, timeout: float, report: Report) -> list[str]:
    """Destroy every VM (with its clones and pods) and wait until none is left,
    including VMs that appear meanwhile (a clone already in flight)."""
    await fence_autoscaler(client)
    deadline = clock.monotonic() + timeout
    names: list[str] = []
    while True:
        left = (await client.call(client.vms.List, meta_pb2.ListOptions(), attempts=3)).items
        if not left:
            return names
        for vm in left:
            if vm.metadata.HasField("deletion_timestamp"):
                continue
            try:
                await client.vms.Destroy(
                    meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name=vm.metadata.name), cascade=True),
                    timeout=30,
                )
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            if vm.metadata.name not in names:
                names.append(vm.metadata.name)
        report(
            f"destroying {len(left)} VM(s): " + ", ".join(f"{v.metadata.name} {v.status.phase}" for v in left)
        )
        if clock.monotonic() >= deadline:
            raise FleetError(
                f"timed out after {timeout:g}s waiting for VMs to be destroyed: "
                + ", ".join(v.metadata.name for v in left)
            )
        await clock.sleep(0.5)
