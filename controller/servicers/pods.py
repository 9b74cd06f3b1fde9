"""PodService."""

from __future__ import annotations

from collections.abc import AsyncIterator

from controller.agent_proxy import AgentProxy
from controller.metrics import Metrics
from controller.pods import Pods, bind_result
from controller.rpc import Ctx
from cowpod.v1 import meta_pb2, pod_pb2


class PodServicer:
    def __init__(self, pods: Pods, proxy: AgentProxy, metrics: Metrics) -> None:
        self.pods = pods
        self.res = pods.res
        self.proxy = proxy
        self.metrics = metrics

    async def Create(self, req: pod_pb2.Pod, ctx: Ctx) -> pod_pb2.Pod:
        return await self.pods.create(req)

    async def Get(self, req: meta_pb2.ObjectKey, ctx: Ctx) -> pod_pb2.Pod:
        return await self.res.get_key(req)

    async def List(self, req: meta_pb2.ListOptions, ctx: Ctx) -> pod_pb2.PodList:
        items, rev = await self.res.list(req)
        return pod_pb2.PodList(items=items, resource_version=rev)

    async def Update(self, req: pod_pb2.Pod, ctx: Ctx) -> pod_pb2.Pod:
        return await self.pods.update(req)

    async def UpdateStatus(self, req: pod_pb2.Pod, ctx: Ctx) -> pod_pb2.Pod:
        return await self.pods.update_status(req)

    async def Delete(self, req: meta_pb2.DeleteOptions, ctx: Ctx) -> pod_pb2.Pod:
        return await self.pods.delete(req)

    async def Watch(self, req: meta_pb2.WatchOptions, ctx: Ctx) -> AsyncIterator[bytes]:
        gauge = self.metrics.watch_streams.labels("pods")
        gauge.inc()
        try:
            async for b in self.res.watch(req):
                yield b
        finally:
            gauge.dec()

    async def Bind(self, req: pod_pb2.Binding, ctx: Ctx) -> pod_pb2.Pod:
        try:
            pod = await self.pods.bind(req)
        except Exception:
            self.metrics.binds.labels("failed").inc()
            raise
        self.metrics.binds.labels("ok").inc()
        return pod

    async def BindBatch(self, req: pod_pb2.BindBatchRequest,
                        ctx: Ctx) -> pod_pb2.BindBatchResponse:
        outs = await self.pods.bind_many(req.bindings)
        results = [bind_result(b, o) for b, o in zip(req.bindings, outs, strict=True)]
        ok = sum(1 for r in results if r.ok)
        self.metrics.binds.labels("ok").inc(ok)
        self.metrics.binds.labels("failed").inc(len(results) - ok)
        return pod_pb2.BindBatchResponse(results=results)

    async def Logs(self, req: pod_pb2.LogsRequest,
                   ctx: Ctx) -> AsyncIterator[pod_pb2.LogChunk]:
        async for chunk in self.proxy.logs(req):
            yield chunk

    async def Exec(self, req: pod_pb2.ExecRequest, ctx: Ctx) -> pod_pb2.ExecResponse:
        return await self.proxy.exec(req, ctx.time_remaining())
