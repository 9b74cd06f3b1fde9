"""The autoscaler's decisions: `plan(snapshot, config, memory, now, fits) -> [Action]`.

Pure: no I/O, no clock, no randomness, so every rule is a table test. One
pass, in this order (earlier steps take from the budget first):

1. Broken VMs: a managed VM that Failed, or whose node has not been Ready for
   provisionTimeout, is destroyed (its class backs off; see `memory`).
2. Warm parents: each class with `parent: true` (when instant clones are on)
   has one live parent; a missing one is created, a registered one's node
   gets the parent taint.
3. Minimums: a class with fewer live clones than `min` gets the difference.
4. Pending pods (PodScheduled=False, Unschedulable):
   a. each pod group is asked of the scheduler's filters against a fresh
      node of every class; a pod no class can take gets a NotTriggerScaleUp
      event and never a VM;
   b. capacity already coming (VMs in flight, nodes Ready since the
      scheduler's verdict) is filled first, so nothing is made twice;
   c. the rest is bin-packed: each round tries every class that may still
      grow (not in cooldown, under its max, maxVMs and the CPU/memory
      totals) and takes the one whose new VMs cost least per pod placed;
      repeat until every pod is placed or no class can take more.
5. Scale down: a clone whose node has been empty of workload pods for
   scaleDownUnneeded is cordoned, drained and destroyed, oldest first, never
   below its class's `min`, never one the pending pods were just counted on,
   and never in a class that is scaling up in the same pass. Warm parents
   are never scaled down.
6. Idle parents: a Running warm parent not used (no clone asked of it) for
   `parent_idle_pause_s` (0 = never) is paused — quiesced, as Fargo keeps its
   parents; instant clones still fork from it. Never one a ScaleUp of this
   pass uses. The autoscaler never resumes a parent: nothing needs it running.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from controller.autoscaler.actions import (
    Action,
    Cordon,
    CreateParent,
    Drain,
    Event,
    PauseParent,
    ScaleDown,
    ScaleUp,
    TaintParent,
)
from controller.autoscaler.binpack import Bin, pack_new, place
from controller.autoscaler.fit import FitChecker, FitResult, class_labels, class_template, node_template
from controller.autoscaler.fleet import is_clone, is_managed, pods_by_node, timed_out
from controller.autoscaler.memory import Memory
from controller.autoscaler.model import (
    PodRef,
    PodView,
    Snapshot,
    VMView,
)
from cowpod.api.ids import ClassName, VMName
from cowpod.api.phases import VMPhase
from cowpod.api.resources import Resources
from cowpod.clusterconfig import ClusterConfig, VMClass
from cowpod.v1 import node_pb2

# At most this many pods are named in one ScaleUp's events (the rest are counted).
MAX_PODS_NAMED = 50


def fmt_duration(seconds: float) -> str:
    """600 -> "10m", 90 -> "1m30s", 1.117 -> "1.1s": what a user reads in an event."""
    if seconds < 60:
        return f"{round(seconds, 1):g}s"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s else "")
    return out or "0s"


@dataclass
class Budget:
    """How much more the autoscaler may make in this pass (None = unlimited)."""

    config: ClusterConfig
    vms_left: int | None
    cpu_left: int | None
    memory_left: int | None
    clones: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, live: Iterable[VMView], config: ClusterConfig) -> Budget:
        vms = list(live)
        clones: dict[str, int] = {}
        for vm in vms:
            if is_clone(vm, config):
                clones[vm.class_name] = clones.get(vm.class_name, 0) + 1
        return cls(
            config=config,
            vms_left=config.max_vms - len(vms) if config.max_vms else None,
            cpu_left=(config.max_total_cpu_millis - sum(v.cpu_millis for v in vms))
            if config.max_total_cpu_millis
            else None,
            memory_left=(config.max_total_memory_bytes - sum(v.memory_bytes for v in vms))
            if config.max_total_memory_bytes
            else None,
            clones=clones,
        )

    def cap(self, c: VMClass, *, parent: bool = False) -> tuple[int, str]:
        """How many more VMs of the class fit every limit, and the limit that binds."""
        limits: list[tuple[int, str]] = []
        if not parent:
            limits.append((c.max - self.clones.get(c.name, 0), f"class {c.name} max {c.max}"))
        if self.vms_left is not None:
            limits.append((self.vms_left, f"maxVMs {self.config.max_vms}"))
        if self.cpu_left is not None:
            limits.append((self.cpu_left // c.cpu_millis, "maxTotalCPU"))
        if self.memory_left is not None:
            limits.append((self.memory_left // c.memory_bytes, "maxTotalMemory"))
        if not limits:
            return (2**31, "")
        n, why = min(limits, key=lambda x: x[0])
        return (max(0, n), why)

    def take(self, c: VMClass, n: int, *, parent: bool = False) -> None:
        if not parent:
            self.clones[c.name] = self.clones.get(c.name, 0) + n
        if self.vms_left is not None:
            self.vms_left -= n
        if self.cpu_left is not None:
            self.cpu_left -= n * c.cpu_millis
        if self.memory_left is not None:
            self.memory_left -= n * c.memory_bytes


@dataclass
class _Fits:
    """The scheduler's fit check, memoised per (pod group, bin kind)."""

    checker: FitChecker
    templates: dict[str, node_pb2.Node]
    cache: dict[tuple[str, str], FitResult] = field(default_factory=dict)

    def result(self, pod: PodView, kind: str) -> FitResult:
        key = (pod.group, kind)
        r = self.cache.get(key)
        if r is None:
            r = self.checker(pod.proto, self.templates[kind])
            self.cache[key] = r
        return r

    def __call__(self, pod: PodView, kind: str) -> bool:
        return self.result(pod, kind).fits


def _class_allocatable(c: VMClass, config: ClusterConfig) -> Resources:
    return Resources(
        c.cpu_millis - config.reserve_cpu_millis,
        c.memory_bytes - config.reserve_memory_bytes,
        config.max_pods_per_node,
    )


def _new_bin(c: VMClass, config: ClusterConfig) -> Callable[[int], Bin]:
    kind, alloc = _class_kind(c.name), _class_allocatable(c, config)
    return lambda i: Bin(f"new-{c.name}-{i}", alloc, kind)


def _class_kind(name: str) -> str:
    return f"class:{name}"


def _short(r: Resources) -> str:
    return f"cpu {r.cpu_millis}m, memory {r.memory_bytes // 1024**2}Mi"


def _why_no_class(pod: PodView, classes: tuple[VMClass, ...], config: ClusterConfig, fits: _Fits) -> str:
    if not classes:
        return "no VM classes are configured"
    if all(not pod.requests.fits_in(_class_allocatable(c, config)) for c in classes):
        biggest = max(classes, key=lambda c: (c.cpu_millis, c.memory_bytes))
        return (
            f"pod bigger than any VM class (requests {_short(pod.requests)}; "
            f"largest class {biggest.name} offers {_short(_class_allocatable(biggest, config))})"
        )
    parts = []
    for c in classes:
        reasons = fits.result(pod, _class_kind(c.name)).reasons or ("does not fit",)
        parts.append(f"{c.name}: {', '.join(reasons)}")
    return f"pod fits no VM class ({'; '.join(parts)})"


def _usable_parent(parents: list[VMView]) -> VMName | None:
    for p in sorted(parents, key=lambda v: v.name):
        if p.can_be_cloned:
            return p.name
    return None


def plan(
    snap: Snapshot,
    config: ClusterConfig,
    memory: Memory,
    now: float,
    fits: FitChecker,
    *,
    parent_idle_pause_s: float = 0.0,
) -> list[Action]:
    actions: list[Action] = []
    by_node = pods_by_node(snap.pods)

    # 1. Broken VMs.
    doomed: set[VMName] = set()
    for vm in sorted(snap.vms.values(), key=lambda v: v.name):
        if not is_managed(vm, config) or vm.deleting:
            continue
        if vm.phase == VMPhase.FAILED:
            why = f"VM {vm.name} failed" + (f": {vm.message}" if vm.message else "")
        elif timed_out(vm, snap, config, now, memory.last_ready.get(vm.name)):
            why = f"node of VM {vm.name} not Ready for {fmt_duration(config.provision_timeout_s)}"
        else:
            continue
        doomed.add(vm.name)
        actions.append(Event("VM", "", vm.name, "ScaleUpFailed", f"{why}; destroying it", "Warning"))
        actions.append(ScaleDown(vm.name, why))

    live = [vm for vm in snap.vms.values() if not vm.gone and vm.name not in doomed]
    budget = Budget.of(live, config)

    parents: dict[str, list[VMView]] = {}
    clones: dict[str, list[VMView]] = {}
    for vm in live:
        if not is_managed(vm, config):
            continue
        (parents if vm.is_parent else clones).setdefault(vm.class_name, []).append(vm)

    # 2. Warm parents.
    use_parents = config.instant_clones
    for c in config.vm_classes:
        if not (use_parents and c.parent):
            continue
        mine = parents.get(c.name, [])
        if not mine:
            if budget.cap(c, parent=True)[0] >= 1:
                budget.take(c, 1, parent=True)
                actions.append(CreateParent(ClassName(c.name)))
            continue
        for p in sorted(mine, key=lambda v: v.name):
            node = snap.nodes.get(p.node_name)
            if node is not None and not node.parent_tainted:
                actions.append(TaintParent(p.node_name))

    def parent_for(c: VMClass) -> VMName | None:
        if not (use_parents and c.parent):
            return None
        return _usable_parent(parents.get(c.name, []))

    # Capacity on its way: VMs whose nodes are not Ready yet (never parents:
    # they take no pods), and nodes that turned Ready only lately.
    templates: dict[str, node_pb2.Node] = {
        _class_kind(c.name): class_template(c, config) for c in config.vm_classes
    }
    upcoming: list[Bin] = []
    for vm in sorted(live, key=lambda v: v.name):
        if vm.is_parent:
            continue
        node = snap.nodes.get(vm.node_name)
        if node is not None and node.ready:
            continue
        vm_class = config.vm_class(vm.class_name)
        labels = {**vm.node_labels, **(class_labels(vm_class) if vm_class else {})}
        kind = f"vm:{vm.name}"
        templates[kind] = node_template(
            vm.name, cpu_millis=vm.cpu_millis, memory_bytes=vm.memory_bytes, labels=labels, config=config
        )
        alloc = Resources(
            vm.cpu_millis - config.reserve_cpu_millis,
            vm.memory_bytes - config.reserve_memory_bytes,
            config.max_pods_per_node,
        )
        used = sum((p.requests for p in by_node.get(vm.node_name, []) if p.holds_resources), Resources())
        upcoming.append(Bin(vm.name, alloc - used, kind))
    for node in sorted(snap.nodes.values(), key=lambda n: n.name):
        if (
            not node.ready
            or node.unschedulable
            or node.parent_tainted
            or node.ready_since is None
            or now - node.ready_since > config.new_node_grace_s
        ):
            continue
        kind = f"node:{node.name}"
        templates[kind] = node.proto
        used = sum((p.requests for p in by_node.get(node.name, []) if p.holds_resources), Resources())
        upcoming.append(Bin(node.name, node.allocatable - used, kind, ready_since=node.ready_since))
    fit = _Fits(fits, templates)

    # 3. Minimums.
    growing: set[str] = set()
    for c in config.vm_classes:
        have = len(clones.get(c.name, []))
        if have >= c.min:
            continue
        n = min(c.min - have, budget.cap(c)[0])
        if n <= 0:
            continue
        budget.take(c, n)
        growing.add(c.name)
        actions.append(ScaleUp(ClassName(c.name), n, parent_for(c), (), "below minimum"))
        for i in range(n):
            upcoming.append(Bin(f"{c.name}-min-{i}", _class_allocatable(c, config), _class_kind(c.name)))

    # 4. Pending pods.
    pending = [p for p in snap.pods if p.pending_unschedulable]
    feasible_classes: dict[PodRef, list[VMClass]] = {}
    placeable: list[PodView] = []
    for pod in sorted(pending, key=lambda p: p.ref):
        ok = [c for c in config.vm_classes if fit(pod, _class_kind(c.name))]
        if not ok:
            why = _why_no_class(pod, config.vm_classes, config, fit)
            actions.append(
                Event("Pod", pod.ref.namespace, pod.ref.name, "NotTriggerScaleUp", why, "Warning")
            )
            continue
        feasible_classes[pod.ref] = ok
        placeable.append(pod)

    left = place(placeable, upcoming, fit)
    # Nodes and VMs the pending pods are counted on: not to be scaled down now.
    counted_on = {b.name for b in upcoming if b.placed}

    while left:
        best: tuple[tuple[float, int, str], VMClass, list[Bin], list[PodView]] | None = None
        for c in config.vm_classes:
            if memory.backoff_left(c.name, now) > 0:
                continue
            n, _ = budget.cap(c)
            pods_c = [p for p in left if c in feasible_classes[p.ref]]
            if n <= 0 or not pods_c:
                continue
            bins, _ = pack_new(pods_c, _new_bin(c, config), fit, n)
            placed = [p for b in bins for p in b.placed]
            if not placed:
                continue
            score = (c.price * len(bins) / len(placed), -len(placed), c.name)
            if best is None or score < best[0]:
                best = (score, c, bins, placed)
        if best is None:
            break
        _, c, bins, placed = best
        budget.take(c, len(bins))
        growing.add(c.name)
        refs = tuple(sorted(p.ref for p in placed))
        actions.append(ScaleUp(ClassName(c.name), len(bins), parent_for(c), refs))
        placed_refs = set(refs)
        left = [p for p in left if p.ref not in placed_refs]

    for pod in left:
        actions.append(
            Event("Pod", pod.ref.namespace, pod.ref.name, "NotTriggerScaleUp",
                  _why_not_now(feasible_classes[pod.ref], budget, memory, now))
        )

    # 5. Scale down.
    removable = {c.name: len(clones.get(c.name, [])) - c.min for c in config.vm_classes}
    candidates: list[tuple[float, VMView]] = []
    for vm in live:
        if vm.is_parent or not is_managed(vm, config) or vm.class_name in growing:
            continue
        since = memory.unneeded_since.get(vm.node_name)
        if since is None or now - since < config.scale_down_unneeded_s:
            continue
        if vm.name in counted_on or vm.node_name in counted_on:
            continue
        candidates.append((since, vm))
    for since, vm in sorted(candidates, key=lambda x: (x[0], x[1].name)):
        if removable.get(vm.class_name, 0) <= 0:
            continue
        removable[vm.class_name] -= 1
        why = f"node {vm.node_name} unneeded for {fmt_duration(now - since)}"
        actions.append(Cordon(vm.node_name))
        actions.append(Drain(vm.node_name))
        actions.append(ScaleDown(vm.name, why, vm.node_name))
        actions.append(Event("Node", "", vm.node_name, "ScaleDown", f"{why}; destroying VM {vm.name}"))

    # 6. Idle parents.
    if use_parents and parent_idle_pause_s > 0:
        cloning = {a.parent for a in actions if isinstance(a, ScaleUp) and a.parent is not None}
        for c in config.vm_classes:
            if not c.parent:
                continue
            for p in sorted(parents.get(c.name, []), key=lambda v: v.name):
                if p.phase != VMPhase.RUNNING or p.paused or p.name in cloning:
                    continue
                idle = now - memory.parent_last_used.get(p.name, now)
                if idle >= parent_idle_pause_s:
                    actions.append(PauseParent(p.name, idle))
    return actions


def _why_not_now(classes: list[VMClass], budget: Budget, memory: Memory, now: float) -> str:
    parts = []
    for c in classes:
        wait = memory.backoff_left(c.name, now)
        if wait > 0:
            retry = fmt_duration(math.ceil(wait))
            parts.append(f"{c.name}: in cooldown after a failed clone (retry in {retry})")
            continue
        n, why = budget.cap(c)
        if n <= 0:
            parts.append(f"{c.name}: {why} reached")
        else:
            parts.append(f"{c.name}: limits leave room for too few VMs")
    return "no VM class may grow: " + "; ".join(parts)
