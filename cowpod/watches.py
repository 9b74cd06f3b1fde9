"""Where a control loop's informers get their watch streams.

A `WatchFn` is what `Informer` calls: `WatchOptions` in, an async stream of the
kind's watch events out. Out of process that is the gRPC stub's `Watch`
(`Watches.over(client)`); inside the controller the loops subscribe to the
controller's own watch hubs directly (`controller.reconcile.hub_watches`),
with no loopback gRPC channel, TLS or second encoding in between. Tests hand
in their own functions.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from cowpod.v1 import meta_pb2, node_pb2, pod_pb2, vm_pb2, workload_pb2

E_co = TypeVar("E_co", covariant=True)


class WatchFn(Protocol[E_co]):
    def __call__(self, opts: meta_pb2.WatchOptions, /) -> AsyncIterable[E_co]: ...


@dataclass(frozen=True)
class Watches:
    """One watch function per kind the loops watch."""

    pods: WatchFn[pod_pb2.PodWatchEvent]
    nodes: WatchFn[node_pb2.NodeWatchEvent]
    vms: WatchFn[vm_pb2.VMWatchEvent]
    replicasets: WatchFn[workload_pb2.ReplicaSetWatchEvent]

    @classmethod
    def over(cls, client: Any) -> Watches:
        """Over gRPC: a `cowpod.client.Client`, or anything with its (untyped) stubs. A stub
        is looked up when its watch starts, so a loop's test double needs only the kinds
        that loop watches."""
        return cls(pods=lambda o: client.pods.Watch(o), nodes=lambda o: client.nodes.Watch(o),
                   vms=lambda o: client.vms.Watch(o), replicasets=lambda o: client.replicasets.Watch(o))
