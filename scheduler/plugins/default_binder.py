"""Bind: commit plans through PodService.BindBatch.

The controller applies each Binding as a conditional write (pod still
unbound, at its uid and resource_version; node still there; the pod fits in
what the node has left, checked against etcd, so two active schedulers never
overcommit a node) and answers per binding, so one stale plan never fails its
neighbours; a refused binding is forgotten and its pod requeued
(`Scheduler.finish_binds`). Falls back to one Bind per pod against a
controller without BindBatch."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from cowpod.client import Client
from cowpod.v1 import pod_pb2
from scheduler.convert import binding
from scheduler.framework.interfaces import BindOutcome, BindPlugin, Plan


class DefaultBinder(BindPlugin):
    name = "DefaultBinder"

    def __init__(self, client: Client, *, timeout: float = 30.0) -> None:
        self._client = client
        self._timeout = timeout
        self._batch = True

    async def bind(self, plans: Sequence[Plan]) -> list[BindOutcome]:
        if not plans:
            return []
        if self._batch:
            req = pod_pb2.BindBatchRequest(bindings=[binding(p.pod, p.node) for p in plans])
            try:
                resp = await self._client.call(self._client.pods.BindBatch, req, timeout=self._timeout)
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.UNIMPLEMENTED:
                    return [BindOutcome(p, False, err.code().name, err.details() or "") for p in plans]
                self._batch = False
            else:
                out: list[BindOutcome] = []
                for p, r in zip(plans, resp.results, strict=False):
                    code = "" if r.ok else code_name(r.code)
                    out.append(BindOutcome(p, r.ok, code, r.message))
                for p in plans[len(out) :]:
                    out.append(BindOutcome(p, False, "UNKNOWN", "no result from BindBatch"))
                return out
        return [await self._bind_one(p) for p in plans]

    async def _bind_one(self, plan: Plan) -> BindOutcome:
        try:
            await self._client.call(
                self._client.pods.Bind, binding(plan.pod, plan.node), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as err:
            return BindOutcome(plan, False, err.code().name, err.details() or "")
        return BindOutcome(plan, True)


_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


def code_name(value: int) -> str:
    """grpc.StatusCode name for the integer a BindResult carries."""
    return _NAMES.get(value, "UNKNOWN")
