"""The VM manager's Prometheus metrics, on the registry of the process it runs in
(the controller's, so one `/metrics` shows the API and the VMs behind it).

    cowpod_vm_clone_seconds{kind,outcome}     histogram; kind full | instant; outcome ok | error
    cowpod_vm_destroy_seconds{kind,outcome}   histogram; kind of the VM destroyed (full | instant | unknown)
    cowpod_vms{phase}                         gauge, read from the manager's VM cache at scrape time

Durations come from the injected clock, so they are the provider's time as the
manager saw it (in tests on a FakeClock: whatever the test advanced).
"""

from __future__ import annotations

import contextlib
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cowpod.api.phases import VMPhase
from cowpod.clock import Clock

PHASES = tuple(p.value for p in VMPhase)
_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


class _VMPhases(Collector):
    def __init__(self, phases: Callable[[], Iterable[str]]) -> None:
        self._phases = phases

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("cowpod_vms", "VM objects managed here, by phase", labels=["phase"])
        counts = Tally(p or "Pending" for p in self._phases())
        for phase in sorted(set(PHASES) | set(counts)):
            g.add_metric([phase], counts.get(phase, 0))
        yield g


class VMMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.clone_seconds = Histogram(
            "cowpod_vm_clone_seconds", "Time to create a VM, by clone kind and outcome",
            ["kind", "outcome"], registry=self.registry, buckets=_BUCKETS,
        )
        self.destroy_seconds = Histogram(
            "cowpod_vm_destroy_seconds", "Time to destroy a VM (with its pods), by clone kind and outcome",
            ["kind", "outcome"], registry=self.registry, buckets=_BUCKETS,
        )

    def track_vms(self, phases: Callable[[], Iterable[str]]) -> None:
        """Report VMs by phase from `phases()`, called at each scrape."""
        self.registry.register(_VMPhases(phases))

    @contextlib.contextmanager
    def timed(self, hist: Histogram, kind: str, clock: Clock) -> Iterator[None]:
        """Observe how long the block took, with outcome error when it raised."""
        t0 = clock.monotonic()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        finally:
            hist.labels(kind or "unknown", outcome).observe(max(0.0, clock.monotonic() - t0))
