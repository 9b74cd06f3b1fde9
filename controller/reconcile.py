"""The controller's side of the reconcile driver: its loops watch in process.

The driver itself (watch → dirty keys → pure plan → execute, per-key back-off,
resync, in-flight keys) is `cowpod.reconcile.Driver`: it lives in `cowpod/`
because the VM manager (`hypervisor/`, which never imports `controller`) runs on
it too. What only the controller has is its watch hubs (`controller/watch.py`):
the ReplicaSet controller, the VM manager and the autoscaler run inside the
controller process and subscribe to those hubs directly through
`hub_watches`, instead of going out and back in over a loopback gRPC channel.
The stream is the same one a gRPC client gets (initial list, BOOKMARK,
resumable, batched), so an `Informer` cannot tell the two apart; a broken
stream raises the domain error (`OutOfRange` → relist) instead of an
`AioRpcError`.

Writes still go through the API (a `Client` over the local socket), so every
change passes validation, admission and the same code paths as any client's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from google.protobuf.message import Message

from controller.resource import DEFAULT_BOOKMARK_SECONDS, Resource
from controller.store import KeyValue, decode
from controller.watch import MAX_BATCH_EVENTS, ObjectBatch, ObjectEvent, ObjectSubscription
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2, vm_pb2, workload_pb2
from cowpod.watches import Watches, WatchFn

E = TypeVar("E", bound=Message)


def hub_watch(resource: Resource[Any], event: type[E]) -> WatchFn[E]:
    """`resource`'s watch (served from its hub) as a watch function yielding decoded events."""
    parse: Callable[[bytes], E] = event.FromString

    async def watch(opts: meta_pb2.WatchOptions) -> AsyncIterator[E]:
        async for raw in resource.watch(opts):
            yield parse(raw)

    return watch


def hub_objects(resource: Resource[Any], event: type[Message]) -> WatchFn[Any]:
    """`resource`'s watch for an in-process informer: the objects the hub decoded, shared (read
    only) with every other in-process consumer, in `ObjectBatch`es; nothing is encoded or
    parsed again. A resume from before the hub's buffer falls back to the byte stream's own
    etcd watch (`hub_watch`), parsed here. The shared pod informer
    (`controller.pod_informer`) reads pods this way."""
    hub = resource.hub
    assert hub is not None
    by_bytes = hub_watch(resource, event)

    async def watch(opts: meta_pb2.WatchOptions) -> AsyncIterator[Any]:
        flt = resource.filter(opts.list)
        interval = float(opts.bookmark_interval_seconds) or DEFAULT_BOOKMARK_SECONDS
        await hub.wait_ready()
        kvs: list[KeyValue] = []
        if opts.send_initial:
            kvs, after = await resource.store.list_raw(resource.kind.prefix(flt.namespace))
        elif opts.resource_version:
            after = opts.resource_version
        else:
            after = await resource.store.current_revision()
        # Subscribed before the list goes out (no await in between), as `Resource.watch`.
        sub = hub.subscribe(flt, after, interval, objects=True)
        if not isinstance(sub, ObjectSubscription):
            async for ev in by_bytes(opts):
                yield ev
            return
        try:
            if opts.send_initial:
                chunk: list[ObjectEvent] = []
                for kv in kvs:
                    obj = decode(resource.kind.message, kv.value, kv.mod_revision)
                    if flt.everything or flt.matches(obj):
                        chunk.append(ObjectEvent(meta_pb2.ADDED, obj, kv.mod_revision))
                        if len(chunk) >= MAX_BATCH_EVENTS:
                            yield ObjectBatch(chunk)
                            chunk = []
                del kvs
                chunk.append(ObjectEvent(meta_pb2.BOOKMARK, None, after))
                yield ObjectBatch(chunk)
            async for batch in sub.objects():
                yield batch
        finally:
            hub.unsubscribe(sub)

    return watch


def hub_watches(pods: Resource[Any], nodes: Resource[Any], vms: Resource[Any],
                replicasets: Resource[Any]) -> Watches:
    """The in-process `Watches` for the controller's own loops."""
    return Watches(
        pods=hub_watch(pods, pod_pb2.PodWatchEvent),
        nodes=hub_watch(nodes, node_pb2.NodeWatchEvent),
        vms=hub_watch(vms, vm_pb2.VMWatchEvent),
        replicasets=hub_watch(replicasets, workload_pb2.ReplicaSetWatchEvent),
    )
