"""Eviction: the pure planner as a table, then the reconciler on an in-memory store with a
fake clock (the 300 s default toleration is advanced, never slept)."""

from __future__ import annotations

import asyncio
import builtins
import math
from collections.abc import Sequence
from typing import Any, TypeVar

import pytest
from google.protobuf.message import Message

from controller.eviction import (
    DEFAULT_TOLERATION_SECONDS,
    NODE_LOST,
    Collect,
    Evict,
    Evictor,
    HoldEvictions,
    StampTaints,
    allowed_seconds,
    plan,
    pods_plan_reads,
)
from controller.kinds import NODES, PODS
from controller.resource import set_time
from controller.store import Compare, Delete, Get, KeyValue, Op, Put, Target, TxnResult, decode, encode
from cowpod.api.labels import UNREACHABLE_TAINT
from cowpod.clock import FakeClock
from cowpod.v1 import node_pb2, pod_pb2

M = TypeVar("M", bound=Message)
T0 = 1_700_000_000.0


# ---- builders -------------------------------------------------------------------------------------


def node(name: str, *, rv: int = 5, taints: Sequence[tuple[str, str, float | None]] = ()) -> node_pb2.Node:
    n = node_pb2.Node()
    n.metadata.name = name
    n.metadata.resource_version = rv
    for key, effect, added in taints:
        t = n.spec.taints.add(key=key, effect=effect)
        if added is not None:
            set_time(t.time_added, added)
    return n


def unreachable(name: str, since: float = T0, rv: int = 5) -> node_pb2.Node:
    return node(name, rv=rv, taints=[(UNREACHABLE_TAINT, "NoExecute", since)])


def pod(name: str, node_name: str = "n1", *, rv: int = 7, phase: str = "Running",
        tolerations: Sequence[dict[str, Any]] = (), terminating: bool = False) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    p.metadata.namespace = "default"
    p.metadata.uid = f"uid-{name}"
    p.metadata.resource_version = rv
    p.spec.node_name = node_name
    p.spec.containers.add(name="c", image="cowpod/busybox:latest")
    p.spec.termination_grace_period_seconds = 30
    p.status.phase = phase
    for t in tolerations:
        p.spec.tolerations.add(**t)
    if terminating:
        set_time(p.metadata.deletion_timestamp, T0)
    return p


# ---- the planner ----------------------------------------------------------------------------------


def test_healthy_nodes_evict_nothing() -> None:
    assert plan([node("n1")], [pod("a"), pod("b")], T0 + 10_000) == []


def test_default_toleration_is_300s_from_the_taint() -> None:
    nodes, pods = [unreachable("n1"), node("ok")], [pod("a")]
    assert plan(nodes, pods, T0 + 299) == []
    [a] = plan(nodes, pods, T0 + 300)
    assert isinstance(a, Evict)
    assert (a.name, a.node, a.reason, a.pod_revision, a.node_revision) == ("a", "n1", NODE_LOST, 7, 5)
    assert "unreachable (tainted 300s ago" in a.message


def test_default_toleration_is_configurable() -> None:
    assert len(plan([unreachable("n1"), node("ok")], [pod("a")], T0 + 3, default_seconds=2)) == 1


UNREACH: dict[str, Any] = {"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute"}


@pytest.mark.parametrize(
    ("tolerations", "seconds"),
    [
        ([], DEFAULT_TOLERATION_SECONDS),
        ([{**UNREACH, "toleration_seconds": 10}], 10),
        ([UNREACH], math.inf),
        ([{"operator": "Exists"}], math.inf),  # tolerates everything, forever
        # Of several matching tolerations the shortest bound wins.
        ([{"operator": "Exists"}, {**UNREACH, "toleration_seconds": 60}], 60),
        ([{"key": "other", "operator": "Exists"}], DEFAULT_TOLERATION_SECONDS),  # does not match
        ([{**UNREACH, "effect": "NoSchedule"}], DEFAULT_TOLERATION_SECONDS),
        ([{**UNREACH, "toleration_seconds": -5}], 0),
    ],
)
def test_allowed_seconds(tolerations: list[dict[str, Any]], seconds: float) -> None:
    taint = node_pb2.Taint(key=UNREACHABLE_TAINT, effect="NoExecute")
    assert allowed_seconds(pod("a", tolerations=tolerations), taint, DEFAULT_TOLERATION_SECONDS) == seconds


def test_a_pod_that_tolerates_forever_stays() -> None:
    tol = [{"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute"}]
    assert plan([unreachable("n1"), node("ok")], [pod("a", tolerations=tol)], T0 + 10**7) == []


def test_other_untolerated_no_execute_taint_evicts_at_once() -> None:
    n = node("n1", taints=[("dedicated", "NoExecute", T0)])
    [a] = plan([n], [pod("a")], T0)
    assert isinstance(a, Evict) and a.reason == "Evicted" and "dedicated:NoExecute" in a.message
    tol = [{"key": "dedicated", "operator": "Exists", "effect": "NoExecute", "toleration_seconds": 30}]
    assert plan([n], [pod("b", tolerations=tol)], T0 + 29) == []
    assert len(plan([n], [pod("b", tolerations=tol)], T0 + 30)) == 1


def test_no_schedule_taints_never_evict() -> None:
    assert plan([node("n1", taints=[("x", "NoSchedule", T0)])], [pod("a")], T0 + 10**6) == []


def test_terminating_terminal_and_unbound_pods_are_left_alone_on_a_lost_node() -> None:
    pods = [pod("t", terminating=True), pod("f", phase="Failed"), pod("s", phase="Succeeded"), pod("u", "")]
    assert plan([unreachable("n1"), node("ok")], pods, T0 + 10**6) == []


def test_pods_of_a_vanished_node_are_evicted_then_collected() -> None:
    [a] = plan([node("n2")], [pod("a", "gone")], T0)
    assert isinstance(a, Evict) and a.node_revision == 0 and a.reason == NODE_LOST
    assert "no longer exists" in a.message
    acts = plan([], [pod("f", "gone", phase="Failed"), pod("t", "gone", terminating=True)], T0)
    assert acts == [Collect("default", "f", "uid-f", "gone", 7), Collect("default", "t", "uid-t", "gone", 7)]


def test_nothing_is_evicted_for_taints_when_every_node_is_unreachable() -> None:
    nodes = [unreachable("n1"), unreachable("n2")]
    acts = plan(nodes, [pod("a"), pod("b", "n2"), pod("c", "gone")], T0 + 10**6)
    assert acts[0] == HoldEvictions(2)
    assert [(type(a), a.name) for a in acts[1:]] == [(Evict, "c")]  # a gone node still counts
    # One node reachable again: the lost one's pods go.
    acts = plan([unreachable("n1"), node("n2")], [pod("a"), pod("b", "n2")], T0 + 10**6)
    assert [(type(a), a.name) for a in acts] == [(Evict, "a")]


def test_unstamped_taint_is_stamped_before_anything_is_judged() -> None:
    n = node("n1", rv=9, taints=[("dedicated", "NoExecute", None)])
    assert plan([n], [pod("a")], T0) == [StampTaints("n1", 9)]


def test_taints_are_not_judged_during_startup_grace_but_gone_nodes_are() -> None:
    acts = plan([unreachable("n1")], [pod("a"), pod("b", "gone")], T0 + 10**6, judge_taints=False)
    assert [(type(a), a.name) for a in acts if not isinstance(a, StampTaints)] == [(Evict, "b")]


# ---- the reconciler on an in-memory store --------------------------------------------------------


class MemStore:
    """Just enough of `controller.store.Store` for the evictor: list and conditional txns."""

    def __init__(self) -> None:
        self.rev = 1
        self.data: dict[str, KeyValue] = {}

    def put(self, key: str, obj: Message) -> None:
        self.rev += 1
        old = self.data.get(key)
        self.data[key] = KeyValue(key, encode(obj), self.rev, old.create_revision if old else self.rev)

    def obj(self, key: str, cls: type[M]) -> M | None:
        kv = self.data.get(key)
        return decode(cls, kv.value, kv.mod_revision) if kv else None

    async def list(self, prefix: str, cls: type[M]) -> tuple[list[M], int]:
        return [decode(cls, kv.value, kv.mod_revision) for k, kv in sorted(self.data.items())
                if k.startswith(prefix)], self.rev

    async def list_raw(self, prefix: str) -> tuple[builtins.list[KeyValue], int]:
        return [kv for k, kv in sorted(self.data.items()) if k.startswith(prefix)], self.rev

    def _holds(self, c: Compare) -> bool:
        kv = self.data.get(c.key)
        actual = {Target.MOD: kv.mod_revision if kv else 0, Target.CREATE: kv.create_revision if kv else 0,
                  Target.VERSION: 1 if kv else 0}[c.target]
        return {"=": actual == c.value, "!=": actual != c.value, "<": actual < c.value,
                ">": actual > c.value}[c.op]

    async def txn(self, compares: Sequence[Compare], success: Sequence[Op],
                  failure: Sequence[Op] = ()) -> TxnResult:
        ok = all(self._holds(c) for c in compares)
        ops = success if ok else failure
        if any(isinstance(op, (Put, Delete)) for op in ops):
            self.rev += 1
        gets: list[KeyValue | None] = []
        for op in ops:
            if isinstance(op, Put):
                old = self.data.get(op.key)
                created = old.create_revision if old else self.rev
                self.data[op.key] = KeyValue(op.key, op.value, self.rev, created)
            elif isinstance(op, Delete):
                self.data.pop(op.key, None)
            elif isinstance(op, Get):
                gets.append(self.data.get(op.key))
        return TxnResult(ok, self.rev, gets)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    async def pod_event(self, pod: pod_pb2.Pod, reason: str, message: str) -> None:
        self.events.append((pod.metadata.name, reason, message))


def pkey(name: str) -> str:
    return PODS.key("default", name)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=T0)


async def test_evicts_after_the_default_toleration_on_the_fake_clock(clock: FakeClock) -> None:
    store, events = MemStore(), Recorder()
    store.put(NODES.key("", "n1"), unreachable("n1", since=T0))
    store.put(NODES.key("", "n2"), node("n2"))
    store.put(pkey("a"), pod("a", "n1"))
    store.put(pkey("b"), pod("b", "n2"))
    ev = Evictor(store, clock, period=5, startup_grace=0, events=events)  # type: ignore[arg-type]
    task = asyncio.create_task(ev.run())
    try:
        await clock.advance(295)
        a = store.obj(pkey("a"), pod_pb2.Pod)
        assert a is not None and a.status.phase == "Running" and not a.metadata.HasField("deletion_timestamp")
        await clock.advance(10)
        a = store.obj(pkey("a"), pod_pb2.Pod)
        assert a is not None
        assert (a.status.phase, a.status.reason) == ("Failed", NODE_LOST)
        assert a.metadata.HasField("deletion_timestamp") and a.metadata.deletion_grace_period_seconds == 30
        ready = [c for c in a.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "False"
        b = store.obj(pkey("b"), pod_pb2.Pod)
        assert b is not None and b.status.phase == "Running"  # its node is fine
        assert [(n, r) for n, r, _ in events.events] == [("a", NODE_LOST)]
        assert ev.evictions.labels(NODE_LOST)._value.get() == 1
        # Evicted once: later passes leave the terminating pod alone.
        rev = store.data[pkey("a")].mod_revision
        await clock.advance(60)
        assert store.data[pkey("a")].mod_revision == rev
    finally:
        task.cancel()


async def test_pods_of_a_gone_node_are_failed_then_deleted(clock: FakeClock) -> None:
    store, events = MemStore(), Recorder()
    store.put(pkey("a"), pod("a", "gone"))
    ev = Evictor(store, clock, startup_grace=1000, gone_quarantine=10, events=events)  # type: ignore[arg-type]
    # First a quarantine: the node may be about to register.
    assert await ev.reconcile_once() == []
    await clock.advance(5)
    assert await ev.reconcile_once() == []
    store.put(pkey("b"), pod("b", "late"))  # another missing node, seen later
    await clock.advance(5)
    acts = await ev.reconcile_once()
    assert [(type(a), a.name) for a in acts] == [(Evict, "a")]
    assert pkey("a") not in store.data and pkey("b") in store.data
    assert events.events[0][:2] == ("a", NODE_LOST)
    assert ev.collected._value.get() == 1


async def test_a_node_that_comes_back_between_plan_and_write_keeps_its_pod(clock: FakeClock) -> None:
    store = MemStore()
    store.put(NODES.key("", "n1"), unreachable("n1", since=T0 - 1000))
    store.put(NODES.key("", "ok"), node("ok"))
    store.put(pkey("a"), pod("a", "n1"))
    ev = Evictor(store, clock, startup_grace=0)  # type: ignore[arg-type]
    real_list = store.list_raw

    async def racing_list(prefix: str) -> tuple[list[KeyValue], int]:
        out = await real_list(prefix)
        if prefix == PODS.prefix():
            store.put(NODES.key("", "n1"), node("n1"))  # the agent is back: taint removed
        return out

    store.list_raw = racing_list  # type: ignore[method-assign]
    acts = await ev.reconcile_once()
    assert [type(a) for a in acts] == [Evict]
    a = store.obj(pkey("a"), pod_pb2.Pod)
    assert a is not None and a.status.phase == "Running"  # the conditional write refused


async def test_collect_refuses_when_the_node_reappears(clock: FakeClock) -> None:
    store = MemStore()
    p = pod("a", "n1", phase="Failed")
    store.put(pkey("a"), p)
    ev = Evictor(store, clock)  # type: ignore[arg-type]
    store.put(NODES.key("", "n1"), node("n1"))
    await ev._collect("default", "a", "n1", store.data[pkey("a")].mod_revision)
    assert pkey("a") in store.data


async def test_unstamped_taints_get_a_time(clock: FakeClock) -> None:
    store = MemStore()
    store.put(NODES.key("", "n1"), node("n1", taints=[("dedicated", "NoExecute", None)]))
    ev = Evictor(store, clock, startup_grace=0)  # type: ignore[arg-type]
    await ev.reconcile_once()
    n = store.obj(NODES.key("", "n1"), node_pb2.Node)
    assert n is not None and n.spec.taints[0].time_added.seconds == int(T0)


async def test_pods_are_not_listed_when_nothing_is_tainted_or_gone(clock: FakeClock) -> None:
    store = MemStore()
    store.put(NODES.key("", "n1"), node("n1"))
    ev = Evictor(store, clock, startup_grace=0, sweep_seconds=30)  # type: ignore[arg-type]
    listed: list[str] = []
    real_list, real_list_raw = store.list, store.list_raw

    async def counting(prefix: str, cls: type[M]) -> tuple[list[M], int]:
        listed.append(prefix)
        return await real_list(prefix, cls)

    async def counting_raw(prefix: str) -> tuple[list[KeyValue], int]:
        listed.append(prefix)
        return await real_list_raw(prefix)

    store.list = counting  # type: ignore[method-assign]
    store.list_raw = counting_raw  # type: ignore[method-assign]
    await ev.reconcile_once()  # first pass sweeps
    listed.clear()
    await clock.advance(5)
    await ev.reconcile_once()
    assert listed == [NODES.prefix()]
    store.put(NODES.key("", "n1"), unreachable("n1"))
    await ev.reconcile_once()
    assert PODS.prefix() in listed


async def test_a_pass_keeps_only_the_pods_it_can_act_on() -> None:
    """Every pod is read, but only those on missing or NoExecute-tainted nodes are kept (a
    pass over 150,000 pods held them all decoded before), in store order, each decoded with
    its revision."""
    store = MemStore()
    for name, node_name in [("a", "gone"), ("b", "ok"), ("c", "tainted"), ("d", ""), ("e", "gone")]:
        store.put(pkey(name), pod(name, node_name))
    kvs, _ = await store.list_raw(PODS.prefix())
    kept = await pods_plan_reads(kvs, {"ok", "tainted"}, {"tainted"})
    assert [p.metadata.name for p in kept] == ["a", "c", "e"]
    assert [p.metadata.resource_version for p in kept] == [store.data[pkey(n)].mod_revision for n in "ace"]
