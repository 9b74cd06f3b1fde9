"""Prometheus metrics and the tiny HTTP endpoint (`/metrics`, `/healthz`).

A private registry per process (no module-level globals), served by a
minimal asyncio HTTP server so it lives in the scheduler's task group."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

log = logging.getLogger(__name__)

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
        self.is_leader = Gauge("cowpod_scheduler_is_leader", "1 while this process leads", registry=r)
        self.nodes = Gauge("cowpod_scheduler_nodes", "Nodes in the cache", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def serve_http(
    host: str,
    port: int,
    metrics: Metrics,
    healthy: Callable[[], bool],
    *,
    started: asyncio.Event | None = None,
) -> None:
    """Serve until cancelled."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path.startswith("/metrics"):
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, metrics.render()
            elif path.startswith("/healthz"):
                ok = healthy()
                status, ctype, body = (
                    ("200 OK" if ok else "503 Service Unavailable"),
                    "text/plain",
                    (b"ok\n" if ok else b"not ready\n"),
                )
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    log.info("metrics on http://%s:%d/metrics", host, port)
    if started is not None:
        started.set()
    async with server:
        await server.serve_forever()
