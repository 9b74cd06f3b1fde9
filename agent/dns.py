"""Cluster DNS in every agent: Service names resolve to their ready pods' addresses.

Kubernetes runs CoreDNS as a cluster Service behind a virtual IP; cowpod has no
service proxy, so each agent answers for its own VM instead (the shape of
Kubernetes' NodeLocal DNSCache): it watches every namespace's Endpoints and
serves A records on the VM's loopback, where the pods, which share the VM's
network namespace, reach it. Every Service is headless, so a name resolves to
the ready endpoints' addresses (deduplicated: pods on one VM share its IP).

    <service>.<namespace>.svc.cluster.local   A: the ready addresses; NXDOMAIN if none known
    anything else under cluster.local         NXDOMAIN (authoritative)
    every other name                          forwarded to the VM's own resolvers

Each pod gets its own resolv.conf (`resolv_conf`) with its namespace first in
the search path, so `<service>` and `<service>.<namespace>` resolve as on
Kubernetes (`ndots:5`). Pods with `dnsPolicy: Default` keep the VM's.

Only what a stub resolver sends is handled: one question, no EDNS answers,
UDP (a truncated forwarded answer is passed on truncated, as the resolver
then retries over TCP upstream itself — which it cannot here; fine for the
small answers service names give).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cowpod.clock import Clock
from cowpod.informer import Informer
from cowpod.v1 import meta_pb2, service_pb2

log = logging.getLogger(__name__)

CLUSTER_DOMAIN = "cluster.local"
# dnsPolicy values that get the cluster's DNS (Kubernetes' default is ClusterFirst).
CLUSTER_FIRST = frozenset({"", "ClusterFirst", "ClusterFirstWithHostNet"})
TYPE_A, TYPE_AAAA, TYPE_ANY, CLASS_IN = 1, 28, 255, 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN = 0, 1, 2, 3
TTL_SECONDS = 5
FORWARD_TIMEOUT = 2.0


def resolv_conf(namespace: str, nameserver: str, domain: str = CLUSTER_DOMAIN) -> str:
    """A pod's /etc/resolv.conf: its namespace's services first, as kubelet writes it."""
    ns = namespace or "default"
    return (f"search {ns}.svc.{domain} svc.{domain} {domain}\n"
            f"nameserver {nameserver}\n"
            "options ndots:5\n")


def upstreams_from(text: str, exclude: str) -> list[str]:
    """The nameservers of a resolv.conf, without our own address."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver" and parts[1] != exclude:
            out.append(parts[1])
    return out


@dataclass(frozen=True)
class Question:
    id: int
    flags: int
    name: str  # lower case, no trailing dot
    qtype: int
    qclass: int
    end: int  # offset just past the question in the query


def parse_query(data: bytes) -> Question:
    """The one question of a standard query; ValueError for anything else."""
    if len(data) < 12:
        raise ValueError("short header")
    qid, flags, qd = struct.unpack(">HHH", data[:6])
    if flags & 0x8000 or qd != 1:
        raise ValueError("not a single-question query")
    labels: list[str] = []
    off = 12
    while True:
        if off >= len(data):
            raise ValueError("truncated name")
        n = data[off]
        off += 1
        if n == 0:
            break
        if n & 0xC0 or off + n > len(data):
            raise ValueError("bad label")
        labels.append(data[off:off + n].decode("ascii", "replace").lower())
        off += n
    if off + 4 > len(data):
        raise ValueError("truncated question")
    qtype, qclass = struct.unpack(">HH", data[off:off + 4])
    return Question(qid, flags, ".".join(labels), qtype, qclass, off + 4)


def response(query: bytes, q: Question, rcode: int, ips: Sequence[str] = (), ttl: int = TTL_SECONDS) -> bytes:
    """An authoritative answer to `q` with A records for `ips`."""
    answers = b"".join(
        struct.pack(">HHHIH", 0xC00C, TYPE_A, CLASS_IN, ttl, 4) + ipaddress.IPv4Address(ip).packed
        for ip in ips
    )
    flags = 0x8000 | (q.flags & 0x7800) | 0x0400 | (q.flags & 0x0100) | 0x0080 | rcode
    header = struct.pack(">HHHHHH", q.id, flags, 1, len(ips), 0, 0)
    return header + query[12:q.end] + answers


def error_response(query: bytes, rcode: int) -> bytes | None:
    """FORMERR/SERVFAIL echoing the query's id, or None when even that cannot be read."""
    if len(query) < 4:
        return None
    qid, flags = struct.unpack(">HH", query[:4])
    return struct.pack(">HHHHHH", qid, 0x8000 | (flags & 0x7900) | 0x0080 | rcode, 0, 0, 0, 0)


class Records:
    """Service name -> ready addresses, from Endpoints."""

    def __init__(self, domain: str = CLUSTER_DOMAIN) -> None:
        self.domain = domain
        self._by_service: dict[tuple[str, str], list[str]] = {}

    def update(self, ep: service_pb2.Endpoints) -> None:
        ips = sorted({a.ip for s in ep.subsets for a in s.addresses if _is_v4(a.ip)})
        self._by_service[(ep.metadata.namespace, ep.metadata.name)] = ips

    def remove(self, ep: service_pb2.Endpoints) -> None:
        self._by_service.pop((ep.metadata.namespace, ep.metadata.name), None)

    def lookup(self, name: str) -> tuple[int, list[str]] | None:
        """(rcode, addresses) for a name in the cluster domain; None for any other name."""
        if name != self.domain and not name.endswith("." + self.domain):
            return None
        suffix = ".svc." + self.domain
        if name.endswith(suffix):
            parts = name[: -len(suffix)].split(".")
            if len(parts) == 2:
                ips = self._by_service.get((parts[1], parts[0]))
                if ips is not None:
                    return NOERROR, ips
        return NXDOMAIN, []


def _is_v4(ip: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(ip), ipaddress.IPv4Address)
    except ValueError:
        return False


class _Server(asyncio.DatagramProtocol):
    def __init__(self, on_query: Callable[[bytes, Any], None]) -> None:
        self.on_query = on_query

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_query(data, addr)


class _Reply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.answer.done():
            self.answer.set_result(data)


class ClusterDNS:
    """Serves `Records` on `listen` (host:port) and forwards other names upstream."""

    def __init__(self, watch_endpoints: Callable[..., Any], listen: str, clock: Clock, *,
                 upstreams: Iterable[str] = (), domain: str = CLUSTER_DOMAIN) -> None:
        host, _, port = listen.rpartition(":")
        self.host, self.port = host or "127.0.0.1", int(port or 53)
        self.upstreams = list(upstreams)
        self.records = Records(domain)
        self.informer: Informer[service_pb2.Endpoints] = Informer(
            watch_endpoints, handler=self._on_endpoints, clock=clock, name="agent dns endpoints",
            on_synced=self._on_synced)
        self._transport: asyncio.DatagramTransport | None = None
        self._forwards: set[asyncio.Task[None]] = set()
        self.bound = asyncio.Event()
        self.synced = asyncio.Event()  # every Endpoints listed once

    async def _on_synced(self) -> None:
        self.synced.set()

    async def _on_endpoints(self, type_: int, ep: service_pb2.Endpoints) -> None:
        if type_ == meta_pb2.DELETED:
            self.records.remove(ep)
        else:
            self.records.update(ep)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Server(self._on_query), local_addr=(self.host, self.port))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        log.info("cluster DNS on %s:%d (upstream %s)", self.host, self.port,
                 ",".join(self.upstreams) or "none")
        self.bound.set()
        try:
            await self.informer.run()
        finally:
            transport.close()
            for t in list(self._forwards):
                t.cancel()

    def _on_query(self, data: bytes, addr: Any) -> None:
        assert self._transport is not None
        try:
            q = parse_query(data)
        except ValueError:
            reply = error_response(data, FORMERR)
            if reply is not None:
                self._transport.sendto(reply, addr)
            return
        found = self.records.lookup(q.name)
        if found is None:
            task = asyncio.get_running_loop().create_task(self._forward(data, addr))
            self._forwards.add(task)
            task.add_done_callback(self._forwards.discard)
            return
        rcode, ips = found
        wanted = ips if q.qtype in (TYPE_A, TYPE_ANY) and q.qclass == CLASS_IN else []
        self._transport.sendto(response(data, q, rcode, wanted), addr)

    async def _forward(self, data: bytes, addr: Any) -> None:
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        for upstream in self.upstreams:
            transport, proto = await loop.create_datagram_endpoint(_Reply, remote_addr=(upstream, 53))
            try:
                transport.sendto(data)
                answer = await asyncio.wait_for(proto.answer, FORWARD_TIMEOUT)
            except (TimeoutError, OSError):
                continue
            finally:
                transport.close()
            self._transport.sendto(answer, addr)
            return
        reply = error_response(data, SERVFAIL)
        if reply is not None:
            with contextlib.suppress(OSError):
                self._transport.sendto(reply, addr)
