"""The agent's cluster DNS over real UDP sockets on loopback: Service names answer
with their ready endpoints, other cluster names are NXDOMAIN, the rest is forwarded."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent.dns import (
    NOERROR,
    NXDOMAIN,
    SERVFAIL,
    TYPE_A,
    TYPE_AAAA,
    ClusterDNS,
    parse_query,
    resolv_conf,
    response,
    upstreams_from,
)
from cowpod.clock import RealClock
from cowpod.v1 import meta_pb2, service_pb2


def query(name: str, qtype: int = TYPE_A, qid: int = 0x1234) -> bytes:
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", qtype, 1)


def answer(data: bytes) -> tuple[int, int, list[str]]:
    """(id, rcode, A addresses) of a response."""
    qid, flags, _qd, an, _ns, _ar = struct.unpack(">HHHHHH", data[:12])
    off = parse_query(struct.pack(">HH", qid, 0) + data[4:]).end if an else 0
    ips = []
    for _ in range(an):
        _ptr, rtype, _cls, _ttl, rdlen = struct.unpack(">HHHIH", data[off:off + 12])
        off += 12
        if rtype == TYPE_A:
            ips.append(socket.inet_ntoa(data[off:off + rdlen]))
        off += rdlen
    return qid, flags & 0xF, ips


def endpoints(ns: str, name: str, *ips: str) -> service_pb2.Endpoints:
    ep = service_pb2.Endpoints()
    ep.metadata.namespace, ep.metadata.name = ns, name
    ep.subsets.add().addresses.extend(service_pb2.EndpointAddress(ip=ip) for ip in ips)
    return ep


def watch_of(*eps: service_pb2.Endpoints) -> Any:
    def watch(opts: meta_pb2.WatchOptions) -> AsyncIterator[service_pb2.EndpointsWatchEvent]:
        async def gen() -> AsyncIterator[service_pb2.EndpointsWatchEvent]:
            for ep in eps:
                yield service_pb2.EndpointsWatchEvent(type=meta_pb2.ADDED, object=ep, resource_version=1)
            yield service_pb2.EndpointsWatchEvent(type=meta_pb2.BOOKMARK, resource_version=2)
            await asyncio.Event().wait()
        return gen()
    return watch


async def ask(port: int, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, d: bytes, addr: Any) -> None:
            if not got.done():
                got.set_result(d)

    transport, _ = await loop.create_datagram_endpoint(Proto, remote_addr=("127.0.0.1", port))
    try:
        transport.sendto(data)
        return await asyncio.wait_for(got, 5)
    finally:
        transport.close()


def test_resolv_conf_puts_the_pods_namespace_first() -> None:
    text = resolv_conf("shop", "127.0.0.1")
    assert text.splitlines()[0] == "search shop.svc.cluster.local svc.cluster.local cluster.local"
    assert "nameserver 127.0.0.1" in text and "ndots:5" in text
    assert upstreams_from("nameserver 127.0.0.11\nnameserver 127.0.0.1\noptions ndots:0\n",
                          exclude="127.0.0.1") == ["127.0.0.11"]


def test_a_query_round_trips() -> None:
    q = parse_query(query("Web.Default.svc.cluster.local"))
    assert (q.name, q.qtype, q.id) == ("web.default.svc.cluster.local", TYPE_A, 0x1234)
    assert answer(response(query("web.default.svc.cluster.local"), q, NOERROR, ["10.0.0.1", "10.0.0.2"])) == (
        0x1234, NOERROR, ["10.0.0.1", "10.0.0.2"])
    with pytest.raises(ValueError):
        parse_query(b"\x00\x01")


async def test_service_names_answer_and_the_rest_is_forwarded() -> None:
    # An upstream resolver that answers every question with 192.0.2.9.
    loop = asyncio.get_running_loop()

    class Upstream(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.t = transport

        def datagram_received(self, d: bytes, addr: Any) -> None:
            self.t.sendto(response(d, parse_query(d), NOERROR, ["192.0.2.9"]), addr)

    up, _ = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.2", 53))
    dns = ClusterDNS(watch_of(endpoints("default", "web", "10.0.0.2", "10.0.0.1", "10.0.0.1"),
                              endpoints("shop", "cart")),
                     "127.0.0.1:0", RealClock(), upstreams=["127.0.0.2"])
    task = asyncio.create_task(dns.run())
    try:
        await asyncio.wait_for(dns.bound.wait(), 5)
        await asyncio.wait_for(dns.synced.wait(), 5)
        # Pods on one VM share its address: each address once.
        assert answer(await ask(dns.port, query("web.default.svc.cluster.local"))) == (
            0x1234, NOERROR, ["10.0.0.1", "10.0.0.2"])
        # A Service with no ready endpoints exists (NOERROR, no data); an unknown one does not.
        assert answer(await ask(dns.port, query("cart.shop.svc.cluster.local")))[1:] == (NOERROR, [])
        assert answer(await ask(dns.port, query("web.shop.svc.cluster.local")))[1:] == (NXDOMAIN, [])
        assert answer(await ask(dns.port, query("web.default.default.svc.cluster.local")))[1] == NXDOMAIN
        aaaa = await ask(dns.port, query("web.default.svc.cluster.local", TYPE_AAAA))
        assert answer(aaaa)[1:] == (NOERROR, [])
        assert answer(await ask(dns.port, query("example.org", qid=7))) == (7, NOERROR, ["192.0.2.9"])
        up.close()
        assert answer(await ask(dns.port, query("example.org")))[1] == SERVFAIL
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        up.close()
