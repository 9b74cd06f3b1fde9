"""The plain-HTTP `/metrics` endpoint every cowpod process serves (`--metrics-listen`).

A few lines of asyncio rather than prometheus_client's threaded server: it runs
on the process's own event loop, is cancelled with it, and reports the port it
bound (port 0 picks one) so tests and `cowpod status` can find it.

    GET /metrics, GET /   the registry in Prometheus text format
    GET /healthz          200 "ok" / 503 "not ready", when the process says how it is
    anything else         404
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

# A client gets this long for each line of its request.
READ_TIMEOUT_S = 5.0


async def serve_metrics(
    render: Callable[[], bytes],
    host: str,
    port: int,
    *,
    healthy: Callable[[], bool] | None = None,
    started: asyncio.Future[int] | None = None,
    name: str = "metrics",
) -> None:
    """Serve until cancelled; `started` gets the bound port. Without `healthy`,
    /healthz is not served (404)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT_S)
            while (await asyncio.wait_for(reader.readline(), READ_TIMEOUT_S)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode(errors="replace").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            if parts and parts[0] == "GET" and path in ("/metrics", "/"):
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, render()
            elif path == "/healthz" and healthy is not None:
                ok = healthy()
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype, body = "text/plain", (b"ok\n" if ok else b"not ready\n")
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found; try /metrics\n"
            head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            writer.write(f"{head}Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    bound = int(server.sockets[0].getsockname()[1])
    log.info("%s on http://%s:%d/metrics", name, host, bound)
    if started is not None and not started.done():
        started.set_result(bound)
    async with server:
        await server.serve_forever()
