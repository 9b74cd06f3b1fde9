"""EventService."""

from __future__ import annotations

from collections.abc import AsyncIterator

from controller.events import Events
from controller.metrics import Metrics
from controller.rpc import Ctx
from cowpod.v1 import event_pb2, meta_pb2


class EventServicer:
    def __init__(self, events: Events, metrics: Metrics) -> None:
        self.events = events
        self.res = events.res
        self.metrics = metrics

    async def Create(self, req: event_pb2.Event, ctx: Ctx) -> event_pb2.Event:
        return await self.events.create(req)

    async def List(self, req: event_pb2.ListEventsRequest,
                   ctx: Ctx) -> event_pb2.EventList:
        items, rev = await self.events.list(req)
        return event_pb2.EventList(items=items, resource_version=rev)

    async def Watch(self, req: meta_pb2.WatchOptions, ctx: Ctx) -> AsyncIterator[bytes]:
        with self.metrics.watch_open("events"):
            async for b in self.res.watch(req):
                yield b
