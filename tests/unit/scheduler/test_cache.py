"""The cache: assume/forget/confirm, node removal keeps rows dense."""

from __future__ import annotations

from dataclasses import replace

from scheduler.framework.cache import Cache
from scheduler.framework.events import Action
from scheduler.framework.types import Resources
from tests.unit.scheduler.builders import cache_of, make_node, make_pod


def used(cache: Cache, node: str) -> Resources:
    s = cache.node(node)
    assert s is not None
    assert cache.req_cpu[s.row] == s.requested.cpu_millis
    assert cache.req_mem[s.row] == s.requested.memory_bytes
    return s.requested


def test_assume_then_confirm_then_delete() -> None:
    cache = cache_of(make_node("n1"), make_node("n2"))
    pod = make_pod().req(cpu="1", memory="1Gi").build()
    cache.assume(pod, "n1")
    assert cache.is_assumed(pod.uid) and used(cache, "n1").cpu_millis == 1000
    cache.set_pod(replace(pod, node_name="n1"))  # the watch confirms
    assert not cache.is_assumed(pod.uid) and used(cache, "n1").cpu_millis == 1000
    cache.forget(pod.uid)  # a late failure notice does not undo a confirmed pod
    assert used(cache, "n1").cpu_millis == 1000
    cache.remove_pod(pod.uid)
    assert used(cache, "n1") == Resources()


def test_forget_releases_and_confirm_elsewhere_moves() -> None:
    cache = cache_of(make_node("n1"), make_node("n2"))
    pod = make_pod().req(cpu="1").build()
    cache.assume(pod, "n1")
    cache.forget(pod.uid)
    assert used(cache, "n1") == Resources() and cache.pod(pod.uid) is None
    cache.assume(pod, "n1")
    cache.set_pod(replace(pod, node_name="n2"))  # another scheduler won
    assert used(cache, "n1") == Resources() and used(cache, "n2").cpu_millis == 1000


def test_terminal_pods_hold_nothing() -> None:
    cache = cache_of(make_node("n1"))
    pod = make_pod().req(cpu="1").node("n1").build()
    cache.set_pod(pod)
    cache.set_pod(replace(pod, terminal=True))
    assert used(cache, "n1") == Resources()


def test_remove_node_swaps_last_row_in() -> None:
    cache = cache_of(make_node("a"), make_node("b"), make_node("c"))
    cache.set_pod(make_pod("pc").req(cpu="3").node("c").build())
    cache.remove_node("a")
    assert cache.n == 2 and [s.info.name for s in cache.states] == ["c", "b"]
    assert used(cache, "c").cpu_millis == 3000
    assert list(cache.col("req_cpu")) == [3000, 0]


def test_pods_for_unknown_nodes_wait_as_orphans() -> None:
    cache = Cache()
    pod = make_pod().req(cpu="1").node("late").build()
    cache.set_pod(pod)
    cache.set_node(make_node("late").build())
    assert used(cache, "late").cpu_millis == 1000
    cache.remove_node("late")
    cache.set_node(make_node("late").build())
    assert used(cache, "late").cpu_millis == 1000


def test_set_node_reports_what_changed() -> None:
    cache = Cache()
    assert cache.set_node(make_node("n").build()) == Action.ADD
    assert cache.set_node(make_node("n").build()) == Action.NONE
    gen = cache.generation
    assert cache.set_node(make_node("n").alloc(cpu="8").build()) == Action.UPDATE_ALLOCATABLE
    assert cache.generation == gen  # allocatable is not static: masks stay valid
    assert cache.set_node(make_node("n").alloc(cpu="8").taint("x").build()) == Action.UPDATE_TAINT
    assert cache.generation == gen + 1


def test_growth_keeps_columns_and_counters() -> None:
    cache = Cache(initial_capacity=1)
    sel = make_pod().spread("zone", 1, app="web").build().spread[0].selector
    cache.set_node(make_node("n0").build())
    cache.set_pod(make_pod("w").label("app", "web").node("n0").build())
    assert list(cache.matching_pods("default", sel)) == [1]
    for i in range(1, 10):
        cache.set_node(make_node(f"n{i}").build())
    assert list(cache.matching_pods("default", sel)) == [1] + [0] * 9
    assert cache.col("alloc_cpu").tolist() == [4000] * 10
