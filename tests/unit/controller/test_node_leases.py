"""Nodes' lease renewal (controller/nodes.py) on the in-memory store: the cached fast path
writes what the slow path writes, and every way it can lose ends as it did (issue #17)."""

from __future__ import annotations

import pytest

from controller.kinds import LEASES, NODE_LEASE_NAMESPACE, NODES
from controller.memstore import MemoryStore
from controller.nodes import Nodes
from controller.resource import Resource, get_time
from cowpod.clock import FakeClock
from cowpod.errors import NotFound
from cowpod.v1 import lease_pb2, meta_pb2, node_pb2

T0 = 1_700_000_000.0
LEASE_KEY = LEASES.key(NODE_LEASE_NAMESPACE, "n1")
MISSING = 'nodes "n1" not found: register the node first'


def nodes_on(store: MemoryStore, clock: FakeClock) -> Nodes:
    return Nodes(Resource(NODES, store, clock), Resource(LEASES, store, clock), store, clock)


def registration(name: str) -> node_pb2.Node:
    n = node_pb2.Node()
    n.metadata.name = name
    n.status.conditions.add(type="Ready", status="True")
    return n


def heartbeat(name: str = "n1") -> node_pb2.HeartbeatRequest:
    return node_pb2.HeartbeatRequest(node_name=name)


async def stored_lease(store: MemoryStore) -> lease_pb2.Lease:
    return await store.get(LEASE_KEY, lease_pb2.Lease)


def without_renewal(lease: lease_pb2.Lease) -> lease_pb2.Lease:
    out = lease_pb2.Lease()
    out.CopyFrom(lease)
    out.spec.ClearField("renew_time")
    out.metadata.resource_version = 0
    return out


async def test_renewals_write_the_lease_with_the_controllers_time_and_nothing_else() -> None:
    clock = FakeClock(start=T0)
    store = MemoryStore()
    nodes = nodes_on(store, clock)
    await nodes.register(registration("n1"))
    first = await stored_lease(store)
    assert get_time(first.spec.renew_time) == T0 and first.spec.holder_identity == "n1"
    for n in (1, 2, 3):
        await clock.advance(10.5)
        resp = await nodes.heartbeat(heartbeat())
        got = await stored_lease(store)
        assert get_time(got.spec.renew_time) == pytest.approx(T0 + 10.5 * n)
        assert resp.lease_seconds == 40 and resp.renew_time == got.spec.renew_time
        assert without_renewal(got) == without_renewal(first)


async def test_a_renewal_for_a_node_never_registered_is_refused() -> None:
    nodes = nodes_on(MemoryStore(), FakeClock(start=T0))
    with pytest.raises(NotFound) as err:
        await nodes.heartbeat(heartbeat())
    assert str(err.value) == MISSING


async def test_a_renewal_after_the_node_vanished_is_refused_with_the_same_error() -> None:
    """The cached path's transaction fails on the node's compare; the error is the one an
    uncached renewal gives, and no lease is written."""
    clock = FakeClock(start=T0)
    store = MemoryStore()
    nodes = nodes_on(store, clock)
    await nodes.register(registration("n1"))
    await nodes.heartbeat(heartbeat())  # cached from here on
    before = await stored_lease(store)
    await store.delete(NODES.key("", "n1"), node_pb2.Node)  # behind Nodes' back
    await clock.advance(10)
    with pytest.raises(NotFound) as err:
        await nodes.heartbeat(heartbeat())
    assert str(err.value) == MISSING
    assert (await stored_lease(store)) == before
    with pytest.raises(NotFound):  # and again, uncached now
        await nodes.heartbeat(heartbeat())


async def test_a_lease_changed_by_someone_else_is_renewed_from_what_is_stored() -> None:
    """The cached path compares the lease revision it wrote: a lease another writer changed
    (LeaseService, another holder) loses that compare and is renewed from the stored one."""
    clock = FakeClock(start=T0)
    store = MemoryStore()
    nodes = nodes_on(store, clock)
    await nodes.register(registration("n1"))
    await nodes.heartbeat(heartbeat())
    other = await stored_lease(store)
    other.spec.holder_identity = "someone-else"
    other.spec.lease_duration_seconds = 15
    other.metadata.labels["touched"] = "yes"
    await store.update(LEASE_KEY, other, expected_revision=other.metadata.resource_version)
    await clock.advance(7)
    resp = await nodes.heartbeat(heartbeat())
    got = await stored_lease(store)
    assert got.spec.holder_identity == "n1" and got.spec.lease_transitions == 1
    assert get_time(got.spec.acquire_time) == get_time(got.spec.renew_time) == T0 + 7
    assert got.spec.lease_duration_seconds == 15 and got.metadata.labels["touched"] == "yes"
    assert resp.lease_seconds == 15
    await clock.advance(3)  # cached again: the next renewal keeps all of it
    await nodes.heartbeat(heartbeat())
    again = await stored_lease(store)
    assert get_time(again.spec.renew_time) == T0 + 10
    assert without_renewal(again) == without_renewal(got)


async def test_a_deleted_node_and_its_lease_go_and_a_new_registration_starts_over() -> None:
    clock = FakeClock(start=T0)
    store = MemoryStore()
    nodes = nodes_on(store, clock)
    await nodes.register(registration("n1"))
    await nodes.heartbeat(heartbeat())
    await nodes.delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="n1")))
    with pytest.raises(NotFound):
        await stored_lease(store)
    with pytest.raises(NotFound) as err:
        await nodes.heartbeat(heartbeat())
    assert str(err.value) == MISSING
    await clock.advance(5)
    await nodes.register(registration("n1"))
    await nodes.heartbeat(heartbeat())
    got = await stored_lease(store)
    assert get_time(got.spec.acquire_time) == get_time(got.spec.renew_time) == T0 + 5
