"""What a pod asks of its node: one rule for the scheduler, the controller's
bind check, the autoscaler and the agent's admission, which must all agree.

Kubernetes' rule: a container's request, or its limit when it sets only a
limit (the API server defaults a missing request to the limit); the pod takes
the sum of its app containers or its largest init container, whichever is
more (init containers run one at a time, before the apps). The same rule holds
for cpu, memory and `ephemeral-storage` (the disk a container's writable layer
and logs take on its node), so a pod's disk is reserved where it is placed.
"""

from __future__ import annotations

from typing import NamedTuple

from cowpod.v1 import pod_pb2


class PodRequests(NamedTuple):
    """What a container or a pod reserves on its node."""

    cpu_millis: int
    memory_bytes: int
    ephemeral_storage_bytes: int = 0


def container_requests(c: pod_pb2.Container) -> PodRequests:
    """What one container reserves: each resource's request, else its limit."""
    req, lim = c.resources.requests, c.resources.limits
    return PodRequests(
        req.cpu_millis or lim.cpu_millis,
        req.memory_bytes or lim.memory_bytes,
        req.ephemeral_storage_bytes or lim.ephemeral_storage_bytes,
    )


def pod_requests(spec: pod_pb2.PodSpec) -> PodRequests:
    """What the pod reserves on its node: the apps' sum or the largest init container, per resource."""
    cpu = mem = disk = 0
    for c in spec.containers:
        r = container_requests(c)
        cpu, mem, disk = cpu + r.cpu_millis, mem + r.memory_bytes, disk + r.ephemeral_storage_bytes
    for c in spec.init_containers:
        r = container_requests(c)
        cpu, mem = max(cpu, r.cpu_millis), max(mem, r.memory_bytes)
        disk = max(disk, r.ephemeral_storage_bytes)
    return PodRequests(cpu, mem, disk)
