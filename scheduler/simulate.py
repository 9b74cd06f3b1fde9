"""The scheduler's answers for the controller's loops: its public surface there.

Would this pod fit on a fresh VM of class X? — for the autoscaler: `fits_on`
runs the very filter plugins the scheduler runs (the configured list, or the
defaults) against one empty node built from a VM class's template, and answers
with the same `Status` and reasons a user would see.
`may_run_on` is the load-blind half (labels and taints only) that the
DaemonSet controller asks of every node. Pure and synchronous: no client, no
clock, no I/O. The controller imports this module, never the scheduler's
framework or plugins (tests/unit/test_import_contract.py holds that).
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
from scheduler.plugins.node_affinity import required_match
from scheduler.plugins.taint_toleration import first_untolerated

# The surface the controller may use (FilterPlugin: the type `fits_on` takes).
__all__ = ["FilterPlugin", "default_filters", "fits_on", "may_run_on"]


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


def may_run_on(pod: pod_pb2.Pod, node: node_pb2.Node) -> bool:
    """Whether `node` is one `pod` may go to at all, whatever its load: its node selector
    and required node affinity match the node's labels, and it tolerates every
    NoSchedule/NoExecute taint there (Kubernetes' nodeShouldRunDaemonPod, with the
    very plugins' rules the scheduler filters with)."""
    pi, ni = pod_info(pod), node_info(node)
    return required_match(pi, ni.labels) and first_untolerated(pi, ni.taints) is None
