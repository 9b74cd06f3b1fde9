"""Eviction: pods leave nodes that are lost, tainted NoExecute, or gone.

    every `period`:  list nodes (+ pods when needed) ──► plan(nodes, pods, now) ──► execute(actions)

Node lifecycle (`controller.node_lifecycle`) marks a silent node Ready=Unknown
and taints it `node.kubernetes.io/unreachable:NoExecute` with `time_added`.
This reconciler then decides, per pod bound to a node:

- node tainted NoExecute: the pod may stay for as long as it tolerates every
  such taint, counted from the taint's `time_added`. A pod with no toleration
  for `unreachable` (or `not-ready`) gets the default, `--pod-eviction-timeout`
  seconds (300, as Kubernetes' DefaultTolerationSeconds admission gives every
  pod); a pod that tolerates it without `tolerationSeconds` stays forever; any
  other NoExecute taint it does not tolerate evicts it at once. When time is up
  the pod is **evicted**: phase Failed, reason NodeLost (Evicted for other
  taints), Ready=False, and a deletion_timestamp with its grace period, all in
  one write. Being terminal and terminating, it no longer counts for its
  ReplicaSet, which replaces it elsewhere; if the agent comes back it stops the
  containers and finalizes the pod instead of running a duplicate.
- node gone (deleted, or its VM died and the VM manager removed it): once pods have
  been seen bound to the missing node for `gone_quarantine` (10 s: a pod created for a
  node that is about to register is not killed), the pod is evicted the same way and
  then deleted (nobody is left to finalize it).
- a NoExecute taint without `time_added` (set by hand) gets one, so that
  tolerations count from when it was first seen, not from the epoch.

Every write is one etcd transaction that also compares what the decision was
based on: the pod at the revision planned from, and the node at its revision
(or, for a gone node, still absent). A crash between any two writes leaves
nothing half-done: the next pass re-plans from what is stored.

Taint-based evictions wait `startup_grace` after a controller start (and after
a pass that found etcd unreachable), as node lifecycle does, so taints left from
before an outage are first cleared for nodes whose agents are back. And when
every node is unreachable at once, nothing is evicted (Kubernetes' "full
disruption"): that is far more likely a fault on our side of the network, or of
the control plane, than of all the nodes, and evicting would only make it worse.

Pods are listed only when some node carries a NoExecute taint, a node vanished
since the last pass, or a periodic sweep is due: a healthy cluster costs one
node list per period. Inside the controller both come from in-process informer
caches once they have synced (`node_cache`, `pod_cache`: the nodes hub's objects and
the shared pod informer), not from etcd: listing and decoding 5,000 nodes every 5 s
and every pod every sweep was ~8 % of the controller's CPU under the scheduling
bench (#17). A pass then still asks etcd for its revision, so an outage stops the
judging as before; a cache a little behind is safe because every write compares
the pod and node revisions it was planned from.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter

from controller.events import Events
from controller.kinds import NODES, PODS
from controller.node_lifecycle import NO_EXECUTE
from controller.pods import DEFAULT_GRACE_SECONDS, set_condition
from controller.resource import get_time, set_time
from controller.store import Compare, Delete, KeyValue, Put, Store, decode, encode
from cowpod.api.labels import NOT_READY_TAINT, UNREACHABLE_TAINT
from cowpod.api.phases import is_terminal
from cowpod.api.tolerations import tolerates
from cowpod.clock import Clock
from cowpod.errors import CowpodError, Unavailable
from cowpod.informer import ObjectCache
from cowpod.v1 import event_pb2, node_pb2, pod_pb2

log = logging.getLogger(__name__)

# Taints for which a pod that says nothing gets the default toleration.
DEFAULTED_TAINTS = frozenset({UNREACHABLE_TAINT, NOT_READY_TAINT})
DEFAULT_TOLERATION_SECONDS = 300.0
DEFAULT_PERIOD_SECONDS = 5.0
DEFAULT_SWEEP_SECONDS = 30.0
DEFAULT_GONE_QUARANTINE = 10.0
NODE_LOST = "NodeLost"
EVICTED = "Evicted"
COMPONENT = "node-lifecycle-controller"


# ---- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evict:
    """Mark the pod Failed (reason) and terminating; if the node is gone, also delete it."""

    namespace: str
    name: str
    uid: str
    node: str
    pod_revision: int
    node_revision: int  # 0 = the node is gone (the write requires it still absent)
    reason: str  # NodeLost | Evicted
    message: str


@dataclass(frozen=True)
class Collect:
    """Delete a pod that is already terminal or terminating on a node that is gone."""

    namespace: str
    name: str
    uid: str
    node: str
    pod_revision: int


@dataclass(frozen=True)
class StampTaints:
    """Give NoExecute taints without `time_added` the current time."""

    node: str
    node_revision: int


@dataclass(frozen=True)
class HoldEvictions:
    """Every node is unreachable at once: more likely our side (network, control plane) than
    all the nodes. Nothing is evicted for taints until some node is reachable again."""

    nodes: int


Action = Evict | Collect | StampTaints | HoldEvictions


# ---- pure rules -----------------------------------------------------------------------------------


def no_execute_taints(node: node_pb2.Node) -> list[node_pb2.Taint]:
    return [t for t in node.spec.taints if t.effect == NO_EXECUTE]


def allowed_seconds(pod: pod_pb2.Pod, taint: node_pb2.Taint, default_seconds: float) -> float:
    """How long `pod` may stay on a node with `taint` (NoExecute): 0 = not at all, inf = forever.

    Of several matching tolerations the shortest tolerationSeconds wins; if none of them
    sets one, the pod tolerates the taint forever (Kubernetes' getMinTolerationTime)."""
    matching = [t for t in pod.spec.tolerations if tolerates(t, taint)]
    if not matching:
        return default_seconds if taint.key in DEFAULTED_TAINTS else 0.0
    bounded = [max(float(t.toleration_seconds), 0.0) for t in matching if t.HasField("toleration_seconds")]
    return min(bounded) if bounded else math.inf


def eviction_time(pod: pod_pb2.Pod, taints: Iterable[node_pb2.Taint], default_seconds: float) -> float:
    """When the pod must go (epoch seconds); inf = never."""
    when = math.inf
    for taint in taints:
        when = min(when, get_time(taint.time_added) + allowed_seconds(pod, taint, default_seconds))
    return when


def _reason_for(taints: Sequence[node_pb2.Taint]) -> str:
    return NODE_LOST if any(t.key in DEFAULTED_TAINTS for t in taints) else EVICTED


def plan(nodes: Sequence[node_pb2.Node], pods: Sequence[pod_pb2.Pod], now: float, *,
         default_seconds: float = DEFAULT_TOLERATION_SECONDS, judge_taints: bool = True,
         gone: Set[str] | None = None) -> list[Action]:
    """Pure: which pods to evict or collect, and which taints to stamp.

    `gone`: the missing nodes that have been missing long enough to give up on (None: every
    node not in `nodes`); pods on other missing nodes are left alone for now."""
    actions: list[Action] = []
    by_name = {n.metadata.name: n for n in nodes}
    if judge_taints and nodes and all(
            any(t.key in DEFAULTED_TAINTS for t in no_execute_taints(n)) for n in nodes):
        actions.append(HoldEvictions(len(nodes)))
        judge_taints = False
    unstamped: set[str] = set()
    for n in nodes:
        if any(not t.HasField("time_added") for t in no_execute_taints(n)):
            unstamped.add(n.metadata.name)
            actions.append(StampTaints(n.metadata.name, n.metadata.resource_version))
    for pod in pods:
        node_name = pod.spec.node_name
        if not node_name:
            continue
        meta = pod.metadata
        node = by_name.get(node_name)
        done = meta.HasField("deletion_timestamp") or is_terminal(pod.status.phase)
        if node is None:
            if gone is not None and node_name not in gone:
                continue
            if done:
                actions.append(Collect(meta.namespace, meta.name, meta.uid, node_name, meta.resource_version))
            else:
                actions.append(Evict(meta.namespace, meta.name, meta.uid, node_name, meta.resource_version, 0,
                                     NODE_LOST, f"node {node_name} no longer exists"))
            continue
        if done or not judge_taints or node_name in unstamped:
            continue
        taints = no_execute_taints(node)
        if not taints:
            continue
        when = eviction_time(pod, taints, default_seconds)
        if now < when:
            continue
        reason = _reason_for(taints)
        names = ", ".join(f"{t.key}:{t.effect}" for t in taints)
        if reason == NODE_LOST:
            since = now - min(get_time(t.time_added) for t in taints if t.key in DEFAULTED_TAINTS)
            state = "unreachable" if any(t.key == UNREACHABLE_TAINT for t in taints) else "not ready"
            message = f"node {node_name} is {state} (tainted {since:.0f}s ago: {names})"
        else:
            message = f"node {node_name} has taint(s) {names} that the pod does not tolerate (any longer)"
        actions.append(Evict(meta.namespace, meta.name, meta.uid, node_name, meta.resource_version,
                             node.metadata.resource_version, reason, message))
    return actions


# Pods decoded between two turns of the event loop while a pass reads every pod.
DECODE_SLICE = 2_000


async def cached_pods_plan_reads(pods: Iterable[pod_pb2.Pod], nodes: Set[str],
                                 tainted: Set[str]) -> list[pod_pb2.Pod]:
    """`pods_plan_reads` over an informer's pods (already decoded, shared: read only)."""
    out: list[pod_pb2.Pod] = []
    for i, pod in enumerate(list(pods)):
        if i and i % (10 * DECODE_SLICE) == 0:
            await asyncio.sleep(0)
        node = pod.spec.node_name
        if node and (node not in nodes or node in tainted):
            out.append(pod)
    return out


async def pods_plan_reads(kvs: Sequence[KeyValue], nodes: Set[str], tainted: Set[str]) -> list[pod_pb2.Pod]:
    """The pods `plan` can act on: bound to a node that is missing or has NoExecute taints.

    With 150,000 pods a pass that kept every decoded pod held ~400 MB for its length and
    blocked the event loop for a second (every API call waited); the others are dropped as
    soon as their node is read, and the loop gets a turn every `DECODE_SLICE` pods."""
    out: list[pod_pb2.Pod] = []
    for i, kv in enumerate(kvs):
        if i and i % DECODE_SLICE == 0:
            await asyncio.sleep(0)
        pod = decode(pod_pb2.Pod, kv.value, kv.mod_revision)
        node = pod.spec.node_name
        if node and (node not in nodes or node in tainted):
            out.append(pod)
    return out


def evicted_pod(pod: pod_pb2.Pod, reason: str, message: str, now: float) -> pod_pb2.Pod:
    """The pod as the eviction writes it: Failed, not Ready, terminating with its grace."""
    new = pod_pb2.Pod()
    new.CopyFrom(pod)
    new.status.phase = "Failed"
    new.status.reason = reason
    new.status.message = message
    set_condition(new.status.conditions, "Ready", "False", reason, message, now)
    if not new.metadata.HasField("deletion_timestamp"):
        set_time(new.metadata.deletion_timestamp, now)
        grace = (pod.spec.termination_grace_period_seconds
                 if pod.spec.HasField("termination_grace_period_seconds") else DEFAULT_GRACE_SECONDS)
        new.metadata.deletion_grace_period_seconds = grace
    return new


# ---- executor -------------------------------------------------------------------------------------


class EventSink(Protocol):
    async def pod_event(self, pod: pod_pb2.Pod, reason: str, message: str) -> None: ...


class StoredEvents:
    """`EventSink` onto the controller's own Events domain (no gRPC hop in-process)."""

    def __init__(self, events: Events) -> None:
        self.events = events

    async def pod_event(self, pod: pod_pb2.Pod, reason: str, message: str) -> None:
        m = pod.metadata
        ev = event_pb2.Event(
            involved_object=event_pb2.ObjectReference(kind="Pod", namespace=m.namespace, name=m.name,
                                                      uid=m.uid),
            reason=reason, message=message, type="Warning",
            source=event_pb2.EventSource(component=COMPONENT),
        )
        ev.metadata.namespace = m.namespace
        await self.events.create(ev)


class Evictor:
    """The reconciler: list, plan, execute every `period` seconds of the injected clock."""

    def __init__(self, store: Store, clock: Clock, *,
                 default_toleration_seconds: float = DEFAULT_TOLERATION_SECONDS,
                 period: float = DEFAULT_PERIOD_SECONDS, startup_grace: float = 40.0,
                 sweep_seconds: float = DEFAULT_SWEEP_SECONDS,
                 gone_quarantine: float = DEFAULT_GONE_QUARANTINE, events: EventSink | None = None,
                 registry: CollectorRegistry | None = None,
                 node_cache: ObjectCache[node_pb2.Node] | None = None,
                 pod_cache: ObjectCache[pod_pb2.Pod] | None = None) -> None:
        """`node_cache`/`pod_cache`: informers to read instead of etcd once synced (module doc)."""
        self.store = store
        self.node_cache = node_cache
        self.pod_cache = pod_cache
        self.clock = clock
        self.default_seconds = default_toleration_seconds
        self.period = period
        self.startup_grace = startup_grace
        self.sweep_seconds = sweep_seconds
        self.gone_quarantine = gone_quarantine
        self.events = events
        self.evictions = Counter("cowpod_controller_evictions", "Pods evicted from lost or tainted nodes",
                                 ["reason"], registry=registry or CollectorRegistry())
        self.collected = Counter("cowpod_controller_pods_collected",
                                 "Pods deleted because their node is gone",
                                 registry=registry or CollectorRegistry())
        self._started = clock.monotonic()
        self._known_nodes: set[str] | None = None
        self._next_sweep = 0.0
        self._holding = False
        self._store_down = False
        # Missing node -> when this process first saw pods bound to it (monotonic).
        self._missing_since: dict[str, float] = {}

    async def run(self) -> None:
        self._started = self.clock.monotonic()
        while True:
            await self.clock.sleep(self.period)
            try:
                await self.reconcile_once()
            except Unavailable as err:
                if not self._store_down:
                    log.warning("eviction pass failed: %s; taints judged %.0fs after it answers",
                                err, self.startup_grace)
                self._store_down = True
            except CowpodError as err:
                log.warning("eviction pass failed: %s", err)

    async def reconcile_once(self) -> list[Action]:
        nodes: list[node_pb2.Node]
        if self.node_cache is not None and self.node_cache.synced:
            await self.store.current_revision()  # etcd unreachable: raises, as a list would
            nodes = list(self.node_cache.cache.values())
        else:
            nodes, _ = await self.store.list(NODES.prefix(), node_pb2.Node)
        mono = self.clock.monotonic()
        if self._store_down:  # back after an outage: agents could not heartbeat either
            self._store_down = False
            self._started = mono
        judge = mono - self._started >= self.startup_grace
        names = {n.metadata.name for n in nodes}
        vanished = self._known_nodes is None or bool(self._known_nodes - names)
        self._known_nodes = names
        tainted = {n.metadata.name for n in nodes if no_execute_taints(n)}
        sweep = mono >= self._next_sweep
        pods: list[pod_pb2.Pod] = []
        if vanished or sweep or (tainted and judge) or self._missing_since:
            if self.pod_cache is not None and self.pod_cache.synced:
                pods = await cached_pods_plan_reads(self.pod_cache.cache.values(), names, tainted)
            else:
                kvs, _ = await self.store.list_raw(PODS.prefix())
                pods = await pods_plan_reads(kvs, names, tainted)
                del kvs
            self._next_sweep = mono + self.sweep_seconds
            missing = {p.spec.node_name for p in pods if p.spec.node_name and p.spec.node_name not in names}
            self._missing_since = {n: self._missing_since.get(n, mono) for n in missing}
        gone = {n for n, since in self._missing_since.items() if mono - since >= self.gone_quarantine}
        actions = plan(nodes, pods, self.clock.now(), default_seconds=self.default_seconds,
                       judge_taints=judge, gone=gone)
        holding = any(isinstance(a, HoldEvictions) for a in actions)
        if self._holding and not holding:
            log.info("a node is reachable again: evictions resume")
        by_key = {(p.metadata.namespace, p.metadata.name): p for p in pods}
        nodes_by_name = {n.metadata.name: n for n in nodes}
        for a in actions:
            try:
                if isinstance(a, Evict):
                    await self._evict(a, by_key[(a.namespace, a.name)])
                elif isinstance(a, Collect):
                    await self._collect(a.namespace, a.name, a.node, a.pod_revision)
                elif isinstance(a, HoldEvictions):
                    if not self._holding:
                        log.warning("all %d nodes are unreachable: suspecting the network or the control "
                                    "plane, not the nodes; holding evictions until one is back", a.nodes)
                else:
                    await self._stamp(nodes_by_name[a.node])
            except CowpodError as err:
                log.warning("eviction action %s failed: %s; retried next pass", a, err)
        self._holding = holding
        return actions

    async def _evict(self, a: Evict, pod: pod_pb2.Pod) -> None:
        now = self.clock.now()
        new = evicted_pod(pod, a.reason, a.message, now)
        pkey, nkey = PODS.key(a.namespace, a.name), NODES.key("", a.node)
        node_guard = Compare.at(nkey, a.node_revision) if a.node_revision else Compare.absent(nkey)
        res = await self.store.txn([Compare.at(pkey, a.pod_revision), node_guard], [Put(pkey, encode(new))])
        if not res.succeeded:
            log.info("eviction of pod %s/%s skipped: it or node %s changed meanwhile",
                     a.namespace, a.name, a.node)
            return
        self.evictions.labels(a.reason).inc()
        log.warning("evicted pod %s/%s from node %s: %s", a.namespace, a.name, a.node, a.message)
        if self.events is not None:
            try:
                await self.events.pod_event(new, a.reason, f"Marking for deletion: {a.message}")
            except CowpodError as err:
                log.debug("eviction event not recorded: %s", err)
        if not a.node_revision:
            await self._collect(a.namespace, a.name, a.node, res.revision)

    async def _collect(self, namespace: str, name: str, node: str, revision: int) -> None:
        pkey = PODS.key(namespace, name)
        res = await self.store.txn([Compare.at(pkey, revision), Compare.absent(NODES.key("", node))],
                                   [Delete(pkey)])
        if res.succeeded:
            self.collected.inc()
            log.info("deleted pod %s/%s: its node %s is gone", namespace, name, node)

    async def _stamp(self, node: node_pb2.Node) -> None:
        new = node_pb2.Node()
        new.CopyFrom(node)
        now = self.clock.now()
        for t in new.spec.taints:
            if t.effect == NO_EXECUTE and not t.HasField("time_added"):
                set_time(t.time_added, now)
        key = NODES.key("", node.metadata.name)
        await self.store.txn([Compare.at(key, node.metadata.resource_version)], [Put(key, encode(new))])
