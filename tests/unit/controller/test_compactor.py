"""The compactor keeps one interval of history."""

from __future__ import annotations

import asyncio

import pytest

from controller.compactor import run_compactor
from controller.memstore import MemoryStore
from cowpod.clock import FakeClock
from cowpod.v1 import pod_pb2


async def test_compacts_to_the_revision_seen_one_interval_ago() -> None:
    store, clock = MemoryStore(), FakeClock()
    task = asyncio.create_task(run_compactor(store, clock, 300))
    await asyncio.sleep(0)  # let it start sleeping
    try:
        await store.create("registry/pods/default/a", pod_pb2.Pod())
        await clock.advance(300)  # first tick: remembers the revision, compacts nothing
        assert store.compacted == 0
        seen = store.revision
        await store.create("registry/pods/default/b", pod_pb2.Pod())
        await clock.advance(300)
        assert store.compacted == seen
        assert store.revision > seen  # the latest interval is kept
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
