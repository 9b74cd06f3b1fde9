"""Would this pod fit on a fresh VM of class X? — for the autoscaler.

`fits_on` runs the very filter plugins the scheduler runs (the configured
list, or the defaults) against one empty node built from a VM class's
template, and answers with the same `Status` and reasons a user would see.
Pure and synchronous: no client, no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from cowpod.v1 import node_pb2, pod_pb2
from scheduler.config import SchedulerConfig, build_profile
from scheduler.convert import node_info, pod_info
from scheduler.framework.cache import Cache
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import FilterPlugin
from scheduler.framework.runtime import Framework
from scheduler.framework.status import SUCCESS, Status
from scheduler.framework.types import NodeInfo, PodInfo
from scheduler.plugins import PluginContext


def default_filters(cfg: SchedulerConfig | None = None) -> tuple[FilterPlugin, ...]:
    return build_profile(cfg or SchedulerConfig(), PluginContext()).filters


def fits_on(
    pod: PodInfo | pod_pb2.Pod,
    node_template: NodeInfo | node_pb2.Node,
    *,
    filters: Sequence[FilterPlugin] | None = None,
) -> Status:
    """SUCCESS if `pod` would pass every filter on an empty `node_template`,
    else UNSCHEDULABLE(_AND_UNRESOLVABLE) with the reasons and the first
    plugin that refused."""
    p = pod if isinstance(pod, PodInfo) else pod_info(pod)
    n = node_template if isinstance(node_template, NodeInfo) else node_info(node_template)
    cache = Cache(initial_capacity=1)
    cache.set_node(n)
    fw = Framework(filters if filters is not None else default_filters(), ())
    state = CycleState()
    mask, applied = fw.find_feasible(state, p, cache)
    if mask.all():
        return SUCCESS
    diag = fw.diagnose(state, p, cache, applied)
    plugin = sorted(diag.rejectors)[0] if diag.rejectors else ""
    return Status(diag.code, tuple(sorted(diag.reasons)), plugin)
