"""Questions about the fleet that both the memory and the planner ask.

"Managed" means the VM's class is in the cluster config: the autoscaler never
touches a VM it did not make a class for (e.g. the `vm-1` that `cowpod up`
boots), though such VMs still count towards maxVMs and the total limits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from controller.autoscaler.model import PodView, Snapshot, VMView
from cowpod.api.ids import NodeName
from cowpod.api.phases import VMPhase
from cowpod.clusterconfig import ClusterConfig


def is_managed(vm: VMView, config: ClusterConfig) -> bool:
    return config.vm_class(vm.class_name) is not None


def is_clone(vm: VMView, config: ClusterConfig) -> bool:
    """A managed worker VM (instant or full clone), as opposed to a warm parent."""
    return is_managed(vm, config) and not vm.is_parent


def node_ready(vm: VMView, snap: Snapshot) -> bool:
    node = snap.nodes.get(vm.node_name)
    return node is not None and node.ready


def timed_out(
    vm: VMView, snap: Snapshot, config: ClusterConfig, now: float, last_ready: float | None
) -> bool:
    """Its node has not been Ready for provisionTimeout: since the VM was asked
    for, or since the node was last seen Ready. A paused VM (a quiesced parent)
    cannot heartbeat, so it is exempt."""
    if vm.gone or vm.phase == VMPhase.PAUSED or node_ready(vm, snap):
        return False
    since = max(vm.requested_at, last_ready or 0.0)
    return now - since > config.provision_timeout_s


def pods_by_node(pods: Iterable[PodView]) -> dict[NodeName, list[PodView]]:
    out: dict[NodeName, list[PodView]] = defaultdict(list)
    for p in pods:
        if p.node_name:
            out[NodeName(p.node_name)].append(p)
    return out


def workload_pods(pods: Iterable[PodView]) -> list[PodView]:
    """Pods that keep a node needed: running (or starting) and not per-node system pods."""
    return [p for p in pods if p.holds_resources and not p.system]
