"""VMService."""

from __future__ import annotations

from collections.abc import AsyncIterator

from controller.metrics import Metrics
from controller.rpc import Ctx
from controller.vms import VMs
from cowpod.v1 import meta_pb2, vm_pb2


class VMServicer:
    def __init__(self, vms: VMs, metrics: Metrics) -> None:
        self.vms = vms
        self.res = vms.res
        self.metrics = metrics

    async def Create(self, req: vm_pb2.VM, ctx: Ctx) -> vm_pb2.VM:
        return await self.vms.create(req)

    async def Get(self, req: meta_pb2.ObjectKey, ctx: Ctx) -> vm_pb2.VM:
        return await self.res.get_key(req)

    async def List(self, req: meta_pb2.ListOptions, ctx: Ctx) -> vm_pb2.VMList:
        items, rev = await self.res.list(req)
        return vm_pb2.VMList(items=items, resource_version=rev)

    async def Clone(self, req: vm_pb2.CloneRequest, ctx: Ctx) -> vm_pb2.CloneResponse:
        return vm_pb2.CloneResponse(items=await self.vms.clone(req))

    async def SnapFree(self, req: meta_pb2.ObjectKey, ctx: Ctx) -> vm_pb2.VM:
        return await self.vms.snap_free(req)

    async def SetPaused(self, req: vm_pb2.SetPausedRequest, ctx: Ctx) -> vm_pb2.VM:
        return await self.vms.set_paused(req)

    async def UpdateStatus(self, req: vm_pb2.VM, ctx: Ctx) -> vm_pb2.VM:
        return await self.vms.update_status(req)

    async def Destroy(self, req: meta_pb2.DeleteOptions, ctx: Ctx) -> vm_pb2.VM:
        return await self.vms.destroy(req)

    async def Watch(self, req: meta_pb2.WatchOptions, ctx: Ctx) -> AsyncIterator[bytes]:
        with self.metrics.watch_open("vms"):
            async for b in self.res.watch(req):
                yield b
