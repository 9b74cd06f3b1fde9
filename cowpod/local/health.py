"""Health probes for `cowpod status` and for `up` while it waits for components."""

from __future__ import annotations

import asyncio
import ssl

from cowpod.auth.config import ConnectionSettings
from cowpod.auth.credentials import connect
from cowpod.pki import ETCD_SERVER_NAME, TLSFiles


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def tls_context(files: TLSFiles) -> ssl.SSLContext:
    """Client TLS that verifies an etcd member by its CA and name and shows our certificate."""
    ctx = ssl.create_default_context(cafile=str(files.ca))
    ctx.load_cert_chain(str(files.cert), str(files.key))
    return ctx


async def http_get(
    address: str, path: str, timeout: float = 2.0, *, tls: TLSFiles | None = None
) -> tuple[int, bytes]:
    """A minimal HTTP/1.0 GET on loopback: (status, body). No dependency for one request.
    With `tls`, HTTPS to an etcd member (verified as `cowpod-etcd`)."""
    host, port = split_address(address)

    async def go() -> tuple[int, bytes]:
        if tls is not None:
            ctx = await asyncio.to_thread(tls_context, tls)
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ctx, server_hostname=ETCD_SERVER_NAME
            )
        else:
            reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            await writer.drain()
            data = await reader.read(1 << 20)
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        parts = head.split(b" ", 2)
        return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0), body

    return await asyncio.wait_for(go(), timeout)


async def http_ok(address: str, path: str = "/metrics", timeout: float = 2.0) -> bool:
    try:
        status, _ = await http_get(address, path, timeout)
    except (OSError, TimeoutError, ValueError):
        return False
    return 200 <= status < 300


async def etcd_ok(address: str, timeout: float = 2.0, *, tls: TLSFiles | None = None) -> bool:
    """etcd's own /health: {"health":"true"} (over TLS with a client certificate when `tls`)."""
    try:
        status, body = await http_get(address, "/health", timeout, tls=tls)
    except (OSError, TimeoutError, ValueError, ssl.SSLError):
        return False
    return status == 200 and b"true" in body


async def grpc_ok(settings: ConnectionSettings, timeout: float = 2.0) -> bool:
    """grpc.health.v1 says SERVING, asked with the cluster's credentials."""
    client = connect(settings)
    try:
        return await client.healthy(timeout=timeout)
    finally:
        await client.close()


async def tcp_ok(address: str, timeout: float = 1.0) -> bool:
    host, port = split_address(address)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True
