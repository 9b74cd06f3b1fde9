"""The endpoints loop: each Service's Endpoints list the pods its selector picks.

    Service informer ──┐
                       ├─► dirty Service keys ─► subsets_for() (pure) ─► write Endpoints if changed
    Pod informer ──────┘   (a pod marks the Services of its namespace)

A pod is listed once it has an address and is not terminal or terminating;
under `addresses` when Ready, else under `notReadyAddresses` (Kubernetes'
rule; `publishNotReadyAddresses` lists every one as ready). Pods are grouped
into subsets by the ports they resolve a Service's `targetPort`s to, so a
named port that means 8080 on some pods and 9090 on others gives two subsets.
A Service without a selector has no managed Endpoints.

Only this loop writes Endpoints, in-process through the store; on start it
relists, rewrites what differs and deletes Endpoints whose Service is gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from controller.pod_informer import SharedPodInformer, pod_handle
from controller.replicaset_plan import is_ready, is_terminating
from controller.resource import Resource
from controller.services_api import target_port
from cowpod.api.phases import is_terminal
from cowpod.clock import Clock
from cowpod.errors import AlreadyExists, Conflict, CowpodError, NotFound
from cowpod.informer import Informer
from cowpod.v1 import meta_pb2, pod_pb2, service_pb2

log = logging.getLogger(__name__)

Key = tuple[str, str]


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _port_of(pod: pod_pb2.Pod, sp: service_pb2.ServicePort) -> int | None:
    tp = target_port(sp)
    if tp.isdigit():
        return int(tp)
    for c in pod.spec.containers:
        for p in c.ports:
            if p.name == tp and (p.protocol or "TCP") == sp.protocol:
                return int(p.container_port)
    return None


def subsets_for(svc: service_pb2.Service, pods: Iterable[pod_pb2.Pod]) -> list[service_pb2.EndpointSubset]:
    """The Endpoints subsets of `svc` given the pods of its namespace."""
    groups: dict[tuple[tuple[str, int, str], ...], tuple[list[service_pb2.EndpointAddress],
                                                        list[service_pb2.EndpointAddress]]] = {}
    for pod in pods:
        m = pod.metadata
        if (m.namespace != svc.metadata.namespace or not selects(svc.spec.selector, m.labels)
                or not pod.status.pod_ip or is_terminal(pod.status.phase)
                or is_terminating(pod)):
            continue
        ports: list[tuple[str, int, str]] = []
        for sp in svc.spec.ports:
            n = _port_of(pod, sp)
            if n is not None:
                ports.append((sp.name, n, sp.protocol))
        if svc.spec.ports and not ports:
            continue  # none of the Service's ports exists on this pod
        addr = service_pb2.EndpointAddress(
            ip=pod.status.pod_ip, node_name=pod.spec.node_name,
            target_ref=service_pb2.EndpointTarget(kind="Pod", namespace=m.namespace, name=m.name, uid=m.uid),
        )
        ready, not_ready = groups.setdefault(tuple(sorted(ports)), ([], []))
        (ready if is_ready(pod) or svc.spec.publish_not_ready_addresses else not_ready).append(addr)
    def order(a: service_pb2.EndpointAddress) -> tuple[str, str]:
        return (a.ip, a.target_ref.name)

    out = []
    for ports_key in sorted(groups):
        ready, not_ready = groups[ports_key]
        ready.sort(key=order)
        not_ready.sort(key=order)
        out.append(service_pb2.EndpointSubset(
            addresses=ready,
            not_ready_addresses=not_ready,
            ports=[service_pb2.EndpointPort(name=n, port=p, protocol=pr) for n, p, pr in ports_key],
        ))
    return out


class EndpointsController:
    """Runs the loop above; `watch_services`/`watch_pods` are the API's Watch calls."""

    def __init__(self, watch_services: Any, watch_pods: Any | SharedPodInformer,
                 endpoints: Resource[service_pb2.Endpoints], clock: Clock, *,
                 retry_seconds: float = 1.0) -> None:
        """`watch_pods`: the controller's shared pod informer, or a watch function (then a private
        one is made)."""
        self.res = endpoints
        self.clock = clock
        self.retry_seconds = retry_seconds
        self.services: Informer[service_pb2.Service] = Informer(
            watch_services, handler=self._on_service, clock=clock, name="endpoints/services",
            on_synced=self._on_synced)
        self.pods = pod_handle(watch_pods, self._on_pod, clock=clock, name="endpoints/pods")
        self._dirty: set[Key] = set()
        self._wake = asyncio.Event()
        self._gc_pending = True

    async def _on_synced(self) -> None:
        if self.services.synced and self.pods.synced:
            self._dirty.update(self.services.cache)
            self._wake.set()

    async def _pods_synced(self) -> None:
        await self.pods.wait_synced()
        await self._on_synced()

    async def _on_service(self, type_: int, svc: service_pb2.Service) -> None:
        self._dirty.add((svc.metadata.namespace, svc.metadata.name))
        self._wake.set()

    async def _on_pod(self, type_: int, pod: pod_pb2.Pod) -> None:
        ns = pod.metadata.namespace
        keys = [k for k in self.services.cache if k[0] == ns]
        # A pod no Service can select (none in its namespace) has nothing to redo: waking the
        # worker for it (once per pod batch) would only find nothing dirty.
        if keys:
            self._dirty.update(keys)
            self._wake.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.services.run(), name="endpoints-services-informer")
            tg.create_task(self.pods.run(), name="endpoints-pods-informer")
            tg.create_task(self._pods_synced(), name="endpoints-pods-synced")
            tg.create_task(self._work(), name="endpoints-worker")

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not (self.services.synced and self.pods.synced):
                continue
            if self._gc_pending:
                self._gc_pending = not await self._collect()
            keys, self._dirty = self._dirty, set()
            failed = [k for k in sorted(keys) if not await self.sync(k)]
            if failed or self._gc_pending:
                self._dirty.update(failed)
                await self.clock.sleep(self.retry_seconds)
                self._wake.set()

    async def sync(self, key: Key) -> bool:
        """Make one Service's Endpoints match; False when the store refused (retried later)."""
        ns, name = key
        svc = self.services.cache.get(key)
        try:
            if svc is None or not svc.spec.selector:
                await self._delete(ns, name)
                return True
            pods = list(self.pods.shared.in_namespace(ns))
            await self._put(svc, subsets_for(svc, pods))
        except CowpodError as err:
            log.warning("endpoints %s/%s: %s; retrying", ns, name, err)
            return False
        return True

    async def _delete(self, ns: str, name: str) -> None:
        try:
            await self.res.remove(ns, name)
            log.info("endpoints %s/%s deleted (its Service is gone or selects nothing)", ns, name)
        except NotFound:
            pass

    async def _put(self, svc: service_pb2.Service, subsets: list[service_pb2.EndpointSubset]) -> None:
        ns, name = svc.metadata.namespace, svc.metadata.name

        def mutate(cur: service_pb2.Endpoints) -> service_pb2.Endpoints | None:
            if list(cur.subsets) == subsets and dict(cur.metadata.labels) == dict(svc.metadata.labels):
                return None
            del cur.subsets[:]
            cur.subsets.extend(subsets)
            cur.metadata.labels.clear()
            cur.metadata.labels.update(svc.metadata.labels)
            return cur

        try:
            await self.res.update(ns, name, 0, mutate)
            return
        except NotFound:
            pass
        ep = service_pb2.Endpoints(subsets=subsets)
        ep.metadata.namespace, ep.metadata.name = ns, name
        ep.metadata.labels.update(svc.metadata.labels)
        self.res.prepare_new(ep)
        try:
            await self.res.create(ep)
        except (AlreadyExists, Conflict):
            self._dirty.add((ns, name))  # raced with ourselves after a restart: redo from the stored one

    async def _collect(self) -> bool:
        """Delete Endpoints whose Service is gone (it was deleted while this loop was down)."""
        try:
            items, _ = await self.res.list(meta_pb2.ListOptions())
        except CowpodError as err:
            log.warning("endpoints: cannot list for garbage collection: %s", err)
            return False
        for ep in items:
            key = (ep.metadata.namespace, ep.metadata.name)
            if key not in self.services.cache:
                self._dirty.add(key)
        return True
