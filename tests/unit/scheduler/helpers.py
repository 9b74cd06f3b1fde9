"""Run one filter the way the framework does, and check batch == per-node."""

from __future__ import annotations

import numpy as np

from scheduler.framework.cache import Cache
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import FilterPlugin
from scheduler.framework.status import Status
from scheduler.framework.types import PodInfo


def filter_all(plugin: FilterPlugin, pod: PodInfo, cache: Cache) -> dict[str, Status]:
    """Status per node name; asserts the batch answer agrees with the per-node one."""
    state = CycleState()
    plugin.pre_filter(state, pod, cache)
    per_node = {s.info.name: plugin.filter(state, pod, s) for s in cache.states}
    batch = plugin.filter_batch(state, pod, cache)
    if batch is not None:
        want = np.array([per_node[s.info.name].ok for s in cache.states])
        assert (batch == want).all(), f"{plugin.name}: batch {batch} != per-node {want}"
    return per_node
