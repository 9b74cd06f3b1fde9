"""The in-tree plugins, one class per file, registered by name.

The config file names plugins from `REGISTRY`; a plugin that needs a
dependency (the binder needs the API client) gets it from `PluginContext`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cowpod.client import Client
from scheduler.framework.interfaces import Plugin
from scheduler.plugins.balanced_allocation import NodeResourcesBalancedAllocation
from scheduler.plugins.default_binder import DefaultBinder
from scheduler.plugins.default_preemption import DefaultPreemption
from scheduler.plugins.inter_pod_affinity import InterPodAffinity
from scheduler.plugins.inter_pod_affinity_score import InterPodAffinityScore
from scheduler.plugins.least_allocated import NodeResourcesLeastAllocated
from scheduler.plugins.most_allocated import NodeResourcesMostAllocated
from scheduler.plugins.node_affinity import NodeAffinity
from scheduler.plugins.node_ports import NodePorts
from scheduler.plugins.node_ready import NodeReady
from scheduler.plugins.node_resources_fit import NodeResourcesFit
from scheduler.plugins.node_unschedulable import NodeUnschedulable
from scheduler.plugins.preferred_node_affinity import PreferredNodeAffinity
from scheduler.plugins.priority_sort import PrioritySort
from scheduler.plugins.taint_toleration import TaintToleration
from scheduler.plugins.taint_toleration_preference import TaintTolerationPreference
from scheduler.plugins.topology_spread import PodTopologySpread
from scheduler.plugins.topology_spread_score import PodTopologySpreadScore


@dataclass(frozen=True)
class PluginContext:
    client: Client | None = None


def _binder(ctx: PluginContext) -> Plugin:
    if ctx.client is None:
        raise ValueError("DefaultBinder needs an API client")
    return DefaultBinder(ctx.client)


REGISTRY: dict[str, Callable[[PluginContext], Plugin]] = {
    PrioritySort.name: lambda _: PrioritySort(),
    NodeReady.name: lambda _: NodeReady(),
    NodeUnschedulable.name: lambda _: NodeUnschedulable(),
    NodeAffinity.name: lambda _: NodeAffinity(),
    TaintToleration.name: lambda _: TaintToleration(),
    NodePorts.name: lambda _: NodePorts(),
    NodeResourcesFit.name: lambda _: NodeResourcesFit(),
    PodTopologySpread.name: lambda _: PodTopologySpread(),
    NodeResourcesLeastAllocated.name: lambda _: NodeResourcesLeastAllocated(),
    NodeResourcesMostAllocated.name: lambda _: NodeResourcesMostAllocated(),
    NodeResourcesBalancedAllocation.name: lambda _: NodeResourcesBalancedAllocation(),
    PreferredNodeAffinity.name: lambda _: PreferredNodeAffinity(),
    TaintTolerationPreference.name: lambda _: TaintTolerationPreference(),
    PodTopologySpreadScore.name: lambda _: PodTopologySpreadScore(),
    InterPodAffinity.name: lambda _: InterPodAffinity(),
    InterPodAffinityScore.name: lambda _: InterPodAffinityScore(),
    DefaultPreemption.name: lambda _: DefaultPreemption(),
    DefaultBinder.name: _binder,
}
