"""Prometheus metrics of the scheduler.

A private registry per process (no module-level globals), served with
`/healthz` by `cowpod.metrics_http` in the scheduler's task group."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_VICTIM_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.pending = Gauge("cowpod_scheduler_pending_pods", "Pods in the queue", ["queue"], registry=r)
        self.attempts = Counter(
            "cowpod_scheduler_schedule_attempts", "Scheduling attempts by result", ["result"], registry=r
        )
        self.binds = Counter("cowpod_scheduler_binds", "Bind results", ["result"], registry=r)
        self.algorithm = Histogram(
            "cowpod_scheduler_scheduling_algorithm_duration_seconds",
            "Filter+score time per pod",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "cowpod_scheduler_e2e_scheduling_duration_seconds",
            "Queue entry to committed bind",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # Kubernetes' scheduler_preemption_attempts_total and scheduler_preemption_victims.
        self.preemption_attempts = Counter(
            "cowpod_scheduler_preemption_attempts",
            "Preemption attempts (pods that fit nowhere and may preempt)",
            registry=r,
        )
        self.preemption_victims = Histogram(
            "cowpod_scheduler_preemption_victims",
            "Pods evicted per successful preemption",
            buckets=_VICTIM_BUCKETS,
            registry=r,
        )
        self.is_leader = Gauge("cowpod_scheduler_is_leader", "1 while this process leads", registry=r)
        self.nodes = Gauge("cowpod_scheduler_nodes", "Nodes in the cache", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
