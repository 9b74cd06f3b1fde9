"""NodeService."""

from __future__ import annotations

from collections.abc import AsyncIterator

from controller import heartbeats
from controller.metrics import Metrics
from controller.nodes import Nodes
from controller.rpc import Ctx, RefusedMessage
from cowpod.v1 import meta_pb2, node_pb2


class NodeServicer:
    def __init__(self, nodes: Nodes, metrics: Metrics) -> None:
        self.nodes = nodes
        self.res = nodes.res
        self.metrics = metrics

    async def Register(self, req: node_pb2.Node, ctx: Ctx) -> node_pb2.Node:
        return await self.nodes.register(req)

    async def Heartbeat(self, req: node_pb2.HeartbeatRequest,
                        ctx: Ctx) -> node_pb2.HeartbeatResponse:
        return await self.nodes.heartbeat(req)

    def HeartbeatStream(
        self, requests: AsyncIterator[node_pb2.HeartbeatRequest | RefusedMessage], ctx: Ctx
    ) -> AsyncIterator[node_pb2.HeartbeatResponse]:
        # The loop's own generator, not one wrapped in another: a layer less per answer.
        return heartbeats.serve(requests, self.nodes.heartbeat)

    async def Get(self, req: meta_pb2.ObjectKey, ctx: Ctx) -> node_pb2.Node:
        return await self.res.get_key(req)

    async def List(self, req: meta_pb2.ListOptions, ctx: Ctx) -> node_pb2.NodeList:
        items, rev = await self.res.list(req)
        return node_pb2.NodeList(items=items, resource_version=rev)

    async def Update(self, req: node_pb2.Node, ctx: Ctx) -> node_pb2.Node:
        return await self.nodes.update(req)

    async def UpdateStatus(self, req: node_pb2.Node, ctx: Ctx) -> node_pb2.Node:
        return await self.nodes.update_status(req)

    async def Delete(self, req: meta_pb2.DeleteOptions, ctx: Ctx) -> node_pb2.Node:
        return await self.nodes.delete(req)

    async def Watch(self, req: meta_pb2.WatchOptions, ctx: Ctx) -> AsyncIterator[bytes]:
        with self.metrics.watch_open("nodes"):
            async for b in self.res.watch(req):
                yield b
