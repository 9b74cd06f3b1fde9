"""Nodes: register (create or adopt), heartbeat leases, update rules, delete.

A node's liveness is its Lease `cowpod-node-lease/<node>`, renewed by Heartbeat;
node_lifecycle.py reads those leases. Heartbeats are the hottest write in a big
fleet (5,000 nodes every ~10 s), so the last lease written per node is cached and
the renewal is one etcd transaction: "node exists and lease is still the one we
wrote" -> put. Only a cache miss or a lost race costs extra reads.
"""

from __future__ import annotations

import logging

from controller import validation
from controller.kinds import LEASES, NODE_LEASE_NAMESPACE, NODES
from controller.resource import Resource, set_time
from controller.store import Compare, Put, Store, encode, guaranteed_update
from cowpod.clock import Clock
from cowpod.errors import AlreadyExists, Conflict, Invalid, NotFound
from cowpod.v1 import lease_pb2, meta_pb2, node_pb2

log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 40
# How long a renewal may wait to share its etcd transaction with others (`Store.txn`'s
# linger): a lease lasts 40 s and is renewed every 10 s, so 50 ms is nothing to the node,
# while 500 renewals a second then cost ~20 transactions instead of ~500 on an idle cluster.
RENEWAL_LINGER_SECONDS = 0.05


class Nodes:
    def __init__(self, nodes: Resource[node_pb2.Node], leases: Resource[lease_pb2.Lease], store: Store,
                 clock: Clock, *, lease_seconds: int = DEFAULT_LEASE_SECONDS) -> None:
        self.res = nodes
        self.leases = leases
        self.store = store
        self.clock = clock
        self.lease_seconds = lease_seconds
        self._lease_cache: dict[str, lease_pb2.Lease] = {}

    async def register(self, req: node_pb2.Node) -> node_pb2.Node:
        validation.validate_node(req)
        name = req.metadata.name
        for _ in range(8):
            try:
                existing = await self.res.get("", name)
            except NotFound:
                new = node_pb2.Node()
                new.CopyFrom(req)
                self.res.prepare_new(new)
                try:
                    node = await self.res.create(new)
                except AlreadyExists:
                    continue
                log.info("node %s registered (provider_id=%s)", name, node.spec.provider_id or "-")
                break

            def adopt(cur: node_pb2.Node) -> node_pb2.Node:
                # Keep what operators set (taints, cordon) and identity; refresh what the
                # agent knows (status, its labels).
                cur.metadata.labels.update(req.metadata.labels)
                cur.metadata.annotations.update(req.metadata.annotations)
                if req.spec.provider_id:
                    cur.spec.provider_id = req.spec.provider_id
                cur.status.CopyFrom(req.status)
                return cur

            try:
                node = await self.res.update("", name, existing.metadata.resource_version, adopt)
            except (Conflict, NotFound):
                continue
            log.info("node %s re-registered (adopted; spec kept)", name)
            break
        else:
            raise Conflict(f'nodes "{name}" kept changing during register; retry')
        await self.renew_lease(name)
        return node

    async def heartbeat(self, req: node_pb2.HeartbeatRequest) -> node_pb2.HeartbeatResponse:
        if not req.node_name:
            raise Invalid("nodeName", "required")
        lease = await self.renew_lease(req.node_name)
        if req.HasField("status"):
            validation.validate_node_status(node_pb2.Node(status=req.status))

            def refresh(cur: node_pb2.Node) -> node_pb2.Node:
                cur.status.CopyFrom(req.status)
                return cur

            await guaranteed_update(self.store, NODES.key("", req.node_name), node_pb2.Node, refresh)
        return node_pb2.HeartbeatResponse(lease_seconds=lease.spec.lease_duration_seconds,
                                          renew_time=lease.spec.renew_time)

    async def renew_lease(self, name: str) -> lease_pb2.Lease:
        now = self.clock.now()
        node_key = NODES.key("", name)
        lease_key = LEASES.key(NODE_LEASE_NAMESPACE, name)
        cached = self._lease_cache.get(name)
        if cached is not None:
            new = lease_pb2.Lease()
            new.CopyFrom(cached)
            set_time(new.spec.renew_time, now)
            # No read in the failure branch: a renewal that lost its compares takes the path
            # below, whose first read tells a vanished node from a lease changed by someone
            # else. (It read the node in the failure branch before: a read more in every
            # renewal's share of a merged transaction, for a case that almost never happens.)
            res = await self.store.txn(
                [Compare.exists(node_key), Compare.at(lease_key, cached.metadata.resource_version)],
                [Put(lease_key, encode(new))],
                linger=RENEWAL_LINGER_SECONDS,
            )
            if res.succeeded:
                new.metadata.resource_version = res.revision
                self._lease_cache[name] = new
                return new
            self._lease_cache.pop(name, None)
        if await self.store.get_raw(node_key) is None:
            raise NotFound(f'nodes "{name}" not found: register the node first')
        for _ in range(8):
            try:
                lease = await self.leases.get(NODE_LEASE_NAMESPACE, name)
            except NotFound:
                lease = lease_pb2.Lease()
                lease.metadata.name = name
                lease.metadata.namespace = NODE_LEASE_NAMESPACE
                lease.spec.holder_identity = name
                lease.spec.lease_duration_seconds = self.lease_seconds
                set_time(lease.spec.acquire_time, now)
                set_time(lease.spec.renew_time, now)
                self.leases.prepare_new(lease)
                try:
                    lease = await self.leases.create(lease)
                except AlreadyExists:
                    continue
                self._lease_cache[name] = lease
                return lease
            rv = lease.metadata.resource_version
            if lease.spec.holder_identity != name:
                lease.spec.holder_identity = name
                lease.spec.lease_transitions += 1
                set_time(lease.spec.acquire_time, now)
            if not lease.spec.lease_duration_seconds:
                lease.spec.lease_duration_seconds = self.lease_seconds
            set_time(lease.spec.renew_time, now)
            try:
                lease = await self.store.update(lease_key, lease, expected_revision=rv)
            except Conflict:
                continue
            self._lease_cache[name] = lease
            return lease
        raise Conflict(f'leases "{NODE_LEASE_NAMESPACE}/{name}" kept changing; retry the heartbeat')

    async def update(self, req: node_pb2.Node) -> node_pb2.Node:
        def mutate(cur: node_pb2.Node) -> node_pb2.Node:
            new = node_pb2.Node()
            new.CopyFrom(cur)
            new.metadata.labels.clear()
            new.metadata.labels.update(req.metadata.labels)
            new.metadata.annotations.clear()
            new.metadata.annotations.update(req.metadata.annotations)
            new.spec.CopyFrom(req.spec)
            if not new.spec.provider_id:
                new.spec.provider_id = cur.spec.provider_id
            if new.spec != cur.spec:
                new.metadata.generation = cur.metadata.generation + 1
            validation.validate_node(new)
            return new

        _, name = self.res.names("", req.metadata.name)
        return await self.res.update("", name, req.metadata.resource_version, mutate)

    async def update_status(self, req: node_pb2.Node) -> node_pb2.Node:
        validation.validate_node_status(req)

        def mutate(cur: node_pb2.Node) -> node_pb2.Node:
            cur.status.CopyFrom(req.status)
            return cur

        _, name = self.res.names("", req.metadata.name)
        return await self.res.update("", name, req.metadata.resource_version, mutate)

    async def delete(self, opts: meta_pb2.DeleteOptions) -> node_pb2.Node:
        """Nodes go at once (as in Kubernetes); their lease goes with them. Pods bound to a
        vanished node are then deleted immediately when anyone deletes them."""
        _, name = self.res.names("", opts.key.name)
        node = await self.res.remove("", name, opts.resource_version)
        self._lease_cache.pop(name, None)
        try:
            await self.leases.remove(NODE_LEASE_NAMESPACE, name)
        except NotFound:
            pass
        log.info("node %s deleted", name)
        return node
