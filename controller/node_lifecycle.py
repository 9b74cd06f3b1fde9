"""Node lifecycle: notice nodes whose agent stopped heartbeating, and their return.

    every `period`:  list nodes + node leases ──► plan(nodes, leases, now, grace) ──► execute(actions)

A node whose lease (`cowpod-node-lease/<node>`) was last renewed more than
`grace` seconds ago (default 40, `--node-monitor-grace`) gets condition
Ready=Unknown and the taint `node.kubernetes.io/unreachable:NoExecute`; the
scheduler stops placing pods there. When the lease is renewed again the taint is
removed and Ready=Unknown becomes Ready=True (a Ready=False the agent reported
itself is kept).

A node whose agent heartbeats but reports Ready=False gets the taint
`node.kubernetes.io/not-ready:NoExecute`, as Kubernetes does; it is removed
when the agent reports Ready=True again. The two taints never coexist: a
not-ready node that then falls silent has its not-ready taint swapped for
unreachable. The eviction reconciler evicts on either per the pods' tolerations.

A node whose VM is deliberately paused (`spec.paused` and phase Paused: e.g.
an idle warm parent the autoscaler quiesced) cannot heartbeat — its agent is
frozen with it — but it is not lost: it gets Ready=Unknown with reason
`VMPaused` and NO NoExecute taint (any it had is removed), so its pods are
not evicted and no NodeLost churn follows; the scheduler places nothing new on
it (it is not Ready). When the VM is resumed the condition turns
Ready=Unknown/`VMResumed`, stamped now: the agent gets a grace period from
that moment, and its first heartbeat (which reports Ready=True itself) makes
the node normal again; an agent that stays silent for `grace` after the
resume is marked unreachable as usual.

Renew times are written by this controller's clock, so agents' clocks never
matter. After a controller start we wait one grace period before judging, so
agents that could not heartbeat while we were down are not all marked lost; the
same after a pass that found the store (etcd) unreachable.

Cost: a pass runs over every node every `period` (5,000 nodes: ~80 ms of CPU a pass
when it listed and decoded every node and lease from etcd, ~7 % of the controller's
CPU with an idle fleet heartbeating). Inside the controller the nodes come from the
nodes hub's informer once it has synced (`node_cache`, as the evictor's), not from
etcd; a node there may be a moment behind the store, which is what a list taken a
moment earlier would show: every write is a `guaranteed_update` whose `apply_*`
re-checks the stored node. A node object the informer still holds since the last pass
is not read again (`NodeFacts`: its taints and conditions; a change arrives as a new
object). The leases are still read from etcd every pass (the renewals are the truth, and
an etcd outage still stops the judging), but a lease whose mod revision has not moved
since the last pass is not decoded again.

Seam for eviction (a later issue): pods on a node tainted NoExecute that do
not tolerate the taint should be deleted after their tolerationSeconds. That
will be a second pure planner, `plan_evictions(nodes, pods, now)`, executed by
the same loop; nothing here needs to change for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass

from controller.kinds import LEASES, NODE_LEASE_NAMESPACE, NODES, VMS
from controller.metrics import Metrics
from controller.pods import set_condition
from controller.resource import get_time, set_time
from controller.store import Store, decode, guaranteed_update
from cowpod.api.labels import NOT_READY_TAINT, UNREACHABLE_TAINT
from cowpod.clock import Clock
from cowpod.errors import CowpodError, NotFound, Unavailable
from cowpod.informer import ObjectCache
from cowpod.v1 import lease_pb2, meta_pb2, node_pb2, vm_pb2

log = logging.getLogger(__name__)

NO_EXECUTE = "NoExecute"
DEFAULT_GRACE_SECONDS = 40.0
DEFAULT_PERIOD_SECONDS = 5.0
VM_PAUSED = "VMPaused"
VM_RESUMED = "VMResumed"


@dataclass(frozen=True)
class MarkUnreachable:
    node: str
    silent_for: float  # seconds since the last renewal we know of


@dataclass(frozen=True)
class MarkReachable:
    node: str


@dataclass(frozen=True)
class MarkNotReady:
    """The agent heartbeats but reports Ready=False: taint not-ready:NoExecute."""

    node: str


@dataclass(frozen=True)
class MarkReady:
    """The agent reports Ready=True again: remove the not-ready taint."""

    node: str


@dataclass(frozen=True)
class MarkPaused:
    """Its VM is paused on purpose: Ready=Unknown (VMPaused), no NoExecute taints."""

    node: str


@dataclass(frozen=True)
class MarkResumed:
    """Its VM was resumed: Ready=Unknown (VMResumed) from now, awaiting the agent's heartbeat."""

    node: str


Action = MarkUnreachable | MarkReachable | MarkNotReady | MarkReady | MarkPaused | MarkResumed


def ready_status(node: node_pb2.Node) -> str:
    for c in node.status.conditions:
        if c.type == "Ready":
            return str(c.status)
    return ""


def ready_condition(node: node_pb2.Node) -> meta_pb2.Condition | None:
    for c in node.status.conditions:
        if c.type == "Ready":
            return c
    return None


def ready_reason(node: node_pb2.Node) -> str:
    c = ready_condition(node)
    return str(c.reason) if c is not None else ""


def paused_nodes(vms: Iterable[vm_pb2.VM]) -> frozenset[str]:
    """Nodes whose VM is paused on purpose: spec.paused and the VM manager reports it frozen.
    (A VM only momentarily paused by its provider, e.g. for a snapshot, is not.)"""
    return frozenset(
        vm.status.node_name or vm.metadata.name
        for vm in vms
        if vm.spec.paused and vm.status.phase == "Paused" and not vm.metadata.HasField("deletion_timestamp")
    )


def has_taint(node: node_pb2.Node, key: str) -> bool:
    return any(t.key == key and t.effect == NO_EXECUTE for t in node.spec.taints)


def has_unreachable_taint(node: node_pb2.Node) -> bool:
    return has_taint(node, UNREACHABLE_TAINT)


def _add_taint(node: node_pb2.Node, key: str, now: float) -> None:
    t = node.spec.taints.add(key=key, effect=NO_EXECUTE)
    set_time(t.time_added, now)


def _remove_taint(node: node_pb2.Node, key: str) -> None:
    kept = [t for t in node.spec.taints if not (t.key == key and t.effect == NO_EXECUTE)]
    del node.spec.taints[:]
    node.spec.taints.extend(kept)


def last_renewal(node: node_pb2.Node, lease: lease_pb2.Lease | None) -> float:
    """When we last heard from the node: its lease's renew time, else its creation."""
    if lease is not None and lease.spec.HasField("renew_time"):
        return get_time(lease.spec.renew_time)
    return get_time(node.metadata.creation_timestamp)


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What `plan` asks of a node, read in one walk of its taints and conditions
    (`node_facts`): the answers of `has_taint`, `ready_status`, `ready_reason` and
    `ready_condition` as `plan` uses them."""

    name: str
    created: float  # its creation time: "heard from" for a node without a renewed lease
    tainted: bool  # the unreachable NoExecute taint
    not_ready_tainted: bool  # the not-ready NoExecute taint
    ready: str  # the first Ready condition's status ("" without one)
    reason: str  # its reason when the status is Unknown, else ""
    resumed_at: float  # its last probe time when the reason is VMResumed, else 0


def node_facts(node: node_pb2.Node) -> NodeFacts:
    tainted = not_ready_tainted = False
    for t in node.spec.taints:
        if t.effect == NO_EXECUTE:
            key = t.key
            if key == UNREACHABLE_TAINT:
                tainted = True
            elif key == NOT_READY_TAINT:
                not_ready_tainted = True
    ready = reason = ""
    resumed_at = 0.0
    for c in node.status.conditions:
        if c.type == "Ready":
            ready = str(c.status)
            if ready == "Unknown":
                reason = str(c.reason)
                if reason == VM_RESUMED:
                    resumed_at = get_time(c.last_probe_time)
            break
    meta = node.metadata
    return NodeFacts(meta.name, get_time(meta.creation_timestamp), tainted, not_ready_tainted, ready,
                     reason, resumed_at)


def renewed_at(lease: lease_pb2.Lease) -> float | None:
    """The lease's renew time, None when it has none (`last_renewal` then takes the node's
    creation)."""
    return get_time(lease.spec.renew_time) if lease.spec.HasField("renew_time") else None


def plan(nodes: Sequence[node_pb2.Node], leases: Mapping[str, lease_pb2.Lease], now: float,
         grace: float = DEFAULT_GRACE_SECONDS, paused: Set[str] = frozenset()) -> list[Action]:
    """Pure: which nodes must be marked unreachable, which are back, and which heartbeat
    but say they are not ready (or ready again); `paused` names nodes whose VM is
    paused on purpose (`paused_nodes`). One action per node per pass: a node
    back from silence is first made reachable, and judged on its Ready next pass."""
    renewed: dict[str, float] = {}
    for name, lease in leases.items():
        at = renewed_at(lease)
        if at is not None:
            renewed[name] = at
    return plan_facts([node_facts(n) for n in nodes], renewed, now, grace, paused)


def plan_facts(nodes: Iterable[NodeFacts], renewed: Mapping[str, float], now: float,
               grace: float = DEFAULT_GRACE_SECONDS, paused: Set[str] = frozenset()) -> list[Action]:
    """`plan` over each node's facts and the renew time of each node's lease (by node name;
    none for a node without a lease or whose lease has no renew time).

    It runs over every node every period; asking `has_taint`, `ready_status` and
    `ready_reason` of 5,000 nodes took 26 ms a pass, so the reconciler keeps each
    node's facts for as long as its informer holds the same (read-only) object."""
    actions: list[Action] = []
    for f in nodes:
        name = f.name
        heard = renewed.get(name, f.created)
        tainted = f.tainted
        not_ready_tainted = f.not_ready_tainted
        ready = f.ready
        reason = f.reason
        if name in paused:
            if reason != VM_PAUSED or tainted or not_ready_tainted:
                actions.append(MarkPaused(name))
            continue
        if reason == VM_PAUSED:
            actions.append(MarkResumed(name))
            continue
        if reason == VM_RESUMED:
            resumed_at = f.resumed_at
            if now - max(heard, resumed_at) > grace:
                actions.append(MarkUnreachable(name, now - heard))
            elif heard > resumed_at:
                actions.append(MarkReachable(name))
            continue  # else: resumed a moment ago; the agent's heartbeat is on its way
        silent = now - heard
        if silent > grace:
            if not tainted or ready != "Unknown" or not_ready_tainted:
                actions.append(MarkUnreachable(name, silent))
        elif tainted or ready == "Unknown":
            actions.append(MarkReachable(name))
        elif ready == "False" and not not_ready_tainted:
            actions.append(MarkNotReady(name))
        elif ready == "True" and not_ready_tainted:
            actions.append(MarkReady(name))
    return actions


def apply_unreachable(node: node_pb2.Node, silent_for: float, now: float) -> node_pb2.Node | None:
    changed = False
    if ready_status(node) != "Unknown" or ready_reason(node) in (VM_PAUSED, VM_RESUMED):
        set_condition(node.status.conditions, "Ready", "Unknown", "NodeStatusUnknown",
                      f"the node's agent stopped renewing its lease ({silent_for:.0f}s ago)", now)
        changed = True
    if has_taint(node, NOT_READY_TAINT):  # swapped, as Kubernetes does: Unknown is not False
        _remove_taint(node, NOT_READY_TAINT)
        changed = True
    if not has_unreachable_taint(node):
        _add_taint(node, UNREACHABLE_TAINT, now)
        changed = True
    return node if changed else None


def apply_not_ready(node: node_pb2.Node, now: float) -> node_pb2.Node | None:
    """Taint not-ready if the stored node still says Ready=False (re-checked on every CAS retry)."""
    if ready_status(node) != "False" or has_taint(node, NOT_READY_TAINT):
        return None
    _add_taint(node, NOT_READY_TAINT, now)
    return node


def apply_ready(node: node_pb2.Node) -> node_pb2.Node | None:
    """Remove the not-ready taint if the stored node says Ready=True."""
    if ready_status(node) != "True" or not has_taint(node, NOT_READY_TAINT):
        return None
    _remove_taint(node, NOT_READY_TAINT)
    return node


def apply_paused(node: node_pb2.Node, now: float) -> node_pb2.Node | None:
    """Ready=Unknown/VMPaused and no NoExecute taint of ours: a paused VM is not lost."""
    changed = False
    if ready_status(node) != "Unknown" or ready_reason(node) != VM_PAUSED:
        set_condition(node.status.conditions, "Ready", "Unknown", VM_PAUSED,
                      "the node's VM is paused (spec.paused): its agent is frozen with it; "
                      "its pods stay, nothing new is scheduled here", now)
        changed = True
    for key in (UNREACHABLE_TAINT, NOT_READY_TAINT):
        if has_taint(node, key):
            _remove_taint(node, key)
            changed = True
    return node if changed else None


def apply_resumed(node: node_pb2.Node, now: float) -> node_pb2.Node | None:
    """Still VMPaused in the store: turn it into VMResumed, stamped now (last_probe_time)."""
    if ready_status(node) != "Unknown" or ready_reason(node) != VM_PAUSED:
        return None
    set_condition(node.status.conditions, "Ready", "Unknown", VM_RESUMED,
                  "the node's VM was resumed; waiting for its agent's heartbeat", now)
    return node


def apply_reachable(node: node_pb2.Node, now: float) -> node_pb2.Node | None:
    changed = False
    if has_unreachable_taint(node):
        _remove_taint(node, UNREACHABLE_TAINT)
        changed = True
    if ready_status(node) == "Unknown":
        set_condition(node.status.conditions, "Ready", "True", "AgentReady",
                      "the node's agent is renewing its lease again", now)
        changed = True
    return node if changed else None


class NodeLifecycle:
    """The reconciler: list, plan, execute, every `period` seconds of the injected clock."""

    def __init__(self, store: Store, clock: Clock, *, grace: float = DEFAULT_GRACE_SECONDS,
                 period: float = DEFAULT_PERIOD_SECONDS, metrics: Metrics | None = None,
                 node_cache: ObjectCache[node_pb2.Node] | None = None) -> None:
        """`node_cache`: an in-process informer of the nodes to read instead of listing
        them from etcd, once it has synced (module doc, "Cost")."""
        self.store = store
        self.clock = clock
        self.grace = grace
        self.period = period
        self.metrics = metrics
        self.node_cache = node_cache
        # The last pass's facts per node name, with the (informer's, read-only) object they
        # were read from: the same object next pass has the same facts.
        self._facts: dict[str, tuple[node_pb2.Node, NodeFacts]] = {}
        # The last pass's leases by key: (mod revision, node name, renew time). A key at the
        # same mod revision holds the same bytes, so its lease is not decoded again.
        self._leases: dict[str, tuple[int, str, float | None]] = {}

    async def run(self) -> None:
        started = self.clock.monotonic()
        store_down = False
        while True:
            await self.clock.sleep(self.period)
            try:
                if store_down:
                    # Agents could not renew their leases while the store was unreachable
                    # either: once it answers, give them a grace period, as after a start.
                    await self.store.current_revision()
                    store_down = False
                    started = self.clock.monotonic()
                    log.info("store answers again; judging nodes in %.0fs", self.grace)
                    continue
                if self.clock.monotonic() - started < self.grace:
                    continue
                await self.reconcile_once()
            except Unavailable as err:
                if not store_down:
                    log.warning("node lifecycle pass failed: %s; no judgement until it answers", err)
                store_down = True
            except CowpodError as err:
                log.warning("node lifecycle pass failed: %s", err)

    async def reconcile_once(self) -> list[Action]:
        nodes: list[node_pb2.Node]
        if self.node_cache is not None and self.node_cache.synced:
            nodes = list(self.node_cache.cache.values())
        else:
            nodes, _ = await self.store.list(NODES.prefix(), node_pb2.Node)
        renewed = await self._read_leases()
        vms, _ = await self.store.list(VMS.prefix(), vm_pb2.VM)
        paused = paused_nodes(vms)
        actions = plan_facts(self._node_facts(nodes), renewed, self.clock.now(), self.grace, paused)
        for a in actions:
            await self.execute(a)
        return actions

    def _node_facts(self, nodes: list[node_pb2.Node]) -> list[NodeFacts]:
        """`node_facts` of each; a node object seen last pass is not read again (objects
        from the informer are shared read-only: a change comes as a new object)."""
        known = self._facts
        kept: dict[str, tuple[node_pb2.Node, NodeFacts]] = {}
        out: list[NodeFacts] = []
        for node in nodes:
            hit = known.get(node.metadata.name)
            facts = hit[1] if hit is not None and hit[0] is node else node_facts(node)
            kept[facts.name] = (node, facts)
            out.append(facts)
        self._facts = kept
        return out

    async def _read_leases(self) -> dict[str, float]:
        """Every node lease's renew time from etcd, by node name (a lease without one left
        out, as `plan` does); only leases written since the last pass are decoded."""
        kvs, _ = await self.store.list_raw(LEASES.prefix(NODE_LEASE_NAMESPACE))
        known = self._leases
        seen: dict[str, tuple[int, str, float | None]] = {}
        renewed: dict[str, float] = {}
        for kv in kvs:
            hit = known.get(kv.key)
            if hit is None or hit[0] != kv.mod_revision:
                lease = decode(lease_pb2.Lease, kv.value, kv.mod_revision)
                hit = (kv.mod_revision, lease.metadata.name, renewed_at(lease))
            seen[kv.key] = hit
            if hit[2] is not None:
                renewed[hit[1]] = hit[2]
            else:  # the last lease listed under a name counts, as in a dict by name
                renewed.pop(hit[1], None)
        self._leases = seen
        return renewed

    async def execute(self, action: Action) -> None:
        now = self.clock.now()
        key = NODES.key("", action.node)
        try:
            if isinstance(action, MarkUnreachable):
                await guaranteed_update(self.store, key, node_pb2.Node,
                                        lambda n: apply_unreachable(n, action.silent_for, now))
                log.warning("node %s unreachable: no heartbeat for %.0fs; Ready=Unknown, tainted %s:%s",
                            action.node, action.silent_for, UNREACHABLE_TAINT, NO_EXECUTE)
                name = "unreachable"
            elif isinstance(action, MarkReachable):
                await guaranteed_update(self.store, key, node_pb2.Node, lambda n: apply_reachable(n, now))
                log.info("node %s reachable again: heartbeat resumed; taint %s removed",
                         action.node, UNREACHABLE_TAINT)
                name = "reachable"
            elif isinstance(action, MarkPaused):
                await guaranteed_update(self.store, key, node_pb2.Node, lambda n: apply_paused(n, now))
                log.info("node %s: its VM is paused; Ready=Unknown (%s), no NoExecute taint",
                         action.node, VM_PAUSED)
                name = "paused"
            elif isinstance(action, MarkResumed):
                await guaranteed_update(self.store, key, node_pb2.Node, lambda n: apply_resumed(n, now))
                log.info("node %s: its VM was resumed; waiting for its agent's heartbeat", action.node)
                name = "resumed"
            elif isinstance(action, MarkNotReady):
                await guaranteed_update(self.store, key, node_pb2.Node, lambda n: apply_not_ready(n, now))
                log.warning("node %s not ready: its agent reports Ready=False; tainted %s:%s",
                            action.node, NOT_READY_TAINT, NO_EXECUTE)
                name = "not-ready"
            else:
                await guaranteed_update(self.store, key, node_pb2.Node, apply_ready)
                log.info("node %s ready again: taint %s removed", action.node, NOT_READY_TAINT)
                name = "ready"
        except NotFound:
            return
        if self.metrics is not None:
            self.metrics.node_transitions.labels(name).inc()
