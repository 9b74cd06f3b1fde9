"""PodService."""

from __future__ import annotations

from collections.abc import AsyncIterator

from controller.agent_proxy import AgentProxy
from controller.limits import Limits
from controller.metrics import Metrics
from controller.pods import Pods, add_bind_result, add_create_result
from controller.rpc import Ctx, send_warnings
from controller.specmemo import SpecMemo
from cowpod.api import podfields
from cowpod.auth.podsecurity import pod_violations
from cowpod.errors import CowpodError, Invalid
from cowpod.v1 import meta_pb2, pod_pb2

# What the isolation rules and the ignored-field warnings find in a pod's spec: both are pure
# functions of the spec, and replicas share their spec (controller.specmemo).
_SPEC_FINDINGS: SpecMemo[tuple[tuple[tuple[str, str], ...], tuple[str, ...]]] = SpecMemo()


def spec_findings(pod: pod_pb2.Pod) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """`pod_violations(pod)` and `podfields.pod_warnings(pod.spec)`, remembered by the spec's bytes."""
    key = pod.spec.SerializeToString(deterministic=True)
    found = _SPEC_FINDINGS.get(key)
    if found is None:
        found = (tuple(pod_violations(pod)), tuple(podfields.pod_warnings(pod.spec)))
        _SPEC_FINDINGS.put(key, found)
    return found


class PodServicer:
    def __init__(self, pods: Pods, proxy: AgentProxy, metrics: Metrics, limits: Limits | None = None) -> None:
        self.pods = pods
        self.res = pods.res
        self.proxy = proxy
        self.metrics = metrics
        self.limits = limits or Limits()

    async def Create(self, req: pod_pb2.Pod, ctx: Ctx) -> pod_pb2.Pod:
        warnings = list(spec_findings(req)[1])  # the gate checked the isolation rules
        out = await self.pods.create(req)
        send_warnings(ctx, warnings)
        return out

    async def CreateBatch(self, req: pod_pb2.CreatePodsRequest, ctx: Ctx) -> pod_pb2.CreatePodsResponse:
        """Each pod passes what a single Create passes (the gate checks a Pod request's size and
        isolation rules; here they are checked per item) and gets its own result."""
        outs: list[pod_pb2.Pod | CowpodError | None] = []
        todo: list[pod_pb2.Pod] = []
        warnings: list[str] = []
        for p in req.pods:
            refused, warned = self._admit(p)
            outs.append(refused)
            if refused is None:
                todo.append(p)
                if warned:
                    meta = p.metadata
                    warnings += [f"pod/{meta.name or meta.generate_name}: {w}" for w in warned]
        created = iter(await self.pods.create_many(todo))
        send_warnings(ctx, warnings)
        resp = pod_pb2.CreatePodsResponse()
        results = resp.results
        for p, out in zip(req.pods, outs, strict=True):
            add_create_result(results, p, next(created) if out is None else out)
        return resp

    def _admit(self, pod: pod_pb2.Pod) -> tuple[CowpodError | None, tuple[str, ...]]:
        """Why `pod` is refused (too large, or an isolation rule broken), or None and the
        warnings about its spec."""
        size = pod.ByteSize()
        if size > self.limits.max_object_bytes:
            return Invalid("", f"object is {size} bytes; the maximum is {self.limits.max_object_bytes}"), ()
        violations, warnings = spec_findings(pod)
        if violations:
            field, why = violations[0]
            return Invalid(field, why), ()
        return None, warnings

    async def Get(self, req: meta_pb2.ObjectKey, ctx: Ctx) -> pod_pb2.Pod:
        return await self.res.get_key(req)

    async def List(self, req: meta_pb2.ListOptions, ctx: Ctx) -> pod_pb2.PodList:
        items, rev = await self.res.list(req)
        return pod_pb2.PodList(items=items, resource_version=rev)

    async def Update(self, req: pod_pb2.Pod, ctx: Ctx) -> pod_pb2.Pod:
        warnings = podfields.pod_warnings(req.spec) if req.spec.containers else []
        out = await self.pods.update(req)
        send_warnings(ctx, warnings)
        return out

    async def UpdateStatus(self, req: pod_pb2.Pod, ctx: Ctx) -> pod_pb2.Pod:
        return await self.pods.update_status(req)

    async def Delete(self, req: meta_pb2.DeleteOptions, ctx: Ctx) -> pod_pb2.Pod:
        return await self.pods.delete(req)

    async def Watch(self, req: meta_pb2.WatchOptions, ctx: Ctx) -> AsyncIterator[bytes]:
        with self.metrics.watch_open("pods"):
            async for b in self.res.watch(req):
                yield b

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
        bindings = req.bindings
        outs = await self.pods.bind_many(bindings)
        resp = pod_pb2.BindBatchResponse()
        results = resp.results
        ok = 0
        for b, o in zip(bindings, outs, strict=True):
            ok += add_bind_result(results, b, o)
        self.metrics.binds.labels("ok").inc(ok)
        self.metrics.binds.labels("failed").inc(len(outs) - ok)
        return resp

    async def Logs(self, req: pod_pb2.LogsRequest,
                   ctx: Ctx) -> AsyncIterator[pod_pb2.LogChunk]:
        async for chunk in self.proxy.logs(req):
            yield chunk

    async def Exec(self, req: pod_pb2.ExecRequest, ctx: Ctx) -> pod_pb2.ExecResponse:
        return await self.proxy.exec(req, ctx.time_remaining())

    async def ExecStream(self, requests: AsyncIterator[pod_pb2.ExecStreamRequest],
                         ctx: Ctx) -> AsyncIterator[pod_pb2.ExecStreamResponse]:
        async for resp in self.proxy.exec_stream(requests):
            yield resp
