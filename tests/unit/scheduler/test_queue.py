"""Queue order, back-off and event-driven requeueing, on a FakeClock."""

from __future__ import annotations

import asyncio

import pytest

from cowpod.clock import FakeClock
from scheduler.framework.events import NODE_ADD, POD_DELETE, Action, ClusterEvent, Resource
from scheduler.framework.queue import WILDCARD_REJECTOR, SchedulingQueue
from scheduler.plugins.node_affinity import NodeAffinity
from scheduler.plugins.node_resources_fit import NodeResourcesFit
from scheduler.plugins.priority_sort import PrioritySort
from scheduler.plugins.taint_toleration import TaintToleration
from tests.unit.scheduler.builders import make_pod


def new_queue(clock: FakeClock, *, pop_from_backoff: bool = False) -> SchedulingQueue:
    plugins = [NodeResourcesFit(), TaintToleration(), NodeAffinity()]
    return SchedulingQueue(
        PrioritySort(),
        clock,
        events_by_plugin={p.name: p.events() for p in plugins},
        initial_backoff=1.0,
        max_backoff=10.0,
        max_unschedulable_s=60.0,
        pop_from_backoff=pop_from_backoff,
    )


def names(q: SchedulingQueue) -> list[str]:
    out = []
    while (qp := q.pop_nowait()) is not None:
        out.append(qp.pod.name)
    return out


def test_priority_then_age() -> None:
    q = new_queue(FakeClock())
    q.add(make_pod("old-low").created(1).build())
    q.add(make_pod("new-high").priority(100).created(5).build())
    q.add(make_pod("new-low").created(3).build())
    q.add(make_pod("old-high").priority(100).created(2).build())
    assert names(q) == ["old-high", "new-high", "old-low", "new-low"]


def test_backoff_doubles_to_a_cap() -> None:
    q = new_queue(FakeClock())
    assert [q.backoff_duration(a) for a in range(1, 7)] == [1, 2, 4, 8, 10, 10]


async def test_unschedulable_pod_waits_for_a_relevant_event_and_its_backoff() -> None:
    clock = FakeClock()
    q = new_queue(clock)
    q.add(make_pod("p").build())
    qp = q.pop_nowait()
    assert qp is not None and qp.attempts == 1
    q.unschedulable(qp, {"NodeResourcesFit"})
    assert q.depth()["unschedulable"] == 1
    # An event NodeResourcesFit does not care about leaves it parked.
    assert q.on_event(ClusterEvent(Resource.NODE, Action.UPDATE_LABEL)) == 0
    await clock.advance(30)
    assert q.pop_nowait() is None
    # A pod deletion frees resources: it moves (backoff of 1s long expired -> active).
    assert q.on_event(POD_DELETE) == 1
    qp = q.pop_nowait()
    assert qp is not None and qp.attempts == 2
    # Second failure: 2s back-off. The event comes at once, so it waits in back-off.
    q.unschedulable(qp, {"NodeResourcesFit"})
    q.on_event(NODE_ADD)
    assert q.depth()["backoff"] == 1
    assert q.pop_nowait() is None
    await clock.advance(1.9)
    assert q.pop_nowait() is None
    await clock.advance(0.2)
    qp = q.pop_nowait()
    assert qp is not None and qp.pod.name == "p"


async def test_idle_queue_pops_an_event_moved_pod_before_its_backoff_ends() -> None:
    clock = FakeClock()
    q = new_queue(clock, pop_from_backoff=True)
    q.add(make_pod("waits").build())
    qp = q.pop_nowait()
    assert qp is not None
    q.unschedulable(qp, {"NodeResourcesFit"})
    # Parked pods are not popped early: only an event moves them.
    assert q.pop_nowait() is None
    q.on_event(NODE_ADD)
    assert q.depth()["backoff"] == 1
    # A pod in the active heap goes first; the backed-off one only when nothing is active.
    q.add(make_pod("fresh").build())
    first, second = q.pop_nowait(), q.pop_nowait()
    assert first is not None and first.pod.name == "fresh"
    assert second is not None and second.pod.name == "waits" and second.attempts == 2
    assert q.depth()["backoff"] == 0 and clock.monotonic() == 0


async def test_idle_queue_still_waits_out_an_error_backoff() -> None:
    clock = FakeClock()
    q = new_queue(clock, pop_from_backoff=True)
    q.add(make_pod("p").build())
    qp = q.pop_nowait()
    assert qp is not None
    q.done(qp.pod.uid)
    q.error(qp)  # a failed bind: punished by the whole back-off
    assert q.pop_nowait() is None
    await clock.advance(1.1)
    qp = q.pop_nowait()
    assert qp is not None and qp.pod.name == "p"


async def test_parked_pods_are_retried_after_max_unschedulable() -> None:
    clock = FakeClock()
    q = new_queue(clock)
    q.add(make_pod("p").build())
    qp = q.pop_nowait()
    assert qp is not None
    q.unschedulable(qp, {"TaintToleration"})
    await clock.advance(59)
    assert q.pop_nowait() is None
    await clock.advance(2)
    assert q.pop_nowait() is not None


def test_no_nodes_at_all_waits_for_any_node_event() -> None:
    clock = FakeClock()
    q = new_queue(clock)
    q.add(make_pod("p").build())
    qp = q.pop_nowait()
    assert qp is not None
    q.unschedulable(qp, {WILDCARD_REJECTOR})
    assert q.on_event(POD_DELETE) == 0
    assert q.on_event(NODE_ADD) == 1


def test_update_requeues_only_when_scheduling_fields_change() -> None:
    clock = FakeClock()
    q = new_queue(clock)
    b = make_pod("p")
    pod = b.build()
    q.add(pod)
    qp = q.pop_nowait()
    assert qp is not None
    q.unschedulable(qp, {"NodeAffinity"})
    # A status write bumps resource_version only: stays parked.
    from dataclasses import replace

    q.add(replace(pod, resource_version=99))
    assert q.depth()["unschedulable"] == 1 and qp.pod.resource_version == 99
    # A new toleration might change the answer: retried (after its back-off).
    q.add(replace(pod, tolerations=(make_pod().toleration("x", "Exists").build().tolerations[0],)))
    assert q.depth()["unschedulable"] == 0


def test_delete_removes_everywhere() -> None:
    q = new_queue(FakeClock())
    p = make_pod("p").build()
    q.add(p)
    q.delete(p.uid)
    assert q.pop_nowait() is None and len(q) == 0


def test_error_goes_to_backoff_without_an_event() -> None:
    clock = FakeClock()
    q = new_queue(clock)
    q.add(make_pod("p").build())
    qp = q.pop_nowait()
    assert qp is not None
    q.done(qp.pod.uid)  # assumed, bind in flight
    q.error(qp)  # bind failed
    assert q.depth()["backoff"] == 1


async def test_pop_many_sleeps_until_backoff_expires_without_polling() -> None:
    clock = FakeClock()
    q = new_queue(clock)
    q.add(make_pod("p").build())
    qp = q.pop_nowait()
    assert qp is not None
    q.error(qp)
    task = asyncio.ensure_future(q.pop_many(10))
    for _ in range(5):  # let pop_many reach its sleep
        await asyncio.sleep(0)
    assert not task.done()
    await clock.advance(0.5)
    assert not task.done()
    await clock.advance(0.6)
    got = await asyncio.wait_for(task, 1)
    assert [g.pod.name for g in got] == ["p"]


async def test_pop_many_wakes_on_add() -> None:
    q = new_queue(FakeClock())
    task = asyncio.ensure_future(q.pop_many(10))
    await asyncio.sleep(0)
    q.add(make_pod("a").build())
    q.add(make_pod("b").build())
    got = await asyncio.wait_for(task, 1)
    assert {g.pod.name for g in got} >= {"a"}


@pytest.mark.parametrize("n", [1, 3])
async def test_pop_many_respects_limit(n: int) -> None:
    q = new_queue(FakeClock())
    for i in range(5):
        q.add(make_pod(f"p{i}").created(i).build())
    got = await q.pop_many(n)
    assert [g.pod.name for g in got] == [f"p{i}" for i in range(n)]
    assert q.depth() == {"active": 5 - n, "backoff": 0, "unschedulable": 0, "inflight": n}
