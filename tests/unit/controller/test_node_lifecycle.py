"""Node lifecycle: the pure plan over nodes and leases, and the reconciler on a FakeClock."""

from __future__ import annotations

import pytest

from controller.kinds import LEASES, NODE_LEASE_NAMESPACE, NODES
from controller.memstore import MemoryStore
from controller.node_lifecycle import (
    NO_EXECUTE,
    UNREACHABLE_TAINT,
    MarkReachable,
    MarkUnreachable,
    NodeLifecycle,
    apply_reachable,
    apply_unreachable,
    plan,
    ready_status,
)
from controller.resource import set_time
from cowpod.clock import FakeClock
from cowpod.v1 import lease_pb2, node_pb2

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


def test_agent_reported_not_ready_is_left_alone() -> None:
    assert plan([node("n1", ready="False")], {"n1": lease("n1", T0 + 95)}, T0 + 100, grace=40) == []


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
