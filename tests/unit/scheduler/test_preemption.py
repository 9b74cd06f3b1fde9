"""DefaultPreemption: victim selection (remove all lower, reprieve most important first),
the node choice (Kubernetes' order), eligibility, and the scheduler's nominated pods."""

from __future__ import annotations

import pytest

from cowpod.clock import FakeClock
from scheduler.config import SchedulerConfig, build_profile
from scheduler.framework.cache import Cache
from scheduler.framework.interfaces import CLEAR, Nomination
from scheduler.framework.runtime import Framework
from scheduler.framework.types import NodeName, PodInfo
from scheduler.plugins import PluginContext
from scheduler.plugins.default_preemption import (
    Candidate,
    DefaultPreemption,
    eligible,
    find_candidates,
    pick_candidate,
)
from scheduler.scheduler import Scheduler
from tests.unit.scheduler.builders import cache_of, make_node, make_pod


def framework() -> Framework:
    p = build_profile(SchedulerConfig(), PluginContext())
    return Framework(p.filters, p.scores, post_filters=p.post_filters)


def preempt(pod: PodInfo, cache: Cache) -> Nomination | None:
    fw = framework()
    assert fw.schedule(pod, cache).node is None, "the pod must fit nowhere to begin with"
    return fw.post_filter(pod, cache)


def names(pods: tuple[PodInfo, ...]) -> list[str]:
    return [p.name for p in pods]


def test_default_config_enables_preemption() -> None:
    assert [p.name for p in build_profile(SchedulerConfig(), PluginContext()).post_filters] == [
        DefaultPreemption.name
    ]


def test_removes_the_fewest_least_important_pods() -> None:
    # 4 cores full. The pod needs 2: keeping low-3 (2 cores, most important) is enough.
    pods = (
        make_pod("low-1").node("n1").priority(1).req(cpu="1").build(),
        make_pod("low-2").node("n1").priority(2).req(cpu="1").build(),
        make_pod("low-3").node("n1").priority(3).req(cpu="2").build(),
    )
    cache = cache_of(make_node("n1").alloc(cpu="4"), pods=pods)
    got = preempt(make_pod("high").priority(100).req(cpu="2").build(), cache)
    assert got is not None
    assert got.node == "n1"
    assert sorted(names(got.victims)) == ["low-1", "low-2"]


def test_reprieve_keeps_the_older_of_equal_priority() -> None:
    pods = (
        make_pod("young").node("n1").priority(1).req(cpu="2").created(200).build(),
        make_pod("old").node("n1").priority(1).req(cpu="2").created(100).build(),
    )
    cache = cache_of(make_node("n1").alloc(cpu="4"), pods=pods)
    got = preempt(make_pod("high").priority(5).req(cpu="2").build(), cache)
    assert got is not None and names(got.victims) == ["young"]


@pytest.mark.parametrize("victim_priority", [10, 11])
def test_never_evicts_equal_or_higher_priority(victim_priority: int) -> None:
    pods = (make_pod("other").node("n1").priority(victim_priority).req(cpu="4").build(),)
    cache = cache_of(make_node("n1").alloc(cpu="4"), pods=pods)
    assert preempt(make_pod("p").priority(10).req(cpu="1").build(), cache) is CLEAR


def test_policy_never_does_not_preempt() -> None:
    pods = (make_pod("low").node("n1").priority(0).req(cpu="4").build(),)
    cache = cache_of(make_node("n1").alloc(cpu="4"), pods=pods)
    pod = make_pod("p").priority(10).preemption("Never").req(cpu="1").build()
    assert preempt(pod, cache) is None
    assert preempt(make_pod("q").priority(10).preemption("PreemptLowerPriority").req(cpu="1").build(),
                   cache) is not None


def test_no_node_when_even_removing_every_lower_pod_is_not_enough() -> None:
    pods = (
        make_pod("low").node("n1").priority(0).req(cpu="1").build(),
        make_pod("peer").node("n1").priority(10).req(cpu="3").build(),
    )
    cache = cache_of(make_node("n1").alloc(cpu="4"), pods=pods)
    assert preempt(make_pod("p").priority(10).req(cpu="2").build(), cache) is CLEAR


def test_nodes_a_static_filter_rejects_are_never_candidates() -> None:
    pods = (make_pod("low").node("tainted").priority(0).req(cpu="4").build(),)
    cache = cache_of(make_node("tainted").alloc(cpu="4").taint("dedicated", "gpu"), pods=pods)
    assert preempt(make_pod("p").priority(10).req(cpu="1").build(), cache) is CLEAR


def test_resolves_a_host_port_conflict() -> None:
    pods = (
        make_pod("low").node("n1").priority(0).host_port(8080).build(),
        make_pod("bystander").node("n1").priority(0).build(),
    )
    cache = cache_of(make_node("n1"), pods=pods)
    got = preempt(make_pod("p").priority(1).host_port(8080).build(), cache)
    assert got is not None and names(got.victims) == ["low"]


def test_terminating_pods_are_not_victims_but_count_as_leaving() -> None:
    pods = (make_pod("going").node("n1").priority(0).req(cpu="4").terminating().build(),)
    cache = cache_of(make_node("n1").alloc(cpu="4"), pods=pods)
    got = preempt(make_pod("p").priority(10).req(cpu="1").build(), cache)
    assert got is not None and got.node == "n1" and got.victims == ()


def test_assumed_pods_are_not_victims() -> None:
    cache = cache_of(make_node("n1").alloc(cpu="4"))
    cache.assume(make_pod("binding").priority(0).req(cpu="4").build(), "n1")
    assert preempt(make_pod("p").priority(10).req(cpu="1").build(), cache) is CLEAR


def test_waits_while_its_earlier_victims_terminate() -> None:
    pods = (
        make_pod("going").node("n1").priority(0).req(cpu="2").terminating().build(),
        make_pod("low").node("n1").priority(0).req(cpu="2").build(),
    )
    cache = cache_of(make_node("n1").alloc(cpu="4"), pods=pods)
    pod = make_pod("p").priority(10).req(cpu="3").nominated("n1").build()
    assert not eligible(pod, cache)
    assert preempt(pod, cache) is None  # None, not CLEAR: it keeps its nomination
    # Nominated elsewhere (or not at all), the same pod may preempt here.
    assert eligible(make_pod("q").priority(10).nominated("n2").build(), cache)


def cand(node: str, victims: tuple[PodInfo, ...]) -> Candidate:
    return Candidate(NodeName(node), victims)


def order(*cands: Candidate) -> str | None:
    best = pick_candidate(cands)
    return None if best is None else best.node


def victims(*prios: int, created: float = 0.0) -> tuple[PodInfo, ...]:
    out = [make_pod(f"v{i}").priority(p).created(created).build() for i, p in enumerate(prios)]
    return tuple(sorted(out, key=lambda p: -p.priority))


def test_node_order_follows_kubernetes() -> None:
    # Lowest highest-victim priority wins, even with more victims.
    assert order(cand("a", victims(5)), cand("b", victims(3, 3, 3))) == "b"
    # Then the smallest sum of priorities.
    assert order(cand("a", victims(3, 3)), cand("b", victims(3, 1, 1))) == "b"
    # Then the fewest victims.
    assert order(cand("a", victims(2, 0, 0)), cand("b", victims(2, 0))) == "b"
    # Then the node whose most important victims started latest.
    assert order(cand("a", victims(2, created=100)), cand("b", victims(2, created=200))) == "b"
    # Then the name, so the answer is deterministic.
    assert order(cand("b", victims(2)), cand("a", victims(2))) == "a"
    # A node that needs no eviction at all beats every other.
    assert order(cand("a", victims(0)), cand("b", ())) == "b"
    assert order() is None


def test_picks_the_node_with_the_least_important_victims() -> None:
    pods = (
        make_pod("mid").node("n1").priority(5).req(cpu="4").build(),
        make_pod("low").node("n2").priority(1).req(cpu="4").build(),
        make_pod("peer").node("n3").priority(10).req(cpu="4").build(),
    )
    cache = cache_of(*(make_node(n).alloc(cpu="4") for n in ("n1", "n2", "n3")), pods=pods)
    fw = framework()
    pod = make_pod("p").priority(10).req(cpu="1").build()
    cands = find_candidates(pod, cache, fw)
    assert sorted(c.node for c in cands) == ["n1", "n2"]
    got = fw.post_filter(pod, cache)
    assert got is not None and got.node == "n2" and names(got.victims) == ["low"]


# ---- the scheduler: nomination, victims marked, nominated room held -------------------


def scheduler() -> Scheduler:
    cfg = SchedulerConfig()
    return Scheduler(cfg, build_profile(cfg, PluginContext()), client=None, clock=FakeClock())


def full_node() -> tuple[Scheduler, PodInfo, PodInfo]:
    """A scheduler whose one node (4 cores) is full with `low` (priority 0); `high`
    (priority 100, 3 cores) is pending."""
    s = scheduler()
    s.cache.set_node(make_node("n1").alloc(cpu="4").build())
    low = make_pod("low").node("n1").priority(0).req(cpu="4").build()
    s.cache.set_pod(low)
    return s, low, make_pod("high").priority(100).req(cpu="3").build()


def decide(s: Scheduler, pod: PodInfo) -> str | None:
    """One scheduling attempt for `pod` now (a parked pod is taken out of the queue first)."""
    s.queue.delete(pod.uid)
    s.queue.add(pod)
    qp = s.queue.pop_nowait()
    assert qp is not None and qp.pod.uid == pod.uid
    plans = s.schedule_batch([qp])
    return plans[0].node if plans else None


def test_scheduler_nominates_holds_the_room_and_binds_there() -> None:
    s, low, high = full_node()

    assert decide(s, high) is None
    assert s._nominated[high.uid][0] == "n1"
    got = s.cache.pod(low.uid)
    assert got is not None and got.terminating  # not picked twice before the watch says so
    assert s.metrics.preemption_attempts._value.get() == 1
    # Its victim still terminating: no second preemption, and no new victim.
    assert decide(s, high) is None
    assert s._preempt_q.qsize() == 1

    # The victim is gone: the room is held for `high`, not taken by a lower-priority pod...
    s.cache.remove_pod(low.uid)
    assert decide(s, make_pod("late").priority(0).req(cpu="2").build()) is None
    # ...nor by a lower-priority pod that could preempt (its only "victim" is the stand-in).
    assert decide(s, make_pod("mid").priority(50).req(cpu="2").build()) is None
    # A pod that fits beside it still goes there.
    assert decide(s, make_pod("small").priority(0).req(cpu="1").build()) == "n1"
    assert "mid" not in {p.name for _, p in s._nominated.values()}
    # A pod of higher priority than the nominated one is not held back by it...
    assert decide(s, make_pod("top").priority(1000).req(cpu="3").build()) == "n1"
    # ...and `high` cannot take it back: evicting `small` alone is not enough, so its
    # nomination goes (as in Kubernetes) and the autoscaler may act for it again.
    assert decide(s, high) is None
    assert high.uid not in s._nominated


def test_nominated_pod_binds_where_it_waited() -> None:
    s, low, high = full_node()
    assert decide(s, high) is None
    s.cache.remove_pod(low.uid)
    assert decide(s, make_pod("late").priority(0).req(cpu="2").build()) is None
    assert decide(s, high) == "n1"
    # Binding drops the nomination (the watch shows it bound).
    s._drop_pending(high.uid)
    assert decide(s, make_pod("late2").priority(0).req(cpu="1").build()) == "n1"


def test_scheduler_never_preempts_for_a_never_pod() -> None:
    s = scheduler()
    s.cache.set_node(make_node("n1").alloc(cpu="4").build())
    low = make_pod("low").node("n1").priority(0).req(cpu="4").build()
    s.cache.set_pod(low)
    assert decide(s, make_pod("p").priority(100).preemption("Never").req(cpu="1").build()) is None
    assert s._nominated == {}
    got = s.cache.pod(low.uid)
    assert got is not None and not got.terminating
    assert s.metrics.preemption_attempts._value.get() == 0


def test_cache_knows_the_lowest_priority_of_placed_pods() -> None:
    cache = cache_of(make_node("n1"))
    assert cache.lowest_priority() is None
    a = make_pod("a").node("n1").priority(5).build()
    cache.set_pod(a)
    b = make_pod("b").priority(2).build()
    cache.assume(b, "n1")
    assert cache.lowest_priority() == 2
    cache.forget(b.uid)
    assert cache.lowest_priority() == 5
    cache.set_pod(make_pod("a").node("n1").priority(7).build())  # another pod, same name
    cache.set_pod(PodInfo(a.uid, a.namespace, a.name, priority=9, node_name="n1"))  # a updated
    assert cache.lowest_priority() == 7
    cache.remove_pod(a.uid)
    assert cache.lowest_priority() == 7
    # With nothing below it anywhere, preemption looks at no node.
    assert find_candidates(make_pod("p").priority(7).build(), cache, framework()) == []
