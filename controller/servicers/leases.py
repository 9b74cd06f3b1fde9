"""LeaseService."""

from __future__ import annotations

from controller.leases import Leases
from controller.rpc import Ctx
from cowpod.v1 import lease_pb2, meta_pb2


class LeaseServicer:
    def __init__(self, leases: Leases) -> None:
        self.leases = leases
        self.res = leases.res

    async def Get(self, req: meta_pb2.ObjectKey, ctx: Ctx) -> lease_pb2.Lease:
        return await self.res.get_key(req)

    async def List(self, req: meta_pb2.ListOptions, ctx: Ctx) -> lease_pb2.LeaseList:
        items, rev = await self.res.list(req)
        return lease_pb2.LeaseList(items=items, resource_version=rev)

    async def Create(self, req: lease_pb2.Lease, ctx: Ctx) -> lease_pb2.Lease:
        return await self.leases.create(req)

    async def Update(self, req: lease_pb2.Lease, ctx: Ctx) -> lease_pb2.Lease:
        return await self.leases.update(req)

    async def Delete(self, req: meta_pb2.DeleteOptions, ctx: Ctx) -> lease_pb2.Lease:
        return await self.leases.delete(req)
