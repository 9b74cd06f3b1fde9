"""The scheduler's config file (`--config scheduler.yaml`), in the spirit of
KubeSchedulerConfiguration: which plugins run at each extension point, score
weights, and the knobs of the queue, the sampling and leader election.

    schedulerName: default-scheduler
    percentageOfNodesToScore: 0        # 0 = adaptive (50% - nodes/125, at least 5%)
    plugins:
      filter: [NodeReady, NodeUnschedulable, NodeAffinity, TaintToleration,
               NodePorts, NodeResourcesFit, PodTopologySpread]
      score:
        - {name: NodeResourcesMostAllocated, weight: 1}   # bin packing
        - {name: PodTopologySpreadScore, weight: 2}
      postFilter: [DefaultPreemption]  # [] turns preemption off

A list given for an extension point replaces the default list. Unknown keys
and plugin names are refused with the field path.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from cowpod.errors import Invalid
from cowpod.leases import SCHEDULER_LEASE_NAME, SYSTEM_NAMESPACE
from scheduler.framework.interfaces import (
    BindPlugin,
    FilterPlugin,
    PostFilterPlugin,
    QueueSortPlugin,
    ScorePlugin,
)
from scheduler.framework.runtime import WeightedScore
from scheduler.plugins import REGISTRY, PluginContext

DEFAULT_FILTERS = (
    "NodeReady",
    "NodeUnschedulable",
    "NodeAffinity",
    "TaintToleration",
    "NodePorts",
    "NodeResourcesFit",
    "PodTopologySpread",
    "InterPodAffinity",
)
DEFAULT_POST_FILTERS = ("DefaultPreemption",)
DEFAULT_SCORES: tuple[tuple[str, float], ...] = (
    ("NodeResourcesLeastAllocated", 1.0),
    ("NodeResourcesBalancedAllocation", 1.0),
    ("PreferredNodeAffinity", 2.0),
    ("TaintTolerationPreference", 1.0),
    ("PodTopologySpreadScore", 2.0),
    ("InterPodAffinityScore", 2.0),
)


@dataclass(frozen=True)
class LeaderElectionConfig:
    # The only lease the scheduler's certificate may take; another needs an admin identity.
    lease_name: str = SCHEDULER_LEASE_NAME
    namespace: str = SYSTEM_NAMESPACE
    lease_duration_s: float = 5.0
    renew_deadline_s: float = 3.5
    retry_period_s: float = 1.0


@dataclass(frozen=True)
class SchedulerConfig:
    scheduler_name: str = "default-scheduler"
    percentage_of_nodes_to_score: int = 0
    # Pods decided per cycle before their bindings go out in one BindBatch.
    batch_size: int = 256
    max_binds_in_flight: int = 4
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 10.0
    max_unschedulable_s: float = 60.0
    # Kubernetes' SchedulerPopFromBackoffQ: an idle scheduler does not make
    # event-moved pods sit out their back-off.
    pop_from_backoff: bool = True
    queue_sort: str = "PrioritySort"
    filters: tuple[str, ...] = DEFAULT_FILTERS
    scores: tuple[tuple[str, float], ...] = DEFAULT_SCORES
    post_filters: tuple[str, ...] = DEFAULT_POST_FILTERS
    binder: str = "DefaultBinder"
    leader_election: LeaderElectionConfig = field(default_factory=LeaderElectionConfig)


_TOP = {
    "schedulerName": ("scheduler_name", str),
    "percentageOfNodesToScore": ("percentage_of_nodes_to_score", int),
    "batchSize": ("batch_size", int),
    "maxBindsInFlight": ("max_binds_in_flight", int),
    "podInitialBackoffSeconds": ("initial_backoff_s", float),
    "podMaxBackoffSeconds": ("max_backoff_s", float),
    "maxUnschedulableSeconds": ("max_unschedulable_s", float),
    "popFromBackoffWhenIdle": ("pop_from_backoff", bool),
}
_LEADER = {
    "leaseName": ("lease_name", str),
    "namespace": ("namespace", str),
    "leaseDurationSeconds": ("lease_duration_s", float),
    "renewDeadlineSeconds": ("renew_deadline_s", float),
    "retryPeriodSeconds": ("retry_period_s", float),
}


def _typed(path: str, value: Any, typ: type) -> Any:
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is bool:
        if not isinstance(value, bool):
            raise Invalid(path, "must be true or false")
        return value
    if not isinstance(value, typ) or isinstance(value, bool):
        raise Invalid(path, f"must be a {typ.__name__}")
    return value


def _mapping(path: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise Invalid(path, "must be a mapping")
    return value


def _plugin_name(path: str, value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(path, "must be a plugin name")
    if value not in REGISTRY:
        raise Invalid(path, f"unknown plugin {value!r}; known: {', '.join(sorted(REGISTRY))}")
    return value


def parse(doc: Any) -> SchedulerConfig:
    if doc is None:
        return SchedulerConfig()
    top = _mapping("", doc)
    kw: dict[str, Any] = {}
    for key, value in top.items():
        if key in _TOP:
            attr, typ = _TOP[key]
            kw[attr] = _typed(key, value, typ)
        elif key == "leaderElection":
            le: dict[str, Any] = {}
            for k, v in _mapping(key, value).items():
                if k not in _LEADER:
                    raise Invalid(f"leaderElection.{k}", "unknown field")
                attr, typ = _LEADER[k]
                le[attr] = _typed(f"leaderElection.{k}", v, typ)
            kw["leader_election"] = LeaderElectionConfig(**le)
        elif key == "plugins":
            kw.update(_plugins(_mapping("plugins", value)))
        elif key in ("apiVersion", "kind"):
            continue
        else:
            raise Invalid(key, "unknown field")
    cfg = SchedulerConfig(**kw)
    if not 0 <= cfg.percentage_of_nodes_to_score <= 100:
        raise Invalid("percentageOfNodesToScore", "must be between 0 and 100")
    if cfg.batch_size < 1:
        raise Invalid("batchSize", "must be at least 1")
    return cfg


def _plugins(p: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in p.items():
        path = f"plugins.{key}"
        if key in ("queueSort", "bind"):
            out["queue_sort" if key == "queueSort" else "binder"] = _plugin_name(path, value)
        elif key in ("filter", "postFilter"):
            if not isinstance(value, list):
                raise Invalid(path, "must be a list of plugin names")
            names = tuple(_plugin_name(f"{path}[{i}]", v) for i, v in enumerate(value))
            out["filters" if key == "filter" else "post_filters"] = names
        elif key == "score":
            if not isinstance(value, list):
                raise Invalid(path, "must be a list of {name, weight}")
            scores: list[tuple[str, float]] = []
            for i, v in enumerate(value):
                if isinstance(v, str):
                    scores.append((_plugin_name(f"{path}[{i}]", v), 1.0))
                    continue
                m = _mapping(f"{path}[{i}]", v)
                extra = set(m) - {"name", "weight"}
                if extra:
                    raise Invalid(f"{path}[{i}].{sorted(extra)[0]}", "unknown field")
                weight = _typed(f"{path}[{i}].weight", m.get("weight", 1), float)
                if weight < 0:
                    raise Invalid(f"{path}[{i}].weight", "must not be negative")
                scores.append((_plugin_name(f"{path}[{i}].name", m.get("name")), weight))
            out["scores"] = tuple(scores)
        else:
            raise Invalid(path, "unknown extension point (queueSort, filter, postFilter, score, bind)")
    return out


def load(path: str | pathlib.Path | None) -> SchedulerConfig:
    if path is None:
        return SchedulerConfig()
    text = pathlib.Path(path).read_text()
    return parse(yaml.safe_load(text))


@dataclass(frozen=True)
class Profile:
    queue_sort: QueueSortPlugin
    filters: tuple[FilterPlugin, ...]
    scores: tuple[WeightedScore, ...]
    binder: BindPlugin | None
    post_filters: tuple[PostFilterPlugin, ...] = ()


def build_profile(cfg: SchedulerConfig, ctx: PluginContext) -> Profile:
    """Instantiate the configured plugins, checking each sits at a point it implements."""

    def make(name: str, kind: type, path: str) -> Any:
        plugin = REGISTRY[name](ctx)
        if not isinstance(plugin, kind):
            raise Invalid(path, f"plugin {name!r} is not a {kind.__name__}")
        return plugin

    binder = make(cfg.binder, BindPlugin, "plugins.bind") if ctx.client is not None else None
    return Profile(
        queue_sort=make(cfg.queue_sort, QueueSortPlugin, "plugins.queueSort"),
        filters=tuple(make(n, FilterPlugin, f"plugins.filter[{i}]") for i, n in enumerate(cfg.filters)),
        scores=tuple(
            WeightedScore(make(n, ScorePlugin, f"plugins.score[{i}]"), w)
            for i, (n, w) in enumerate(cfg.scores)
        ),
        binder=binder,
        post_filters=tuple(
            make(n, PostFilterPlugin, f"plugins.postFilter[{i}]") for i, n in enumerate(cfg.post_filters)
        ),
    )
