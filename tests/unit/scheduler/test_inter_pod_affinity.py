"""InterPodAffinity (filter) and InterPodAffinityScore: table-driven over builders."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.framework.cache import Cache
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.status import Code
from scheduler.framework.types import HOSTNAME_LABEL, PodInfo
from scheduler.plugins.inter_pod_affinity import (
    AFFINITY,
    ANTI_AFFINITY,
    EXISTING_ANTI_AFFINITY,
    InterPodAffinity,
)
from scheduler.plugins.inter_pod_affinity_score import InterPodAffinityScore
from tests.unit.scheduler.builders import cache_of, make_node, make_pod

ZONE = "topology.kubernetes.io/zone"
CLASS = "cowpod.io/class"


def cluster(*pods: PodInfo) -> Cache:
    """n1, n2 in zone a (class small); n3 in zone b (class big); n4 without zone or class."""
    return cache_of(
        make_node("n1").label(ZONE, "a").label(CLASS, "small"),
        make_node("n2").label(ZONE, "a").label(CLASS, "small"),
        make_node("n3").label(ZONE, "b").label(CLASS, "big"),
        make_node("n4"),
        pods=pods,
    )


def verdicts(pod: PodInfo, cache: Cache) -> dict[str, str]:
    """node -> "" (fits) or the reason; the batch mask must agree with the per-node answer."""
    plugin, state = InterPodAffinity(), CycleState()
    plugin.pre_filter(state, pod, cache)
    out = {}
    for s in cache.states:
        st = plugin.filter(state, pod, s)
        out[str(s.info.name)] = "" if st.ok else st.reasons[0]
    mask = plugin.filter_batch(state, pod, cache)
    assert list(mask) == [out[str(s.info.name)] == "" for s in cache.states]
    return out


WEB_N1 = make_pod("web-1").label("app", "web").node("n1").build()
DB_N3 = make_pod("db-1").label("app", "db").node("n3").build()


@pytest.mark.parametrize(
    ("case", "pod", "placed", "fits"),
    [
        ("anti on hostname: one per VM",
         make_pod("web-2").label("app", "web").pod_affinity(HOSTNAME_LABEL, anti=True, app="web"),
         (WEB_N1,), {"n2", "n3", "n4"}),
        ("anti on zone: the whole zone is out, a node without the key is fine",
         make_pod("web-2").pod_affinity(ZONE, anti=True, app="web"), (WEB_N1,), {"n3", "n4"}),
        ("affinity on VM class: next to the db's class only",
         make_pod("cache").pod_affinity(CLASS, app="db"), (DB_N3,), {"n3"}),
        ("affinity on zone: both nodes of the zone",
         make_pod("cache").pod_affinity(ZONE, app="web"), (WEB_N1,), {"n1", "n2"}),
        ("affinity with no matching pod anywhere: nothing fits",
         make_pod("cache").pod_affinity(ZONE, app="db"), (WEB_N1,), set()),
        ("first of a self-affine group goes anywhere the key exists",
         make_pod("web-1").label("app", "web").pod_affinity(ZONE, app="web"), (), {"n1", "n2", "n3"}),
        ("other namespaces do not count",
         make_pod("x", namespace="team").pod_affinity(HOSTNAME_LABEL, anti=True, app="web"),
         (WEB_N1,), {"n1", "n2", "n3", "n4"}),
        ("listed namespaces do",
         make_pod("x", namespace="team").pod_affinity(HOSTNAME_LABEL, anti=True, namespaces=("default",),
                                                      app="web"),
         (WEB_N1,), {"n2", "n3", "n4"}),
        ("an existing pod's anti-affinity keeps matching pods out of its zone",
         make_pod("web-2").label("app", "web"),
         (make_pod("lonely").node("n3").pod_affinity(ZONE, anti=True, app="web").build(),),
         {"n1", "n2", "n4"}),
        ("no terms: everything fits", make_pod("plain"), (WEB_N1,), {"n1", "n2", "n3", "n4"}),
    ],
)
def test_filter(case: str, pod: object, placed: tuple[PodInfo, ...], fits: set[str]) -> None:
    got = verdicts(pod.build(), cluster(*placed))  # type: ignore[attr-defined]
    assert {n for n, why in got.items() if not why} == fits, case


def test_reasons_and_codes() -> None:
    lonely = make_pod("lonely").node("n3").pod_affinity(ZONE, anti=True, app="x").build()
    cache = cluster(WEB_N1, lonely)
    p = make_pod("p").label("app", "x").pod_affinity(HOSTNAME_LABEL, anti=True, app="web").build()
    assert verdicts(p, cache) == {"n1": ANTI_AFFINITY, "n2": "", "n3": EXISTING_ANTI_AFFINITY, "n4": ""}
    plugin, state = InterPodAffinity(), CycleState()
    pod = make_pod("p").pod_affinity(ZONE, app="web").build()
    plugin.pre_filter(state, pod, cache)
    n4 = cache.node("n4")
    assert n4 is not None
    st = plugin.filter(state, pod, n4)
    assert st.reasons == (AFFINITY,) and st.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def test_anti_affinity_pods_leave_the_cache_index_when_removed() -> None:
    lonely = make_pod("lonely").node("n3").pod_affinity(ZONE, anti=True, app="web").build()
    cache = cluster(lonely)
    assert [p.name for p, _ in cache.anti_affinity_pods()] == ["lonely"]
    cache.remove_pod(lonely.uid)
    assert list(cache.anti_affinity_pods()) == []
    assert verdicts(make_pod("web").label("app", "web").build(), cache)["n3"] == ""


def test_score_prefers_affinity_and_avoids_anti_affinity() -> None:
    cache = cluster(WEB_N1, DB_N3)
    pod = (make_pod("p").pod_affinity(ZONE, weight=50, app="web")
           .pod_affinity(HOSTNAME_LABEL, anti=True, weight=100, app="web").build())
    plugin, state = InterPodAffinityScore(), CycleState()
    assert not plugin.skip(pod)
    plugin.pre_score(state, pod, cache)
    raw = np.array([plugin.score(state, pod, s) for s in cache.states], np.float64)
    assert dict(zip((str(s.info.name) for s in cache.states), raw.tolist(), strict=True)) == {
        "n1": 50 - 100, "n2": 50, "n3": 0, "n4": 0}
    scores = plugin.normalize(state, pod, raw)
    assert scores.tolist() == [0.0, 100.0, 50.0, 50.0]  # -50..50 scaled to 0..100
    assert plugin.skip(make_pod("plain").build())
