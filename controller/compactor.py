"""etcd history compaction: keep a few minutes of revisions, not all of them forever.

etcd keeps every old revision until compacted; heartbeats alone would fill its
space quota in days. Like the Kubernetes API server we compact every
`interval` to the revision seen one interval earlier, so at least one interval
of history is always there for watches to resume from; older resumes get
OUT_OF_RANGE and relist. Several controllers compacting is harmless.
"""

from __future__ import annotations

import logging

from controller.store import Store
from cowpod.clock import Clock
from cowpod.errors import CowpodError, OutOfRange

log = logging.getLogger(__name__)


async def run_compactor(store: Store, clock: Clock, interval: float) -> None:
    previous = 0
    while True:
        await clock.sleep(interval)
        try:
            current = await store.current_revision()
            if previous:
                await store.compact(previous)
                log.info("compacted etcd history up to revision %d", previous)
            previous = current
        except OutOfRange:
            previous = 0  # somebody compacted further already
        except CowpodError as err:
            log.warning("etcd compaction skipped: %s", err)
