"""The informer's list-then-watch contract over a scripted fake Watch call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from cowpod.clock import FakeClock
from cowpod.errors import OutOfRange, Unavailable
from cowpod.informer import Informer
from cowpod.v1 import meta_pb2, pod_pb2


def pod(name: str, rv: int) -> pod_pb2.Pod:
    return pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(name=name, namespace="default", resource_version=rv))


def ev(type_: int, p: pod_pb2.Pod | None = None, rv: int = 0) -> pod_pb2.PodWatchEvent:
    if p is not None:
        return pod_pb2.PodWatchEvent(type=type_, object=p, resource_version=p.metadata.resource_version)
    return pod_pb2.PodWatchEvent(type=type_, resource_version=rv)


class Broken(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="scripted")


class ScriptedWatch:
    """Each call plays the next script: events, then an optional error; the
    last call blocks forever so the informer settles."""

    def __init__(self, *scripts: tuple[list[pod_pb2.PodWatchEvent], grpc.StatusCode | None]) -> None:
        self.scripts = list(scripts)
        self.requests: list[meta_pb2.WatchOptions] = []

    def __call__(self, opts: meta_pb2.WatchOptions) -> AsyncIterator[pod_pb2.PodWatchEvent]:
        self.requests.append(opts)
        script = self.scripts.pop(0) if self.scripts else ([], None)
        return self._play(*script, last=not self.scripts)

    async def _play(
        self, events: list[pod_pb2.PodWatchEvent], error: grpc.StatusCode | None, last: bool
    ) -> AsyncIterator[pod_pb2.PodWatchEvent]:
        for e in events:
            yield e
        if error is not None:
            raise Broken(error)
        if last:
            await asyncio.Event().wait()


async def run_until(informer: Informer[Any], done: Callable[[], bool], clock: FakeClock) -> None:
    task = asyncio.create_task(informer.run())
    try:
        for _ in range(200):
            await clock.advance(1)
            if done():
                return
        raise AssertionError("informer did not reach the expected state")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_initial_list_then_changes_in_order() -> None:
    seen: list[tuple[int, str]] = []

    async def handler(t: int, p: pod_pb2.Pod) -> None:
        seen.append((t, p.metadata.name))

    watch = ScriptedWatch(
        ([ev(meta_pb2.ADDED, pod("a", 5)), ev(meta_pb2.BOOKMARK, rv=9), ev(meta_pb2.MODIFIED, pod("a", 10)),
          ev(meta_pb2.DELETED, pod("a", 11))], None)
    )
    clock = FakeClock()
    inf: Informer[pod_pb2.Pod] = Informer(watch, handler=handler, clock=clock)
    await run_until(inf, lambda: len(seen) == 3, clock)
    assert seen == [(meta_pb2.ADDED, "a"), (meta_pb2.MODIFIED, "a"), (meta_pb2.DELETED, "a")]
    assert inf.synced and inf.resource_version == 11 and not inf.cache
    assert watch.requests[0].send_initial


async def test_break_during_initial_list_relists_instead_of_resuming() -> None:
    watch = ScriptedWatch(
        ([ev(meta_pb2.ADDED, pod("late", 40))], grpc.StatusCode.UNAVAILABLE),
        ([ev(meta_pb2.ADDED, pod("early", 3)), ev(meta_pb2.ADDED, pod("late", 40)),
          ev(meta_pb2.BOOKMARK, rv=41)], None),
    )
    clock = FakeClock()
    inf: Informer[pod_pb2.Pod] = Informer(watch, clock=clock)
    await run_until(inf, lambda: inf.synced, clock)
    assert watch.requests[1].send_initial and watch.requests[1].resource_version == 0
    assert set(inf.cache) == {("default", "early"), ("default", "late")}


async def test_resume_after_break_then_relist_after_compaction_reports_vanished() -> None:
    deleted: list[str] = []

    async def handler(t: int, p: pod_pb2.Pod) -> None:
        if t == meta_pb2.DELETED:
            deleted.append(p.metadata.name)

    watch = ScriptedWatch(
        ([ev(meta_pb2.ADDED, pod("a", 2)), ev(meta_pb2.ADDED, pod("b", 3)), ev(meta_pb2.BOOKMARK, rv=3)],
         grpc.StatusCode.UNAVAILABLE),
        ([], grpc.StatusCode.OUT_OF_RANGE),
        ([ev(meta_pb2.ADDED, pod("b", 3)), ev(meta_pb2.BOOKMARK, rv=50)], None),
    )
    clock = FakeClock()
    inf: Informer[pod_pb2.Pod] = Informer(watch, handler=handler, clock=clock)
    await run_until(inf, lambda: len(watch.requests) == 3 and inf.resource_version == 50, clock)
    assert (watch.requests[1].resource_version, watch.requests[1].send_initial) == (3, False)
    assert (watch.requests[2].resource_version, watch.requests[2].send_initial) == (0, True)
    assert deleted == ["a"]
    assert set(inf.cache) == {("default", "b")}


async def test_batched_events_are_handled_one_by_one_in_order() -> None:
    seen: list[tuple[int, str]] = []

    async def handler(t: int, p: pod_pb2.Pod) -> None:
        seen.append((t, p.metadata.name))

    events = [ev(meta_pb2.ADDED, pod("a", 5)), ev(meta_pb2.BOOKMARK, rv=9),
              ev(meta_pb2.MODIFIED, pod("a", 10)), ev(meta_pb2.ADDED, pod("b", 10))]
    batch = pod_pb2.PodWatchEvent(batch=events)
    watch = ScriptedWatch(([batch, ev(meta_pb2.DELETED, pod("b", 12))], None))
    clock = FakeClock()
    inf: Informer[pod_pb2.Pod] = Informer(watch, handler=handler, clock=clock)
    await run_until(inf, lambda: len(seen) == 4, clock)
    assert seen == [(meta_pb2.ADDED, "a"), (meta_pb2.MODIFIED, "a"),
                    (meta_pb2.ADDED, "b"), (meta_pb2.DELETED, "b")]
    assert inf.synced and inf.resource_version == 12 and watch.requests[0].allow_batches


class InProcessWatch(ScriptedWatch):
    """The controller's own hubs (controller.reconcile.hub_watch) raise the domain errors."""

    async def _play(
        self, events: list[pod_pb2.PodWatchEvent], error: grpc.StatusCode | None, last: bool
    ) -> AsyncIterator[pod_pb2.PodWatchEvent]:
        for e in events:
            yield e
        if error == grpc.StatusCode.OUT_OF_RANGE:
            raise OutOfRange("the controller's pods watch was reset; relist")
        if error is not None:
            raise Unavailable("etcd is away")
        if last:
            await asyncio.Event().wait()


async def test_an_in_process_stream_resumes_and_relists_on_domain_errors() -> None:
    watch = InProcessWatch(
        ([ev(meta_pb2.ADDED, pod("a", 2)), ev(meta_pb2.BOOKMARK, rv=3)], grpc.StatusCode.UNAVAILABLE),
        ([], grpc.StatusCode.OUT_OF_RANGE),
        ([ev(meta_pb2.BOOKMARK, rv=50)], None),
    )
    clock = FakeClock()
    inf: Informer[pod_pb2.Pod] = Informer(watch, clock=clock)
    await run_until(inf, lambda: len(watch.requests) == 3 and inf.resource_version == 50, clock)
    assert (watch.requests[1].resource_version, watch.requests[1].send_initial) == (3, False)
    assert (watch.requests[2].resource_version, watch.requests[2].send_initial) == (0, True)
    assert not inf.cache
