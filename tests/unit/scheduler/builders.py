"""Builders for scheduler tests: `make_pod("p").req(cpu="500m").label("app", "web").build()`."""

from __future__ import annotations

import itertools
from typing import Any

from scheduler.framework.cache import Cache
from scheduler.framework.types import (
    HOSTNAME_LABEL,
    AffinityTerm,
    HostPort,
    LabelSelector,
    NodeInfo,
    NodeName,
    PodInfo,
    PodUID,
    PreferredTerm,
    Requirement,
    Resources,
    SelectorTerm,
    SpreadConstraint,
    Taint,
    Toleration,
    WeightedAffinityTerm,
)

_uids = itertools.count(1)
_SUFFIX = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "M": 10**6, "G": 10**9}


def cpu(q: str | int) -> int:
    s = str(q)
    return int(s[:-1]) if s.endswith("m") else int(float(s) * 1000)


def mem(q: str | int) -> int:
    s = str(q)
    for suf, mult in _SUFFIX.items():
        if s.endswith(suf):
            return int(float(s[: -len(suf)]) * mult)
    return int(s)


class PodBuilder:
    def __init__(self, name: str, namespace: str = "default") -> None:
        self.kw: dict[str, Any] = {
            "uid": PodUID(f"uid-{name}-{next(_uids)}"),
            "namespace": namespace,
            "name": name,
            "labels": {},
        }
        self._req = Resources(pods=1)
        self._ports: list[HostPort] = []
        self._sel: list[tuple[str, str]] = []
        self._req_terms: list[SelectorTerm] = []
        self._pref: list[PreferredTerm] = []
        self._tol: list[Toleration] = []
        self._spread: list[SpreadConstraint] = []
        self._pod_aff: dict[str, list[Any]] = {
            "pod_affinity": [], "pod_anti_affinity": [],
            "preferred_pod_affinity": [], "preferred_pod_anti_affinity": []}

    def req(self, cpu: str | int = 0, memory: str | int = 0, disk: str | int = 0) -> PodBuilder:
        self._req = Resources(globals()["cpu"](cpu), mem(memory), 1, mem(disk))
        return self

    def label(self, key: str, value: str) -> PodBuilder:
        self.kw["labels"][key] = value
        return self

    def priority(self, p: int) -> PodBuilder:
        self.kw["priority"] = p
        return self

    def preemption(self, policy: str) -> PodBuilder:
        self.kw["preemption_policy"] = policy
        return self

    def terminating(self) -> PodBuilder:
        self.kw["terminating"] = True
        return self

    def nominated(self, node: str) -> PodBuilder:
        self.kw["nominated_node"] = node
        return self

    def created(self, t: float) -> PodBuilder:
        self.kw["created"] = t
        return self

    def node(self, name: str) -> PodBuilder:
        self.kw["node_name"] = name
        return self

    def selector(self, key: str, value: str) -> PodBuilder:
        self._sel.append((key, value))
        return self

    def affinity(self, *reqs: tuple[str, str, tuple[str, ...]]) -> PodBuilder:
        """One required term (ORed with other calls) of (key, operator, values)."""
        self._req_terms.append(SelectorTerm(tuple(Requirement(k, op, v) for k, op, v in reqs)))
        return self

    def preferred(self, weight: int, key: str, op: str, *values: str) -> PodBuilder:
        self._pref.append(PreferredTerm(weight, SelectorTerm((Requirement(key, op, values),))))
        return self

    def toleration(self, key: str = "", op: str = "Equal", value: str = "", effect: str = "") -> PodBuilder:
        self._tol.append(Toleration(key, op, value, effect))
        return self

    def host_port(self, port: int, protocol: str = "TCP", ip: str = "") -> PodBuilder:
        self._ports.append(HostPort(port, protocol, ip))
        return self

    def spread(self, key: str, max_skew: int = 1, when: str = "DoNotSchedule", **match: str) -> PodBuilder:
        sel = LabelSelector(tuple(sorted(match.items())))
        self._spread.append(SpreadConstraint(max_skew, key, when, sel))
        return self

    def pod_affinity(self, key: str, *, anti: bool = False, weight: int = 0,
                     namespaces: tuple[str, ...] | None = None, **match: str) -> PodBuilder:
        """A podAffinity (anti: podAntiAffinity) term on topology `key` for pods labelled
        `match`; required, or preferred with `weight`. Namespaces default to the pod's own."""
        ns = (self.kw["namespace"],) if namespaces is None else namespaces
        term = AffinityTerm(LabelSelector(tuple(sorted(match.items()))), key, ns)
        field = ("preferred_" if weight else "") + ("pod_anti_affinity" if anti else "pod_affinity")
        self._pod_aff[field].append(WeightedAffinityTerm(weight, term) if weight else term)
        return self

    def build(self) -> PodInfo:
        return PodInfo(
            **self.kw,
            **{k: tuple(v) for k, v in self._pod_aff.items()},
            requests=self._req,
            host_ports=tuple(self._ports),
            node_selector=tuple(sorted(self._sel)),
            required_affinity=tuple(self._req_terms),
            preferred_affinity=tuple(self._pref),
            tolerations=tuple(self._tol),
            spread=tuple(self._spread),
        )


class NodeBuilder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.labels: dict[str, str] = {HOSTNAME_LABEL: name}
        self.taints: list[Taint] = []
        self._alloc = Resources(4000, 8 << 30, 110)
        self._unsched = False
        self._ready = True

    def alloc(
        self, cpu: str | int = "4", memory: str | int = "8Gi", pods: int = 110, disk: str | int = 0
    ) -> NodeBuilder:
        self._alloc = Resources(globals()["cpu"](cpu), mem(memory), pods, mem(disk))
        return self

    def label(self, key: str, value: str) -> NodeBuilder:
        self.labels[key] = value
        return self

    def taint(self, key: str, value: str = "", effect: str = "NoSchedule") -> NodeBuilder:
        self.taints.append(Taint(key, value, effect))
        return self

    def cordon(self) -> NodeBuilder:
        self._unsched = True
        return self

    def not_ready(self) -> NodeBuilder:
        self._ready = False
        return self

    def build(self) -> NodeInfo:
        return NodeInfo(
            NodeName(self.name),
            dict(self.labels),
            tuple(self.taints),
            self._unsched,
            self._ready,
            self._alloc,
        )


def make_pod(name: str = "p", namespace: str = "default") -> PodBuilder:
    return PodBuilder(name, namespace)


def make_node(name: str = "n1") -> NodeBuilder:
    return NodeBuilder(name)


def cache_of(*nodes: NodeBuilder | NodeInfo, pods: tuple[PodInfo, ...] = ()) -> Cache:
    """A cache holding `nodes` and the bound `pods` (each pod's node_name says where)."""
    c = Cache(initial_capacity=2)
    for n in nodes:
        c.set_node(n.build() if isinstance(n, NodeBuilder) else n)
    for p in pods:
        c.set_pod(p)
    return c
