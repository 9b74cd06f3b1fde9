"""The framework end to end over a cache: placement, ties, sampling, and the
unschedulable message."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np

from scheduler.config import SchedulerConfig, build_profile
from scheduler.framework.cache import Cache
from scheduler.framework.runtime import Framework, nodes_to_score
from scheduler.framework.status import Code
from scheduler.plugins import PluginContext
from tests.unit.scheduler.builders import cache_of, make_node, make_pod


def framework(seed: int = 1, **cfg: object) -> Framework:
    c = SchedulerConfig(**cfg)  # type: ignore[arg-type]
    p = build_profile(c, PluginContext())
    return Framework(
        p.filters,
        p.scores,
        percentage_of_nodes_to_score=c.percentage_of_nodes_to_score,
        rng=random.Random(seed),
    )


def test_message_counts_reasons_like_kubernetes() -> None:
    nodes = [make_node(f"m{i}").alloc(cpu="4", memory="1Gi") for i in range(3)] + [
        make_node(f"g{i}").taint("dedicated", "gpu") for i in range(2)
    ]
    res = framework().schedule(make_pod().req(cpu="1", memory="2Gi").build(), cache_of(*nodes))
    assert res.node is None and res.diagnosis is not None
    assert res.diagnosis.message() == (
        "0/5 nodes are available: 3 Insufficient memory, 2 node(s) had untolerated taint {dedicated: gpu}."
    )
    assert res.diagnosis.rejectors == {"NodeResourcesFit", "TaintToleration"}
    assert res.diagnosis.code == Code.UNSCHEDULABLE


def test_message_with_no_nodes() -> None:
    res = framework().schedule(make_pod().build(), Cache())
    assert res.diagnosis is not None and res.diagnosis.message() == "0/0 nodes are available."


def test_first_failing_filter_owns_the_node() -> None:
    # Cordoned AND too small: reported as cordoned only (filters run in order).
    cache = cache_of(make_node("n1").cordon().alloc(cpu="1"), make_node("n2").alloc(cpu="1"))
    res = framework().schedule(make_pod().req(cpu="2").build(), cache)
    assert res.diagnosis is not None
    assert res.diagnosis.reasons == Counter({"node(s) were unschedulable": 1, "Insufficient cpu": 1})


def test_places_on_the_only_feasible_node_and_assume_consumes_it() -> None:
    cache = cache_of(make_node("small").alloc(cpu="1"), make_node("big").alloc(cpu="4"))
    fw = framework()
    pod = make_pod("a").req(cpu="3").build()
    res = fw.schedule(pod, cache)
    assert res.node == "big"
    cache.assume(pod, "big")
    res = fw.schedule(make_pod("b").req(cpu="3").build(), cache)
    assert res.node is None


def test_ties_are_broken_at_random() -> None:
    cache = cache_of(*(make_node(f"n{i}") for i in range(4)))
    fw = framework(seed=3)
    picks = {fw.schedule(make_pod(f"p{i}").build(), cache).node for i in range(40)}
    assert len(picks) == 4


def test_least_allocated_spreads_and_most_allocated_packs() -> None:
    def place(**cfg: object) -> Counter[str]:
        cache = cache_of(*(make_node(f"n{i}").alloc(cpu="4", memory="8Gi") for i in range(4)))
        fw = framework(**cfg)
        got: Counter[str] = Counter()
        for i in range(8):
            pod = make_pod(f"p{i}").req(cpu="500m", memory="1Gi").build()
            node = fw.schedule(pod, cache).node
            assert node is not None
            cache.assume(pod, node)
            got[node] += 1
        return got

    assert sorted(place().values()) == [2, 2, 2, 2]
    packed = place(scores=(("NodeResourcesMostAllocated", 1.0),))
    assert sorted(packed.values()) == [8]


def test_topology_spread_one_per_node() -> None:
    cache = cache_of(*(make_node(f"n{i}") for i in range(5)))
    fw = framework()
    used = []
    for i in range(5):
        pod = make_pod(f"w{i}").label("app", "web").spread("kubernetes.io/hostname", 1, app="web").build()
        node = fw.schedule(pod, cache).node
        assert node is not None
        cache.assume(pod, node)
        used.append(node)
    assert len(set(used)) == 5


def test_sampling_scores_a_rotating_subset() -> None:
    assert nodes_to_score(50, 0) == 50
    assert nodes_to_score(5000, 0) == 500  # 50% - 5000/125 = 10%
    assert nodes_to_score(100_000, 0) == 5000  # never below 5%
    assert nodes_to_score(5000, 100) == 5000
    cache = cache_of(*(make_node(f"n{i}") for i in range(1000)))
    fw = framework(percentage_of_nodes_to_score=10)
    seen = set()
    for i in range(10):
        res = fw.schedule(make_pod(f"p{i}").build(), cache)
        assert res.scored == 100 and res.feasible == 1000
        seen.add(res.node)
    assert len(seen) == 10


def test_static_masks_are_memoised_per_generation() -> None:
    cache = cache_of(make_node("a").label("disk", "ssd"), make_node("b"))
    fw = framework()
    pod = make_pod().selector("disk", "ssd").build()
    assert fw.schedule(pod, cache).node == "a"
    gen = cache.generation
    cache.set_node(make_node("b").label("disk", "ssd").build())
    assert cache.generation > gen
    cache.assume(make_pod("x").req(cpu="4").build(), "a")
    assert fw.schedule(pod, cache).node == "b"


def test_batch_filters_agree_with_per_node_on_random_clusters() -> None:
    rng = random.Random(11)
    fw = framework()
    for trial in range(5):
        nodes = []
        for i in range(30):
            nb = make_node(f"n{i}").alloc(
                cpu=f"{rng.randint(500, 4000)}m", memory=rng.randint(1, 8) << 30, pods=rng.randint(1, 5)
            )
            if rng.random() < 0.3:
                nb.label("zone", rng.choice("abc"))
            if rng.random() < 0.2:
                nb.taint("dedicated", rng.choice(["gpu", "db"]))
            if rng.random() < 0.1:
                nb.cordon()
            nodes.append(nb)
        cache = cache_of(*nodes)
        for j in range(60):
            pb = make_pod(f"p{trial}-{j}").req(cpu=f"{rng.randint(0, 1500)}m", memory=rng.randint(0, 3) << 30)
            pb.label("app", rng.choice(["a", "b"]))
            if rng.random() < 0.3:
                pb.spread("zone", 1, app="a")
            if rng.random() < 0.2:
                pb.host_port(rng.choice([80, 443]))
            pod = pb.build()
            from scheduler.framework.cycle_state import CycleState

            state = CycleState()
            _mask, applied = fw.find_feasible(state, pod, cache)
            for f, m in applied:
                per = np.array([f.filter(state, pod, s).ok for s in cache.states])
                assert (m == per).all(), f.name
            res = fw.schedule(pod, cache)
            if res.node is not None:
                cache.assume(pod, res.node)
