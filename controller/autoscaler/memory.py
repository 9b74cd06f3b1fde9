"""What the autoscaler must remember between passes, updated purely.

Three things cannot be read off the API objects: how long a clone's node has
been empty (a pod that came and went leaves no trace), how often a class's
clones have failed lately (for the cooldown's exponential back-off), and when
a warm parent was last used (for pausing it when idle). All three
live in a frozen `Memory` that `remember` folds each observation into; the
planner reads it. The reconciler owns the one instance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from controller.autoscaler.fleet import (
    is_clone,
    is_managed,
    node_ready,
    pods_by_node,
    timed_out,
    workload_pods,
)
from controller.autoscaler.model import (
    Snapshot,
)
from cowpod import backoff
from cowpod.api.ids import ClassName, NodeName, VMName
from cowpod.api.phases import VMPhase
from cowpod.clusterconfig import ClusterConfig


@dataclass(frozen=True)
class Backoff:
    failures: int
    # No scale-up of the class before this time.
    until: float
    last_failure: float


@dataclass(frozen=True)
class Memory:
    # Node -> when it was first seen empty of workload pods (clones only).
    unneeded_since: Mapping[NodeName, float] = field(default_factory=dict)
    backoff: Mapping[ClassName, Backoff] = field(default_factory=dict)
    # VMs whose failure has been counted already, so one failure backs off once.
    failures_seen: frozenset[VMName] = frozenset()
    # VM -> when its node was last seen Ready (for "not Ready for too long").
    last_ready: Mapping[VMName, float] = field(default_factory=dict)
    # Warm parent -> when it was last used: the newest clone asked of it, or
    # when it was last seen not yet Running, or paused (so an operator's resume
    # starts a fresh idle period). A parent first seen now counts from now.
    parent_last_used: Mapping[VMName, float] = field(default_factory=dict)

    def backoff_left(self, vm_class: str, now: float) -> float:
        b = self.backoff.get(ClassName(vm_class))
        return max(0.0, b.until - now) if b is not None else 0.0


def record_failure(memory: Memory, vm_class: str, config: ClusterConfig, now: float) -> Memory:
    """One more failure of the class: cooldown * 2^(failures-1), capped at maxBackoff."""
    name = ClassName(vm_class)
    prev = memory.backoff.get(name)
    failures = (prev.failures if prev else 0) + 1
    delay = backoff.Backoff(initial=config.cooldown_s, cap=config.max_backoff_s).delay(failures)
    return replace(
        memory,
        backoff={**memory.backoff, name: Backoff(failures, now + delay, now)},
    )


def parents_last_used(
    memory: Memory, snap: Snapshot, config: ClusterConfig, now: float
) -> dict[VMName, float]:
    """When each live warm parent was last used: its newest child's request time (children
    the executor just asked for are in the snapshot through its overlay), or `now` while
    the parent is not Running yet, is paused, or is seen for the first time."""
    newest_child: dict[str, float] = {}
    for vm in snap.vms.values():
        if vm.parent:
            newest_child[vm.parent] = max(newest_child.get(vm.parent, 0.0), vm.requested_at)
    out: dict[VMName, float] = {}
    for vm in snap.vms.values():
        if not vm.is_parent or not is_managed(vm, config) or vm.gone:
            continue
        prev = memory.parent_last_used.get(vm.name)
        if prev is None or vm.paused or vm.phase not in (VMPhase.RUNNING, VMPhase.PAUSED):
            out[vm.name] = now
        else:
            out[vm.name] = max(prev, newest_child.get(vm.name, 0.0))
    return out


def remember(memory: Memory, snap: Snapshot, config: ClusterConfig, now: float) -> Memory:
    """Fold one observation of the cluster into the memory."""
    by_node = pods_by_node(snap.pods)

    unneeded: dict[NodeName, float] = {}
    for vm in snap.vms.values():
        if not is_clone(vm, config) or vm.gone:
            continue
        node = snap.nodes.get(vm.node_name)
        if node is None or not node.ready:
            continue
        if workload_pods(by_node.get(vm.node_name, [])):
            continue
        # Empty since we first saw it empty, but never since before it was Ready.
        since = memory.unneeded_since.get(vm.node_name, now)
        unneeded[vm.node_name] = since

    last_ready = {
        name: t for name, t in memory.last_ready.items() if name in snap.vms
    }
    for vm in snap.vms.values():
        if node_ready(vm, snap):
            last_ready[vm.name] = now
    out = replace(memory, unneeded_since=unneeded, last_ready=last_ready,
                  parent_last_used=parents_last_used(memory, snap, config, now))

    seen = set(memory.failures_seen)
    for vm in snap.vms.values():
        if not is_managed(vm, config) or vm.name in seen:
            continue
        if vm.deleting:
            continue
        if vm.phase == VMPhase.FAILED or timed_out(vm, snap, config, now, last_ready.get(vm.name)):
            seen.add(vm.name)
            out = record_failure(out, vm.class_name, config, now)
    # Forget VMs that are gone from the API, so the set does not grow forever.
    out = replace(out, failures_seen=frozenset(n for n in seen if n in snap.vms))

    # A class recovers when one of its VMs' nodes is Ready after the last failure.
    backoff = dict(out.backoff)
    for cls, b in out.backoff.items():
        for vm in snap.vms.values():
            if vm.class_name != cls or vm.gone or not node_ready(vm, snap):
                continue
            node = snap.nodes[vm.node_name]
            if node.ready_since is not None and node.ready_since > b.last_failure and now >= b.until:
                del backoff[cls]
                break
    return replace(out, backoff=backoff)
