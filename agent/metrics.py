"""The agent's Prometheus metrics (`--metrics-listen`), on a registry the agent owns.

Each `Agent` makes its own `AgentMetrics` (tests run many agents in one
process; a global registry would mix them up). The parts that act count what
they do: the executor counts container starts, the probe workers probe
results, the Docker runtime times its calls, the status manager its writes,
the registrar its failed heartbeats. Pods by phase is read at scrape time
from what the agent last reported, so it can never drift.

    cowpod_agent_pods{phase}                          gauge
    cowpod_agent_container_starts_total{kind}         kind: sandbox | init | app
    cowpod_agent_container_restarts_total{kind}       starts of attempt > 0
    cowpod_agent_probe_results_total{probe,result}    probe: startup | liveness | readiness; success | failure
    cowpod_agent_docker_call_seconds{call,outcome}    histogram; outcome: ok | error
    cowpod_agent_status_writes_total{result}          ok | gone (pod deleted) | error
    cowpod_agent_heartbeats_total{result}             ok | error
    cowpod_agent_heartbeat_failures_total             counter
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cowpod.api.phases import PodPhase

PHASES = tuple(p.value for p in PodPhase)


class _PodPhases(Collector):
    """`cowpod_agent_pods{phase}` computed from a callable at scrape time."""

    def __init__(self, phases: Callable[[], Iterable[str]]) -> None:
        self._phases = phases

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("cowpod_agent_pods", "Pods bound to this node, by phase", labels=["phase"])
        counts = Tally(p or "Pending" for p in self._phases())
        for phase in sorted(set(PHASES) | set(counts)):
            g.add_metric([phase], counts.get(phase, 0))
        yield g


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.container_starts = Counter(
            "cowpod_agent_container_starts", "Containers started, by kind", ["kind"], registry=r
        )
        self.container_restarts = Counter(
            "cowpod_agent_container_restarts", "Containers started again after an earlier instance ended",
            ["kind"], registry=r,
        )
        self.probe_results = Counter(
            "cowpod_agent_probe_results", "Probe runs, by probe and result", ["probe", "result"], registry=r
        )
        self.docker_seconds = Histogram(
            "cowpod_agent_docker_call_seconds", "Docker Engine API call latency, by call and outcome",
            ["call", "outcome"], registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.status_writes = Counter(
            "cowpod_agent_status_writes", "Pod status writes to the controller, by result", ["result"],
            registry=r,
        )
        self.heartbeats = Counter(
            "cowpod_agent_heartbeats", "Node lease renewals, by result", ["result"], registry=r
        )
        self.heartbeat_failures = Counter(
            "cowpod_agent_heartbeat_failures", "Node lease renewals that failed", registry=r
        )
        self._phases: _PodPhases | None = None

    def track_pods(self, phases: Callable[[], Iterable[str]]) -> None:
        """Report pods by phase from `phases()` (called at each scrape)."""
        if self._phases is None:
            self._phases = _PodPhases(phases)
            self.registry.register(self._phases)

    def started(self, kind: str, attempt: int) -> None:
        self.container_starts.labels(kind).inc()
        if attempt > 0:
            self.container_restarts.labels(kind).inc()

    def probed(self, probe: str, ok: bool) -> None:
        self.probe_results.labels(probe, "success" if ok else "failure").inc()

    def docker_call(self, call: str, seconds: float, ok: bool) -> None:
        self.docker_seconds.labels(call, "ok" if ok else "error").observe(seconds)

    def status_written(self, result: str) -> None:
        self.status_writes.labels(result).inc()

    def heartbeat(self, ok: bool) -> None:
        self.heartbeats.labels("ok" if ok else "error").inc()
        if not ok:
            self.heartbeat_failures.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
