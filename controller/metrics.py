"""Prometheus metrics for the controller, on a registry owned by one server instance
(tests run several controllers in one process), served by a tiny asyncio HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)


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


async def serve_metrics(metrics: Metrics, host: str, port: int,
                        started: asyncio.Future[int] | None = None) -> None:
    """Serve GET /metrics until cancelled."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode(errors="replace").split()
            if len(parts) >= 2 and parts[0] == "GET" and parts[1].split("?")[0] in ("/metrics", "/"):
                body = metrics.render()
                head = f"HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE_LATEST}\r\n"
            else:
                body = b"not found; try /metrics\n"
                head = "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
            writer.write(f"{head}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    bound = server.sockets[0].getsockname()[1]
    log.info("metrics on http://%s:%d/metrics", host, bound)
    if started is not None and not started.done():
        started.set_result(bound)
    async with server:
        await server.serve_forever()
