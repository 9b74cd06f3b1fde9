"""Node lifecycle: the pure plan over nodes and leases, and the reconciler on a FakeClock."""

from __future__ import annotations

import pytest

from controller import eviction, node_lifecycle
from controller.kinds import LEASES, NODE_LEASE_NAMESPACE, NODES, VMS
from controller.memstore import MemoryStore
from controller.node_lifecycle import (
    NO_EXECUTE,
    VM_PAUSED,
    VM_RESUMED,
    MarkNotReady,
    MarkPaused,
    MarkReachable,
    MarkReady,
    MarkResumed,
    MarkUnreachable,
    NodeLifecycle,
    apply_not_ready,
    apply_paused,
    apply_reachable,
    apply_ready,
    apply_resumed,
    apply_unreachable,
    has_taint,
    last_renewal,
    node_facts,
    paused_nodes,
    plan,
    ready_condition,
    ready_reason,
    ready_status,
)
from controller.resource import get_time, set_time
from controller.store import decode
from cowpod.api.labels import NOT_READY_TAINT, UNREACHABLE_TAINT
from cowpod.clock import FakeClock
from cowpod.errors import NotFound
from cowpod.v1 import lease_pb2, node_pb2, pod_pb2, vm_pb2

T0 = 1_700_000_000.0


def node(name: str, *, created: float = T0, ready: str = "True", tainted: bool = False) -> node_pb2.Node:
    n = node_pb2.Node()
    n.metadata.name = name
    set_time(n.metadata.creation_timestamp, created)
    if ready:
        n.status.conditions.add(type="Ready", status=ready)
    if tainted:
        n.spec.taints.add(key=UNREACHABLE_TAINT, effect=NO_EXECUTE)
    return n


def lease(name: str, renewed: float) -> lease_pb2.Lease:
    lz = lease_pb2.Lease()
    lz.metadata.name = name
    lz.metadata.namespace = NODE_LEASE_NAMESPACE
    set_time(lz.spec.renew_time, renewed)
    return lz


def test_fresh_lease_no_action() -> None:
    assert plan([node("n1")], {"n1": lease("n1", T0 + 30)}, T0 + 40, grace=40) == []


def test_stale_lease_marks_unreachable() -> None:
    acts = plan([node("n1")], {"n1": lease("n1", T0)}, T0 + 41, grace=40)
    assert acts == [MarkUnreachable("n1", 41.0)]


def test_no_lease_counts_from_creation() -> None:
    assert plan([node("n1", created=T0)], {}, T0 + 10, grace=40) == []
    assert plan([node("n1", created=T0)], {}, T0 + 50, grace=40) == [MarkUnreachable("n1", 50.0)]


def test_already_marked_is_idempotent() -> None:
    n = node("n1", ready="Unknown", tainted=True)
    assert plan([n], {"n1": lease("n1", T0)}, T0 + 100, grace=40) == []


def test_renewed_lease_marks_reachable() -> None:
    n = node("n1", ready="Unknown", tainted=True)
    assert plan([n], {"n1": lease("n1", T0 + 95)}, T0 + 100, grace=40) == [MarkReachable("n1")]


def test_agent_reported_not_ready_is_tainted_not_ready_and_untainted_when_ready() -> None:
    fresh = {"n1": lease("n1", T0 + 95)}
    assert plan([node("n1", ready="False")], fresh, T0 + 100, grace=40) == [MarkNotReady("n1")]
    tainted = apply_not_ready(node("n1", ready="False"), T0 + 100)
    assert tainted is not None
    assert [(t.key, t.effect) for t in tainted.spec.taints] == [(NOT_READY_TAINT, NO_EXECUTE)]
    assert tainted.spec.taints[0].HasField("time_added")
    assert plan([tainted], fresh, T0 + 100, grace=40) == []  # idempotent
    assert apply_not_ready(tainted, T0 + 105) is None
    # The agent reports Ready=True again: the taint goes, other taints stay.
    tainted.spec.taints.add(key="gpu", effect="NoSchedule")
    tainted.status.conditions[0].status = "True"
    assert plan([tainted], fresh, T0 + 100, grace=40) == [MarkReady("n1")]
    back = apply_ready(tainted)
    assert back is not None and [t.key for t in back.spec.taints] == ["gpu"]
    assert plan([back], fresh, T0 + 100, grace=40) == []
    assert apply_ready(back) is None


def test_not_ready_apply_rechecks_the_stored_node() -> None:
    # Planned on a stale read: the stored node says Ready=True by now; nothing is tainted.
    assert apply_not_ready(node("n1", ready="True"), T0) is None
    assert apply_not_ready(node("n1", ready=""), T0) is None
    n = node("n1", ready="False")
    n.spec.taints.add(key=NOT_READY_TAINT, effect=NO_EXECUTE)
    assert apply_ready(n) is None  # still not ready: keep the taint


def test_no_ready_condition_yet_is_not_judged() -> None:
    assert plan([node("n1", ready="")], {"n1": lease("n1", T0 + 95)}, T0 + 100, grace=40) == []


def test_a_not_ready_node_that_falls_silent_swaps_not_ready_for_unreachable() -> None:
    n = apply_not_ready(node("n1", ready="False"), T0)
    assert n is not None
    assert plan([n], {"n1": lease("n1", T0)}, T0 + 50, grace=40) == [MarkUnreachable("n1", 50.0)]
    out = apply_unreachable(n, 50, T0 + 50)
    assert out is not None and ready_status(out) == "Unknown"
    assert [(t.key, t.effect) for t in out.spec.taints] == [(UNREACHABLE_TAINT, NO_EXECUTE)]
    assert plan([out], {"n1": lease("n1", T0)}, T0 + 60, grace=40) == []


def test_many_nodes_only_the_silent_ones() -> None:
    nodes = [node(f"n{i}") for i in range(5)]
    leases = {f"n{i}": lease(f"n{i}", T0 + (0 if i % 2 else 90)) for i in range(5)}
    acts = plan(nodes, leases, T0 + 100, grace=40)
    assert [a.node for a in acts] == ["n1", "n3"]


def test_apply_unreachable_then_reachable() -> None:
    n = node("n1")
    out = apply_unreachable(n, 50, T0 + 50)
    assert out is not None
    assert ready_status(out) == "Unknown"
    assert [(t.key, t.effect) for t in out.spec.taints] == [(UNREACHABLE_TAINT, NO_EXECUTE)]
    assert apply_unreachable(out, 60, T0 + 60) is None  # nothing more to do
    back = apply_reachable(out, T0 + 70)
    assert back is not None
    assert ready_status(back) == "True"
    assert list(back.spec.taints) == []
    assert apply_reachable(back, T0 + 80) is None


def test_apply_reachable_keeps_other_taints() -> None:
    n = node("n1", ready="Unknown", tainted=True)
    n.spec.taints.add(key="gpu", effect="NoSchedule")
    out = apply_reachable(n, T0)
    assert out is not None
    assert [t.key for t in out.spec.taints] == ["gpu"]


@pytest.mark.parametrize("silence", [39.0, 41.0])
async def test_reconciler_on_fake_clock(silence: float) -> None:
    clock = FakeClock(start=T0)
    store = MemoryStore()
    await store.create(NODES.key("", "n1"), node("n1"))
    await store.create(LEASES.key(NODE_LEASE_NAMESPACE, "n1"), lease("n1", T0))
    lc = NodeLifecycle(store, clock, grace=40, period=5)
    await clock.advance(silence)
    acts = await lc.reconcile_once()
    stored = await store.get(NODES.key("", "n1"), node_pb2.Node)
    if silence > 40:
        assert acts == [MarkUnreachable("n1", silence)]
        assert ready_status(stored) == "Unknown"
    else:
        assert acts == []
        assert ready_status(stored) == "True"


def _pod_on(name: str, node_name: str, *, tolerate_for: int | None = None) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name, p.metadata.namespace, p.metadata.uid = name, "default", f"uid-{name}"
    p.spec.node_name = node_name
    p.status.phase = "Running"
    if tolerate_for is not None:
        t = p.spec.tolerations.add(key=NOT_READY_TAINT, operator="Exists", effect=NO_EXECUTE)
        t.toleration_seconds = tolerate_for
    return p


async def test_reconciler_taints_a_not_ready_node_and_eviction_follows_tolerations() -> None:
    clock = FakeClock(start=T0)
    store = MemoryStore()
    await store.create(NODES.key("", "n1"), node("n1", ready="False"))
    await store.create(NODES.key("", "n2"), node("n2"))
    for name in ("n1", "n2"):
        await store.create(LEASES.key(NODE_LEASE_NAMESPACE, name), lease(name, T0))
    lc = NodeLifecycle(store, clock, grace=40, period=5)
    await clock.advance(10)  # heartbeating: only the Ready=False node is judged
    assert await lc.reconcile_once() == [MarkNotReady("n1")]
    n1 = await store.get(NODES.key("", "n1"), node_pb2.Node)
    assert has_taint(n1, NOT_READY_TAINT) and ready_status(n1) == "False"
    assert not has_taint(await store.get(NODES.key("", "n2"), node_pb2.Node), NOT_READY_TAINT)
    assert await lc.reconcile_once() == []

    # Eviction (pure plan) reads the taint: a pod tolerating it for 60 s goes after 60 s,
    # one saying nothing after the default; n2's pod stays.
    pods = [_pod_on("short", "n1", tolerate_for=60), _pod_on("plain", "n1"), _pod_on("other", "n2")]
    nodes = [n1, await store.get(NODES.key("", "n2"), node_pb2.Node)]
    at = T0 + 10
    assert eviction.plan(nodes, pods, at + 59, default_seconds=300) == []
    first = eviction.plan(nodes, pods, at + 61, default_seconds=300)
    assert [a.name for a in first] == ["short"]
    assert isinstance(first[0], eviction.Evict) and "node n1 is not ready" in first[0].message
    assert {a.name for a in eviction.plan(nodes, pods, at + 301, default_seconds=300)} == {"short", "plain"}

    # The agent reports Ready=True again: untainted.
    n1.status.conditions[0].status = "True"
    await store.update(NODES.key("", "n1"), n1, expected_revision=n1.metadata.resource_version)
    assert await lc.reconcile_once() == [MarkReady("n1")]
    n1 = await store.get(NODES.key("", "n1"), node_pb2.Node)
    assert not has_taint(n1, NOT_READY_TAINT) and ready_status(n1) == "True"


# ---- a VM paused on purpose (an idle warm parent) --------------------------------------------


def _vm(name: str, *, paused: bool, phase: str) -> vm_pb2.VM:
    v = vm_pb2.VM()
    v.metadata.name = name
    v.spec.paused = paused
    v.status.phase = phase
    v.status.node_name = name
    return v


def test_paused_nodes_are_those_paused_on_purpose_and_frozen() -> None:
    vms = [
        _vm("parent", paused=True, phase="Paused"),
        _vm("asked", paused=True, phase="Running"),  # the manager has not frozen it yet
        _vm("snapshotting", paused=False, phase="Paused"),  # the provider's own moment
        _vm("busy", paused=False, phase="Running"),
    ]
    assert paused_nodes(vms) == {"parent"}


def test_a_paused_vms_node_is_marked_paused_never_unreachable() -> None:
    stale = {"p": lease("p", T0)}
    # Silent far past grace, yet no unreachable: it is paused.
    assert plan([node("p")], stale, T0 + 500, grace=40, paused={"p"}) == [MarkPaused("p")]
    marked = apply_paused(node("p", tainted=True), T0 + 500)
    assert marked is not None
    assert ready_status(marked) == "Unknown" and ready_reason(marked) == VM_PAUSED
    assert not has_taint(marked, UNREACHABLE_TAINT) and not has_taint(marked, NOT_READY_TAINT)
    assert apply_paused(marked, T0 + 600) is None
    assert plan([marked], stale, T0 + 5000, grace=40, paused={"p"}) == []
    # A NoExecute taint put back by anything is removed again.
    marked.spec.taints.add(key=UNREACHABLE_TAINT, effect=NO_EXECUTE)
    assert plan([marked], stale, T0 + 5000, grace=40, paused={"p"}) == [MarkPaused("p")]


def test_a_resumed_vms_node_waits_for_its_agent_then_is_normal() -> None:
    paused = apply_paused(node("p"), T0)
    assert paused is not None
    stale = {"p": lease("p", T0)}
    # Resumed (no longer in `paused`): stamped now, judged from now.
    assert plan([paused], stale, T0 + 500, grace=40) == [MarkResumed("p")]
    resumed = apply_resumed(paused, T0 + 500)
    assert resumed is not None and ready_reason(resumed) == VM_RESUMED
    assert apply_resumed(resumed, T0 + 501) is None
    # Within grace of the resume and no heartbeat yet: wait, no taint.
    assert plan([resumed], stale, T0 + 530, grace=40) == []
    # The agent's lease is renewed after the resume: reachable (Ready=True).
    assert plan([resumed], {"p": lease("p", T0 + 531)}, T0 + 535, grace=40) == [MarkReachable("p")]
    back = apply_reachable(resumed, T0 + 535)
    assert back is not None and ready_status(back) == "True"
    # An agent that never comes back after the resume is unreachable after grace, as usual.
    assert plan([resumed], stale, T0 + 541, grace=40) == [MarkUnreachable("p", 541.0)]
    lost = apply_unreachable(resumed, 541.0, T0 + 541)
    assert lost is not None and ready_reason(lost) == "NodeStatusUnknown"
    assert has_taint(lost, UNREACHABLE_TAINT)
    assert plan([lost], stale, T0 + 600, grace=40) == []


async def test_reconciler_reads_paused_vms_and_nothing_is_evicted() -> None:
    clock = FakeClock(start=T0)
    store = MemoryStore()
    await store.create(NODES.key("", "p"), node("p"))
    await store.create(LEASES.key(NODE_LEASE_NAMESPACE, "p"), lease("p", T0))
    await store.create(VMS.key("", "p"), _vm("p", paused=True, phase="Paused"))
    lc = NodeLifecycle(store, clock, grace=40, period=5)
    await clock.advance(300)
    assert await lc.reconcile_once() == [MarkPaused("p")]
    assert await lc.reconcile_once() == []
    stored = await store.get(NODES.key("", "p"), node_pb2.Node)
    assert ready_reason(stored) == VM_PAUSED
    assert eviction.plan([stored], [_pod_on("web", "p")], T0 + 10_000, default_seconds=300) == []
    # Resume: the VM manager clears the phase after spec.paused goes false.
    vm = await store.get(VMS.key("", "p"), vm_pb2.VM)
    vm.spec.paused = False
    vm.status.phase = "Running"
    await store.update(VMS.key("", "p"), vm, expected_revision=vm.metadata.resource_version)
    assert await lc.reconcile_once() == [MarkResumed("p")]
    assert await lc.reconcile_once() == []


# ---- the pass's fast paths give what the slow ones gave (issue #17) ---------------------------


def _plan_one_walk_per_question(nodes: list[node_pb2.Node], leases: dict[str, lease_pb2.Lease], now: float,
                                grace: float, paused: frozenset[str]) -> list[object]:
    """`plan` as it was before its one-walk facts: every question asked with the public helpers."""
    actions: list[object] = []
    for n in nodes:
        name = n.metadata.name
        heard = last_renewal(n, leases.get(name))
        tainted = has_taint(n, UNREACHABLE_TAINT)
        not_ready_tainted = has_taint(n, NOT_READY_TAINT)
        ready = ready_status(n)
        reason = ready_reason(n) if ready == "Unknown" else ""
        if name in paused:
            if reason != VM_PAUSED or tainted or not_ready_tainted:
                actions.append(MarkPaused(name))
            continue
        if reason == VM_PAUSED:
            actions.append(MarkResumed(name))
            continue
        if reason == VM_RESUMED:
            cond = ready_condition(n)
            resumed_at = get_time(cond.last_probe_time) if cond is not None else 0.0
            if now - max(heard, resumed_at) > grace:
                actions.append(MarkUnreachable(name, now - heard))
            elif heard > resumed_at:
                actions.append(MarkReachable(name))
            continue
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


def _variant_nodes() -> list[node_pb2.Node]:
    """Every shape of taints and conditions `plan` tells apart, one node each."""
    taint_sets: list[list[tuple[str, str]]] = [
        [], [(UNREACHABLE_TAINT, NO_EXECUTE)], [(NOT_READY_TAINT, NO_EXECUTE)],
        [(UNREACHABLE_TAINT, NO_EXECUTE), (NOT_READY_TAINT, NO_EXECUTE)],
        [(UNREACHABLE_TAINT, "NoSchedule")], [("gpu", NO_EXECUTE), (NOT_READY_TAINT, "PreferNoSchedule")],
    ]
    condition_sets: list[list[tuple[str, str, str, float | None]]] = [
        [], [("Ready", "True", "", None)], [("Ready", "False", "", None)], [("Ready", "Unknown", "", None)],
        [("Ready", "Unknown", VM_PAUSED, None)], [("Ready", "Unknown", VM_RESUMED, T0 + 20)],
        [("Ready", "Unknown", VM_RESUMED, None)], [("Ready", "True", VM_PAUSED, None)],
        [("MemoryPressure", "Unknown", VM_PAUSED, None), ("Ready", "False", "", None)],
        [("Ready", "Unknown", VM_RESUMED, T0 + 60), ("Ready", "True", "", None)],  # the first one counts
    ]
    out = []
    for i, taints in enumerate(taint_sets):
        for j, conds in enumerate(condition_sets):
            n = node(f"n{i}-{j}", ready="")
            for key, effect in taints:
                n.spec.taints.add(key=key, effect=effect)
            for type_, status, reason, probed in conds:
                c = n.status.conditions.add(type=type_, status=status, reason=reason)
                if probed is not None:
                    set_time(c.last_probe_time, probed)
            out.append(n)
    return out


@pytest.mark.parametrize("now", [T0 + 10, T0 + 45, T0 + 75, T0 + 500])
def test_plan_answers_as_the_helpers_do_for_every_node_shape(now: float) -> None:
    nodes = _variant_nodes()
    leases: dict[str, lease_pb2.Lease] = {}
    for k, n in enumerate(nodes):
        name = n.metadata.name
        if k % 4 == 0:
            continue  # no lease: judged from creation
        if k % 4 == 1:
            leases[name] = lease_pb2.Lease()  # a lease without a renew time
            leases[name].metadata.name = name
        else:
            leases[name] = lease(name, T0 + (5 if k % 4 == 2 else 50))
    for paused in (frozenset(), frozenset(n.metadata.name for n in nodes[::3])):
        want = _plan_one_walk_per_question(nodes, leases, now, 40, paused)
        assert plan(nodes, leases, now, grace=40, paused=paused) == want
    assert want  # the table reaches the actions, not only "nothing to do"


class _Nodes:
    """An informer's view (pure: what `cowpod.informer.ObjectCache` asks of one)."""

    def __init__(self, nodes: list[node_pb2.Node], *, synced: bool = True) -> None:
        self.synced = synced
        self.cache = {("", n.metadata.name): n for n in nodes}


async def test_reconciler_reads_a_synced_node_cache_and_the_store_until_then() -> None:
    clock = FakeClock(start=T0)
    store = MemoryStore()
    await store.create(NODES.key("", "n1"), node("n1"))
    await store.create(LEASES.key(NODE_LEASE_NAMESPACE, "n1"), lease("n1", T0 + 20))
    # The cache shows n1 as still marked unreachable (it is a moment behind the store) and
    # a node the store does not have: the pass judges what the cache shows, and the write
    # re-checks the stored node (nothing to do for n1; n2 is gone).
    cached = [node("n1", ready="Unknown", tainted=True), node("n2")]
    lc = NodeLifecycle(store, clock, grace=40, period=5, node_cache=_Nodes(cached, synced=False))
    await clock.advance(30)
    assert await lc.reconcile_once() == []  # not synced: the store's nodes
    lc.node_cache = _Nodes(cached)
    assert await lc.reconcile_once() == [MarkReachable("n1")]
    stored = await store.get(NODES.key("", "n1"), node_pb2.Node)
    assert ready_status(stored) == "True" and not has_taint(stored, UNREACHABLE_TAINT)
    await clock.advance(20)  # n2 has no lease and is 50 s old: silent, but not in the store
    assert await lc.reconcile_once() == [MarkReachable("n1"), MarkUnreachable("n2", 50.0)]
    with pytest.raises(NotFound):
        await store.get(NODES.key("", "n2"), node_pb2.Node)


async def test_reconciler_decodes_only_leases_written_since_its_last_pass(
        monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []

    def counting_decode(cls: type[lease_pb2.Lease], value: bytes, mod_revision: int) -> lease_pb2.Lease:
        out = decode(cls, value, mod_revision)
        decoded.append(out.metadata.name)
        return out

    monkeypatch.setattr(node_lifecycle, "decode", counting_decode)
    clock = FakeClock(start=T0)
    store = MemoryStore()
    for name in ("a", "b"):
        await store.create(NODES.key("", name), node(name))
        await store.create(LEASES.key(NODE_LEASE_NAMESPACE, name), lease(name, T0))
    lc = NodeLifecycle(store, clock, grace=40, period=5)
    await clock.advance(30)
    assert await lc.reconcile_once() == []
    assert sorted(decoded) == ["a", "b"]
    assert await lc._read_leases() == {"a": T0, "b": T0}
    assert sorted(decoded) == ["a", "b"]  # unchanged: not decoded again
    # b is renewed: its new renew time is what counts; a is silent past grace.
    b = await store.get(LEASES.key(NODE_LEASE_NAMESPACE, "b"), lease_pb2.Lease)
    set_time(b.spec.renew_time, T0 + 35)
    key = LEASES.key(NODE_LEASE_NAMESPACE, "b")
    await store.update(key, b, expected_revision=b.metadata.resource_version)
    await clock.advance(15)
    assert await lc.reconcile_once() == [MarkUnreachable("a", 45.0)]
    assert sorted(decoded) == ["a", "b", "b"]
    # A lease without a renew time counts as none (the node's creation); a deleted one is gone.
    b.spec.ClearField("renew_time")
    b = await store.update(key, b, expected_revision=b.metadata.resource_version)
    assert await lc._read_leases() == {"a": T0}
    await store.delete(key, lease_pb2.Lease)
    assert await lc._read_leases() == {"a": T0}
    assert await lc.reconcile_once() == [MarkUnreachable("b", 45.0)]  # a: marked already


async def test_reconciler_reads_a_cached_node_again_only_when_the_object_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[str] = []

    def counting_facts(n: node_pb2.Node) -> node_lifecycle.NodeFacts:
        read.append(n.metadata.name)
        return node_facts(n)

    monkeypatch.setattr(node_lifecycle, "node_facts", counting_facts)
    clock = FakeClock(start=T0)
    store = MemoryStore()
    cache = _Nodes([node("a"), node("b", ready="False")])
    for name in ("a", "b"):
        await store.create(NODES.key("", name), node(name))
        await store.create(LEASES.key(NODE_LEASE_NAMESPACE, name), lease(name, T0))
    lc = NodeLifecycle(store, clock, grace=40, period=5, node_cache=cache)
    await clock.advance(10)
    assert await lc.reconcile_once() == [MarkNotReady("b")]
    assert await lc.reconcile_once() == [MarkNotReady("b")]
    assert sorted(read) == ["a", "b"]  # the same objects: read once
    # The informer replaces b (a change is a new object): read again, judged on what it says.
    tainted = apply_not_ready(node("b", ready="False"), T0)
    assert tainted is not None
    cache.cache[("", "b")] = tainted
    assert await lc.reconcile_once() == []
    assert sorted(read) == ["a", "b", "b"]
    del cache.cache[("", "a")]
    assert await lc.reconcile_once() == []
    assert set(lc._facts) == {"b"}  # a gone node is forgotten
