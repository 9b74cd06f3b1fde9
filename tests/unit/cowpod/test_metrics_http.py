"""The shared /metrics endpoint: what each path answers."""

from __future__ import annotations

import asyncio

from cowpod.metrics_http import serve_metrics


async def get(port: int, path: str) -> tuple[str, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body


async def test_paths() -> None:
    state = {"ready": False}
    for healthy in (None, lambda: state["ready"]):
        bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(
            serve_metrics(lambda: b"up 1\n", "127.0.0.1", 0, healthy=healthy, started=bound)
        )
        try:
            port = await bound
            assert await get(port, "/metrics") == ("HTTP/1.1 200 OK", b"up 1\n")
            assert await get(port, "/?x=1") == ("HTTP/1.1 200 OK", b"up 1\n")
            assert (await get(port, "/nope"))[0] == "HTTP/1.1 404 Not Found"
            if healthy is None:
                assert (await get(port, "/healthz"))[0] == "HTTP/1.1 404 Not Found"
            else:
                assert await get(port, "/healthz") == ("HTTP/1.1 503 Service Unavailable", b"not ready\n")
                state["ready"] = True
                assert await get(port, "/healthz") == ("HTTP/1.1 200 OK", b"ok\n")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
