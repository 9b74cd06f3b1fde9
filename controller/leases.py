"""Leases (coordination.k8s.io/v1 style): leader election and node heartbeats.

Update is always a compare-and-swap: a lease is only worth something if two
candidates can never both think they renewed it.
"""

from __future__ import annotations

from controller import validation
from controller.resource import Resource
from cowpod.errors import Invalid
from cowpod.v1 import lease_pb2, meta_pb2


class Leases:
    def __init__(self, res: Resource[lease_pb2.Lease]) -> None:
        self.res = res

    async def create(self, lease: lease_pb2.Lease) -> lease_pb2.Lease:
        self.res.prepare_new(lease)
        validation.validate_lease(lease)
        return await self.res.create(lease)

    async def update(self, req: lease_pb2.Lease) -> lease_pb2.Lease:
        if not req.metadata.resource_version:
            raise Invalid("metadata.resourceVersion", "required: lease updates are compare-and-swap")

        def mutate(cur: lease_pb2.Lease) -> lease_pb2.Lease:
            new = lease_pb2.Lease()
            new.CopyFrom(cur)
            new.spec.CopyFrom(req.spec)
            new.metadata.labels.clear()
            new.metadata.labels.update(req.metadata.labels)
            new.metadata.annotations.clear()
            new.metadata.annotations.update(req.metadata.annotations)
            validation.validate_lease(new)
            return new

        ns, name = self.res.names(req.metadata.namespace, req.metadata.name)
        return await self.res.update(ns, name, req.metadata.resource_version, mutate)

    async def delete(self, opts: meta_pb2.DeleteOptions) -> lease_pb2.Lease:
        ns, name = self.res.names(opts.key.namespace, opts.key.name)
        return await self.res.remove(ns, name, opts.resource_version)
