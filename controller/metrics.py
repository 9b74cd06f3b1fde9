"""Prometheus metrics for the controller, on a registry owned by one server instance
(tests run several controllers in one process), served by `cowpod.metrics_http`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cowpod_controller_requests", "gRPC requests handled, by method and status code",
            ["method", "code"], registry=self.registry,
        )
        self.latency = Histogram(
            "cowpod_controller_request_seconds", "gRPC request latency (streams: until first message)",
            ["method"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.watch_streams = Gauge(
            "cowpod_controller_watch_streams", "Watch streams open, by kind", ["kind"],
            registry=self.registry,
        )
        self.binds = Counter(
            "cowpod_controller_binds", "Pod bindings attempted, by result", ["result"],
            registry=self.registry,
        )
        self.node_transitions = Counter(
            "cowpod_controller_node_transitions", "Node lifecycle actions taken, by action", ["action"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    @contextlib.contextmanager
    def watch_open(self, kind: str) -> Iterator[None]:
        """Count a watch stream of `kind` in `watch_streams` while the block runs."""
        gauge = self.watch_streams.labels(kind)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()
