"""Amounts of node resources, and the one rule for what a pod reserves.

The scheduler's fit check, the controller's bind check, the autoscaler's bin
packing and the agent's admission must all count a pod the same way, or one of
them admits what another refuses. The rule is Kubernetes':

a container reserves its request, or its limit when it sets only a limit (the
API server defaults a missing request to the limit); the pod takes the sum of
its app containers or its largest init container, whichever is more (init
containers run one at a time, before the apps). The same holds for cpu, memory
and `ephemeral-storage` (the disk a container's writable layer and logs take on
its node), so a pod's disk is reserved where it is placed. A pod also takes one
of its node's pod slots.
"""

from __future__ import annotations

from dataclasses import dataclass

from cowpod.v1 import pod_pb2

DEFAULT_MAX_PODS = 110
"""Pods per node when a node does not report `allocatable.pods` (Kubernetes' default)."""


@dataclass(frozen=True, slots=True)
class Resources:
    """An amount of a node's resources: what it offers, what pods use or ask for.

    Integers only (millicores, bytes, a count), so sums are exact."""

    cpu_millis: int = 0
    memory_bytes: int = 0
    pods: int = 0
    ephemeral_storage_bytes: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_millis + other.cpu_millis,
            self.memory_bytes + other.memory_bytes,
            self.pods + other.pods,
            self.ephemeral_storage_bytes + other.ephemeral_storage_bytes,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_millis - other.cpu_millis,
            self.memory_bytes - other.memory_bytes,
            self.pods - other.pods,
            self.ephemeral_storage_bytes - other.ephemeral_storage_bytes,
        )

    def fits_in(self, free: Resources) -> bool:
        """Whether every amount here is at most the same amount in `free`."""
        return (
            self.cpu_millis <= free.cpu_millis
            and self.memory_bytes <= free.memory_bytes
            and self.pods <= free.pods
            and self.ephemeral_storage_bytes <= free.ephemeral_storage_bytes
        )


NOTHING = Resources()


def container_requests(c: pod_pb2.Container) -> Resources:
    """What one container reserves: each resource's request, else its limit (pods = 0)."""
    req, lim = c.resources.requests, c.resources.limits
    return Resources(
        cpu_millis=req.cpu_millis or lim.cpu_millis,
        memory_bytes=req.memory_bytes or lim.memory_bytes,
        ephemeral_storage_bytes=req.ephemeral_storage_bytes or lim.ephemeral_storage_bytes,
    )


def pod_requests(spec: pod_pb2.PodSpec) -> Resources:
    """What the pod reserves on its node: per resource the apps' sum or the largest
    init container, whichever is more; and one pod slot."""
    cpu = mem = disk = 0
    for c in spec.containers:
        r = container_requests(c)
        cpu, mem, disk = cpu + r.cpu_millis, mem + r.memory_bytes, disk + r.ephemeral_storage_bytes
    for c in spec.init_containers:
        r = container_requests(c)
        cpu, mem = max(cpu, r.cpu_millis), max(mem, r.memory_bytes)
        disk = max(disk, r.ephemeral_storage_bytes)
    return Resources(cpu, mem, 1, disk)
