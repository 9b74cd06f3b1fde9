"""The evictor inside the controller reads nodes and pods from in-process informer caches once
they have synced (no etcd list of every node each period, nor of every pod each sweep), still
asks etcd whether it answers, and still writes only what the stored revisions confirm."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from controller.eviction import NODE_LOST, Evictor
from controller.kinds import NODES, PODS
from cowpod.clock import FakeClock
from cowpod.errors import Unavailable
from cowpod.v1 import node_pb2, pod_pb2
from tests.unit.controller.test_eviction import T0, MemStore, node, pkey, pod, unreachable


@dataclass
class Cache:
    synced: bool = True
    cache: dict[Any, Any] = field(default_factory=dict)


class CountingStore(MemStore):
    """The evictor's store, counting lists and able to be down."""

    def __init__(self) -> None:
        super().__init__()
        self.listed: list[str] = []
        self.down = False

    async def current_revision(self) -> int:
        if self.down:
            raise Unavailable("etcd is down")
        return self.rev

    async def list(self, prefix: str, cls: Any) -> Any:
        self.listed.append(prefix)
        return await super().list(prefix, cls)

    async def list_raw(self, prefix: str) -> Any:
        self.listed.append(prefix)
        return await super().list_raw(prefix)


def cached(store: MemStore, prefix: str, cls: Any) -> Mapping[tuple[str, str], Any]:
    """What an informer would hold: the stored objects, decoded with their revisions."""
    out = {}
    for key in store.data:
        if key.startswith(prefix):
            obj = store.obj(key, cls)
            assert obj is not None
            out[(obj.metadata.namespace, obj.metadata.name)] = obj
    return out


def cluster() -> CountingStore:
    store = CountingStore()
    store.put(NODES.key("", "n1"), unreachable("n1", since=T0 - 1000))  # past the 300 s toleration
    store.put(NODES.key("", "n2"), node("n2"))
    store.put(pkey("a"), pod("a", "n1"))
    store.put(pkey("b"), pod("b", "n2"))
    return store


async def test_a_pass_reads_the_caches_not_etcd_and_evicts_by_stored_revision() -> None:
    store = cluster()
    nodes = Cache(cache=dict(cached(store, NODES.prefix(), node_pb2.Node)))
    pods = Cache(cache=dict(cached(store, PODS.prefix(), pod_pb2.Pod)))
    ev = Evictor(store, FakeClock(start=T0), startup_grace=0,  # type: ignore[arg-type]
                 node_cache=nodes, pod_cache=pods)
    await ev.reconcile_once()
    assert store.listed == []
    a = store.obj(pkey("a"), pod_pb2.Pod)
    assert a is not None and (a.status.phase, a.status.reason) == ("Failed", NODE_LOST)
    b = store.obj(pkey("b"), pod_pb2.Pod)
    assert b is not None and b.status.phase == "Running"
    # The cached pod is shared with other loops: the eviction wrote a copy.
    assert pods.cache[("default", "a")].status.phase == "Running"


async def test_a_cache_behind_the_store_writes_nothing() -> None:
    """The cache still shows pod c on the lost node, but c moved on in etcd: the eviction's
    compare on the revision it planned from refuses the write."""
    store = cluster()
    store.put(pkey("c"), pod("c", "n1"))
    pods = Cache(cache=dict(cached(store, PODS.prefix(), pod_pb2.Pod)))
    store.put(pkey("c"), pod("c", "n2"))  # newer than the cache
    ev = Evictor(store, FakeClock(start=T0), startup_grace=0,  # type: ignore[arg-type]
                 node_cache=Cache(cache=dict(cached(store, NODES.prefix(), node_pb2.Node))), pod_cache=pods)
    await ev.reconcile_once()
    c = store.obj(pkey("c"), pod_pb2.Pod)
    assert c is not None and c.status.phase == "Running" and c.spec.node_name == "n2"


async def test_until_the_caches_sync_a_pass_lists_from_etcd() -> None:
    store = cluster()
    ev = Evictor(store, FakeClock(start=T0), startup_grace=0,  # type: ignore[arg-type]
                 node_cache=Cache(synced=False), pod_cache=Cache(synced=False))
    await ev.reconcile_once()
    assert store.listed == [NODES.prefix(), PODS.prefix()]
    a = store.obj(pkey("a"), pod_pb2.Pod)
    assert a is not None and a.status.phase == "Failed"


async def test_an_unreachable_etcd_still_fails_the_pass() -> None:
    store = cluster()
    store.down = True
    ev = Evictor(store, FakeClock(start=T0), startup_grace=0,  # type: ignore[arg-type]
                 node_cache=Cache(cache=dict(cached(store, NODES.prefix(), node_pb2.Node))),
                 pod_cache=Cache(cache=dict(cached(store, PODS.prefix(), pod_pb2.Pod))))
    with pytest.raises(Unavailable):
        await ev.reconcile_once()
