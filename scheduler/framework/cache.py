"""The scheduler cache: nodes, the pods on them, and the arrays filters read.

Model. One row per node in a dense table; each resource is a numpy column
(allocatable and requested CPU, memory, pod count, plus the "non-zero"
requests scoring uses), so `NodeResourcesFit` and the allocation scores are a
handful of vector operations over every node instead of a Python loop. A
deleted node's row is filled with the last row (swap-remove), so columns stay
dense; that changes row numbers, which is why anything derived from rows is
keyed by `generation`.

`generation` bumps whenever something a *static* filter reads changes (a node
added, removed, relabelled, tainted, cordoned, turning Ready or NotReady).
Static results (which nodes a pod's node selector or tolerations admit) are
memoised per generation, so pods of one workload pay for them once.

Snapshot. A scheduling cycle is synchronous: nothing else runs on the event
loop while filters and scores look at the table, so the cache *is* the
snapshot and no copy is taken. Only binding awaits, and by then the pod is
already assumed.

Assume / forget. The moment the scheduler picks a node it `assume`s the pod
there, so the next pod sees the capacity as used; if the bind fails it
`forget`s it. When the bound pod comes back through the watch the assumption
is confirmed (or moved, if another scheduler bound it elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from scheduler.framework.events import Action
from scheduler.framework.types import (
    HostPort,
    LabelSelector,
    NodeInfo,
    NodeName,
    PodInfo,
    PodUID,
    Resources,
)

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

T = TypeVar("T")


class NodeView(Protocol):
    """What a per-node plugin may read about one node (read-only)."""

    @property
    def info(self) -> NodeInfo: ...
    @property
    def requested(self) -> Resources: ...
    @property
    def nonzero_requested(self) -> Resources: ...
    @property
    def pods(self) -> Mapping[PodUID, PodInfo]: ...
    @property
    def ports(self) -> list[HostPort]: ...


class NodeState:
    """A node's row: its static info and the pods (bound or assumed) on it."""

    __slots__ = ("info", "nonzero_requested", "pods", "ports", "requested", "row")

    def __init__(self, info: NodeInfo, row: int) -> None:
        self.info = info
        self.row = row
        self.pods: dict[PodUID, PodInfo] = {}
        self.requested = Resources()
        self.nonzero_requested = Resources()
        self.ports: list[HostPort] = []

    def add(self, pod: PodInfo) -> None:
        self.pods[pod.uid] = pod
        self.requested = self.requested + pod.requests
        self.nonzero_requested = self.nonzero_requested + Resources(pod.nonzero_cpu, pod.nonzero_memory, 1)
        self.ports.extend(pod.host_ports)

    def remove(self, pod: PodInfo) -> None:
        if self.pods.pop(pod.uid, None) is None:
            return
        self.requested = self.requested - pod.requests
        self.nonzero_requested = self.nonzero_requested - Resources(pod.nonzero_cpu, pod.nonzero_memory, 1)
        for p in pod.host_ports:
            self.ports.remove(p)


def node_diff(old: NodeInfo, new: NodeInfo) -> Action:
    """What changed on a node (Action.NONE for a heartbeat that changed nothing we read)."""
    ch = Action.NONE
    if old.allocatable != new.allocatable:
        ch |= Action.UPDATE_ALLOCATABLE
    if dict(old.labels) != dict(new.labels):
        ch |= Action.UPDATE_LABEL
    if old.taints != new.taints:
        ch |= Action.UPDATE_TAINT
    if old.ready != new.ready or old.unschedulable != new.unschedulable:
        ch |= Action.UPDATE_CONDITION
    return ch


# Changes that invalidate memoised static filter results.
_STATIC = Action.ADD | Action.DELETE | Action.UPDATE_LABEL | Action.UPDATE_TAINT | Action.UPDATE_CONDITION

_COLUMNS = (
    "alloc_cpu", "alloc_mem", "alloc_pods", "alloc_disk",
    "req_cpu", "req_mem", "req_pods", "req_disk",
    "nz_cpu", "nz_mem",
)


@dataclass
class _PodEntry:
    pod: PodInfo
    node: NodeName
    assumed: bool


class Cache:
    """Nodes and assigned pods, as rows and numpy columns (see module doc)."""

    def __init__(self, initial_capacity: int = 64) -> None:
        self._cap = initial_capacity
        self.alloc_cpu = np.zeros(self._cap, np.int64)
        self.alloc_mem = np.zeros(self._cap, np.int64)
        self.alloc_pods = np.zeros(self._cap, np.int64)
        self.alloc_disk = np.zeros(self._cap, np.int64)  # ephemeral-storage bytes
        self.req_cpu = np.zeros(self._cap, np.int64)
        self.req_mem = np.zeros(self._cap, np.int64)
        self.req_pods = np.zeros(self._cap, np.int64)
        self.req_disk = np.zeros(self._cap, np.int64)
        self.nz_cpu = np.zeros(self._cap, np.int64)
        self.nz_mem = np.zeros(self._cap, np.int64)
        self.states: list[NodeState] = []
        self._by_name: dict[NodeName, NodeState] = {}
        self._pods: dict[PodUID, _PodEntry] = {}
        # Bound pods whose node we have not seen yet.
        self._orphans: dict[NodeName, dict[PodUID, PodInfo]] = {}
        # Per (namespace, selector): matching pods per row, for topology spread.
        self._counters: dict[tuple[str, LabelSelector], IntArray] = {}
        # Pods with required podAntiAffinity: every new pod is checked against them
        # (InterPodAffinity's symmetric rule), so they are kept apart from the rest.
        self._anti: set[PodUID] = set()
        # How many placed pods have each priority (see `lowest_priority`).
        self._priorities: dict[int, int] = {}
        self.generation = 0
        self._memo: dict[Hashable, Any] = {}
        self._memo_generation = 0

    # ---- reading -----------------------------------------------------------------

    @property
    def n(self) -> int:
        return len(self.states)

    def col(self, name: str) -> IntArray:
        """The live part of a column (a view, not a copy)."""
        arr: IntArray = getattr(self, name)
        return arr[: len(self.states)]

    def node(self, name: str) -> NodeState | None:
        return self._by_name.get(NodeName(name))

    def nodes(self) -> Iterator[NodeState]:
        return iter(self.states)

    def pod(self, uid: PodUID) -> PodInfo | None:
        e = self._pods.get(uid)
        return e.pod if e else None

    def pod_node(self, uid: PodUID) -> NodeName | None:
        e = self._pods.get(uid)
        return e.node if e else None

    def is_assumed(self, uid: PodUID) -> bool:
        e = self._pods.get(uid)
        return bool(e and e.assumed)

    def pod_count(self) -> int:
        return len(self._pods)

    def anti_affinity_pods(self) -> Iterator[tuple[PodInfo, NodeState]]:
        """Placed pods that have required podAntiAffinity terms, with their node."""
        for uid in self._anti:
            e = self._pods.get(uid)
            s = self._by_name.get(e.node) if e is not None else None
            if e is not None and s is not None:
                yield e.pod, s

    def memo(self, key: Hashable, compute: Callable[[], T]) -> T:
        """`compute()` once per key and node generation (static results only)."""
        if self._memo_generation != self.generation:
            self._memo.clear()
            self._memo_generation = self.generation
        try:
            return self._memo[key]  # type: ignore[no-any-return]
        except KeyError:
            v = self._memo[key] = compute()
            return v

    def domains(self, topology_key: str) -> tuple[IntArray, list[str]]:
        """Per row, the index of its value of `topology_key` (-1: no such label);
        and the distinct values, by index."""

        def compute() -> tuple[IntArray, list[str]]:
            ids = np.full(self.n, -1, np.int64)
            seen: dict[str, int] = {}
            for s in self.states:
                v = s.info.labels.get(topology_key)
                if v is not None:
                    ids[s.row] = seen.setdefault(v, len(seen))
            return ids, list(seen)

        return self.memo(("domains", topology_key), compute)

    def matching_pods(self, namespace: str, selector: LabelSelector) -> IntArray:
        """Per row, how many pods of `namespace` matching `selector` it holds.

        The first call for a selector scans every pod; afterwards the counts
        follow pod adds and removes incrementally."""
        key = (namespace, selector)
        arr = self._counters.get(key)
        if arr is None:
            arr = np.zeros(self._cap, np.int64)
            for s in self.states:
                arr[s.row] = sum(
                    1 for p in s.pods.values() if p.namespace == namespace and selector.matches(p.labels)
                )
            self._counters[key] = arr
        return arr[: self.n]

    # ---- nodes -------------------------------------------------------------------

    def _grow(self) -> None:
        self._cap *= 2
        for c in _COLUMNS:
            old = getattr(self, c)
            new = np.zeros(self._cap, np.int64)
            new[: len(old)] = old
            setattr(self, c, new)
        for k, old in list(self._counters.items()):
            new = np.zeros(self._cap, np.int64)
            new[: len(old)] = old
            self._counters[k] = new

    def _write_row(self, s: NodeState) -> None:
        r = s.row
        a = s.info.allocatable
        self.alloc_cpu[r] = a.cpu_millis
        self.alloc_mem[r] = a.memory_bytes
        self.alloc_pods[r] = a.pods
        self.alloc_disk[r] = a.ephemeral_storage_bytes
        self.req_cpu[r] = s.requested.cpu_millis
        self.req_mem[r] = s.requested.memory_bytes
        self.req_pods[r] = s.requested.pods
        self.req_disk[r] = s.requested.ephemeral_storage_bytes
        self.nz_cpu[r] = s.nonzero_requested.cpu_millis
        self.nz_mem[r] = s.nonzero_requested.memory_bytes

    def set_node(self, info: NodeInfo) -> Action:
        """Add or update a node; returns what changed (NONE for a no-op heartbeat)."""
        s = self._by_name.get(info.name)
        if s is None:
            if self.n == self._cap:
                self._grow()
            s = NodeState(info, self.n)
            self.states.append(s)
            self._by_name[info.name] = s
            for p in self._orphans.pop(info.name, {}).values():
                self._place(p, s)
            self._write_row(s)
            self.generation += 1
            return Action.ADD
        change = node_diff(s.info, info)
        s.info = info
        if change:
            self._write_row(s)
            if change & _STATIC:
                self.generation += 1
        return change

    def remove_node(self, name: str) -> bool:
        s = self._by_name.pop(NodeName(name), None)
        if s is None:
            return False
        # Its pods become orphans until the node returns or they are deleted.
        if s.pods:
            self._orphans[s.info.name] = dict(s.pods)
        last = self.states.pop()
        if last is not s:
            hole = s.row
            last.row = hole
            self.states[hole] = last
            for c in _COLUMNS:
                arr = getattr(self, c)
                arr[hole] = arr[self.n]
            for arr in self._counters.values():
                arr[hole] = arr[self.n]
        for arr in self._counters.values():
            arr[self.n] = 0
        self.generation += 1
        return True

    # ---- pods --------------------------------------------------------------------

    def _place(self, pod: PodInfo, s: NodeState) -> None:
        s.add(pod)
        self._write_row(s)
        for (ns, sel), arr in self._counters.items():
            if ns == pod.namespace and sel.matches(pod.labels):
                arr[s.row] += 1

    def _unplace(self, pod: PodInfo, node: NodeName) -> None:
        s = self._by_name.get(node)
        if s is None:
            orphans = self._orphans.get(node)
            if orphans is not None:
                orphans.pop(pod.uid, None)
                if not orphans:
                    del self._orphans[node]
            return
        if pod.uid not in s.pods:
            return
        s.remove(pod)
        self._write_row(s)
        for (ns, sel), arr in self._counters.items():
            if ns == pod.namespace and sel.matches(pod.labels):
                arr[s.row] -= 1

    def _count_priority(self, priority: int, delta: int) -> None:
        n = self._priorities.get(priority, 0) + delta
        if n:
            self._priorities[priority] = n
        else:
            del self._priorities[priority]

    def lowest_priority(self) -> int | None:
        """The lowest priority of any placed pod (None: no pods), so preemption can tell
        at once that a pod has nothing below it (every pod at 0, the usual case)."""
        return min(self._priorities, default=None)

    def _put(self, pod: PodInfo, node: NodeName, assumed: bool) -> None:
        old = self._pods.get(pod.uid)
        if old is not None:
            self._unplace(old.pod, old.node)
            self._count_priority(old.pod.priority, -1)
        self._pods[pod.uid] = _PodEntry(pod, node, assumed)
        self._count_priority(pod.priority, 1)
        if pod.pod_anti_affinity:
            self._anti.add(pod.uid)
        else:
            self._anti.discard(pod.uid)
        s = self._by_name.get(node)
        if s is not None:
            self._place(pod, s)
        else:
            self._orphans.setdefault(node, {})[pod.uid] = pod

    def assume(self, pod: PodInfo, node: str) -> None:
        """Count `pod` on `node` now, before the bind is committed."""
        self._put(pod, NodeName(node), assumed=True)

    def forget(self, uid: PodUID) -> None:
        """Undo `assume` after a failed bind (no-op if the watch already confirmed it)."""
        e = self._pods.get(uid)
        if e is not None and e.assumed:
            del self._pods[uid]
            self._count_priority(e.pod.priority, -1)
            self._anti.discard(uid)
            self._unplace(e.pod, e.node)

    def confirm(self, uid: PodUID, node: str) -> bool:
        """The watch shows an assumed pod bound where we put it: keep it, no longer assumed.
        False if it is not assumed there (the caller then decodes and `set_pod`s it)."""
        e = self._pods.get(uid)
        if e is None or not e.assumed or e.node != node:
            return False
        e.assumed = False
        return True

    def set_terminating(self, uid: PodUID, terminating: bool) -> bool:
        """Mark a placed pod as leaving (or not) without moving it: preemption does this the
        moment it deletes a victim, so the next cycle does not pick it again before the
        watch shows its deletionTimestamp. False if the pod is not placed on a known node."""
        e = self._pods.get(uid)
        s = self._by_name.get(e.node) if e is not None else None
        if e is None or s is None or uid not in s.pods:
            return False
        if e.pod.terminating != terminating:
            e.pod = replace(e.pod, terminating=terminating)
            s.pods[uid] = e.pod
        return True

    def set_pod(self, pod: PodInfo) -> None:
        """A bound pod from the watch: add, update, or confirm an assumption."""
        if pod.terminal:
            self.remove_pod(pod.uid)
            return
        self._put(pod, NodeName(pod.node_name), assumed=False)

    def remove_pod(self, uid: PodUID) -> bool:
        e = self._pods.pop(uid, None)
        if e is None:
            return False
        self._count_priority(e.pod.priority, -1)
        self._anti.discard(uid)
        self._unplace(e.pod, e.node)
        return True
