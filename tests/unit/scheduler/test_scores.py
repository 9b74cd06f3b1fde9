"""Score plugins: the order they put nodes in, and batch == per-node."""

from __future__ import annotations

import random

import numpy as np
import pytest

from scheduler.framework.cache import Cache
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import ScorePlugin
from scheduler.framework.types import PodInfo
from scheduler.plugins.balanced_allocation import NodeResourcesBalancedAllocation
from scheduler.plugins.least_allocated import NodeResourcesLeastAllocated
from scheduler.plugins.most_allocated import NodeResourcesMostAllocated
from scheduler.plugins.preferred_node_affinity import PreferredNodeAffinity
from scheduler.plugins.taint_toleration_preference import TaintTolerationPreference
from scheduler.plugins.topology_spread_score import PodTopologySpreadScore
from tests.unit.scheduler.builders import cache_of, make_node, make_pod


def scores(plugin: ScorePlugin, pod: PodInfo, cache: Cache) -> dict[str, float]:
    """Normalized score per node; asserts the batch path equals the per-node one."""
    state = CycleState()
    plugin.pre_score(state, pod, cache)
    rows = np.arange(cache.n)
    per_node = np.array([plugin.score(state, pod, s) for s in cache.states], np.float64)
    batch = plugin.score_batch(state, pod, cache, rows)
    if batch is not None:
        np.testing.assert_allclose(batch, per_node, equal_nan=True)
    norm = plugin.normalize(state, pod, per_node)
    return {s.info.name: float(norm[s.row]) for s in cache.states}


def _two_nodes() -> Cache:
    busy = make_pod("busy").req(cpu="3", memory="6Gi").node("busy").build()
    return cache_of(make_node("busy"), make_node("empty"), pods=(busy,))


def test_least_allocated_prefers_empty_node() -> None:
    got = scores(
        NodeResourcesLeastAllocated(), make_pod().req(cpu="500m", memory="1Gi").build(), _two_nodes()
    )
    assert got["empty"] > got["busy"]


def test_most_allocated_packs() -> None:
    got = scores(NodeResourcesMostAllocated(), make_pod().req(cpu="500m", memory="1Gi").build(), _two_nodes())
    assert got["busy"] > got["empty"]
    assert 0 <= got["empty"] <= 100 and 0 <= got["busy"] <= 100


def test_zero_request_pods_still_count_for_scoring() -> None:
    zero = tuple(make_pod(f"z{i}").node("a").build() for i in range(5))
    cache = cache_of(make_node("a"), make_node("b"), pods=zero)
    got = scores(NodeResourcesLeastAllocated(), make_pod().build(), cache)
    assert got["b"] > got["a"]


def test_balanced_prefers_even_use() -> None:
    cpu_heavy = make_pod("c").req(cpu="3", memory="1Gi").node("cpu-heavy").build()
    even = make_pod("e").req(cpu="2", memory="4Gi").node("even").build()
    cache = cache_of(make_node("cpu-heavy"), make_node("even"), pods=(cpu_heavy, even))
    got = scores(NodeResourcesBalancedAllocation(), make_pod().req(cpu="100m", memory="100Mi").build(), cache)
    assert got["even"] > got["cpu-heavy"]


def test_preferred_affinity_weights() -> None:
    cache = cache_of(
        make_node("a").label("zone", "a"), make_node("b").label("zone", "b").label("ssd", "1"), make_node("c")
    )
    pod = make_pod().preferred(10, "zone", "In", "a").preferred(30, "ssd", "Exists").build()
    got = scores(PreferredNodeAffinity(), pod, cache)
    assert got == {"b": 100.0, "a": pytest.approx(100 / 3), "c": 0.0}


def test_prefer_no_schedule_taints_lower_the_score() -> None:
    cache = cache_of(make_node("clean"), make_node("soft").taint("spot", "true", "PreferNoSchedule"))
    got = scores(TaintTolerationPreference(), make_pod().build(), cache)
    assert got["clean"] > got["soft"]
    tolerant = make_pod().toleration("spot", "Exists", effect="PreferNoSchedule").build()
    got = scores(TaintTolerationPreference(), tolerant, cache)
    assert got["clean"] == got["soft"]


def test_soft_spread_prefers_emptier_domains() -> None:
    nodes = [make_node("a").label("zone", "a"), make_node("b").label("zone", "b"), make_node("x")]
    bound = tuple(make_pod(f"w{i}").label("app", "web").node("a").build() for i in range(3))
    pod = make_pod().label("app", "web").spread("zone", 1, "ScheduleAnyway", app="web").build()
    got = scores(PodTopologySpreadScore(), pod, cache_of(*nodes, pods=bound))
    assert got["b"] == 100.0 and got["a"] == 0.0 and got["x"] == 0.0


@pytest.mark.parametrize(
    "plugin",
    [NodeResourcesLeastAllocated(), NodeResourcesMostAllocated(), NodeResourcesBalancedAllocation()],
    ids=lambda p: p.name,
)
def test_allocation_batch_matches_per_node_on_random_clusters(plugin: ScorePlugin) -> None:
    rng = random.Random(7)
    nodes = [
        make_node(f"n{i}").alloc(cpu=f"{rng.randint(0, 8000)}m", memory=rng.randint(0, 16 << 30))
        for i in range(40)
    ]
    pods = tuple(
        make_pod(f"p{i}")
        .req(cpu=f"{rng.randint(0, 900)}m", memory=rng.randint(0, 1 << 30))
        .node(f"n{rng.randrange(40)}")
        .build()
        for i in range(120)
    )
    cache = cache_of(*nodes, pods=pods)
    for _ in range(10):
        scores(
            plugin,
            make_pod().req(cpu=f"{rng.randint(0, 2000)}m", memory=rng.randint(0, 2 << 30)).build(),
            cache,
        )
