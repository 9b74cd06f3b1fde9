"""What the Job and DaemonSet controllers share: pods they own, and the I/O on them.

Both are pod owners in the ReplicaSet controller's mould (`controller.replicaset`
holds the words: owned, active, in flight, orphan) and run on the shared
reconcile driver (`cowpod.reconcile.Driver`). This module keeps the parts that
are the same for every owner kind:

- `PodIndex`: pods by their controller owner's uid, kept by a pod informer's
  handler (the plans read it; nothing else mutates it);
- `OwnerExpectations`: creates/deletes the cache does not show yet, per owner
  (the ReplicaSet controller's `Expectations`, keyed by any owner kind);
- actions (`CreatePod`, `DeletePod`, `CollectOrphan`) and `PodActions`, the
  executor half that carries them out through the API with events;
- `template_hash`: the stable hash of a pod template that names a revision
  (Deployments' `pod-template-hash`, DaemonSets' `controller-revision-hash`);
- `PodOwnerLoop`: the whole loop (informers, driver, orphans, executor) around a kind's
  pure `plan_owner`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import grpc
from prometheus_client import CollectorRegistry

from controller.pod_informer import SharedPodInformer, pod_handle
from controller.replicaset_actions import InFlight
from controller.replicaset_executor import Expectations, new_pod_name
from controller.replicaset_plan import is_terminating
from controller.resource import get_time
from cowpod.client import Client
from cowpod.clock import Clock, RealClock
from cowpod.errors import rpc_code
from cowpod.informer import Informer
from cowpod.reconcile import Dirty, Driver
from cowpod.v1 import event_pb2, meta_pb2, pod_pb2, workload_pb2

log = logging.getLogger(__name__)

Key = tuple[str, str]
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' SafeEncodeString alphabet: no vowels, no 0/1/3


def controller_uid(meta: meta_pb2.ObjectMeta, kind: str) -> str:
    """The uid of the `kind` object that controls this one, or ""."""
    for ref in meta.owner_references:
        if ref.controller:
            return ref.uid if ref.kind == kind else ""
    return ""


def controller_name(meta: meta_pb2.ObjectMeta) -> str:
    for ref in meta.owner_references:
        if ref.controller:
            return ref.name
    return ""


def template_hash(tmpl: workload_pb2.PodTemplateSpec, *, drop_label: str = "") -> str:
    """A short, stable, DNS-safe hash of a pod template (without `drop_label`, the label that
    carries the hash itself). Same template, same hash, in every process and release."""
    t = workload_pb2.PodTemplateSpec()
    t.CopyFrom(tmpl)
    if drop_label:
        t.metadata.labels.pop(drop_label, None)
    digest = hashlib.sha256(t.SerializeToString(deterministic=True)).digest()
    n = int.from_bytes(digest[:8], "big")
    out = []
    for _ in range(10):
        n, r = divmod(n, len(_SAFE))
        out.append(_SAFE[r])
    return "".join(out)


def finished_at(pod: pod_pb2.Pod) -> float:
    """When the pod's last container finished (0 if none reports it: e.g. refused by its node)."""
    return max((get_time(cs.state.terminated.finished_at) for cs in pod.status.container_statuses
                if cs.state.terminated.HasField("finished_at")), default=0.0)


def pod_from_template(tmpl: workload_pb2.PodTemplateSpec, owner_kind: str, owner: meta_pb2.ObjectMeta,
                      *, extra_labels: dict[str, str] | None = None) -> pod_pb2.Pod:
    """A pod (no name yet) stamped from `tmpl`, controlled by `owner`."""
    pod = pod_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.namespace = owner.namespace
    pod.metadata.labels.update(tmpl.metadata.labels)
    if extra_labels:
        pod.metadata.labels.update(extra_labels)
    pod.metadata.annotations.update(tmpl.metadata.annotations)
    pod.metadata.owner_references.add(kind=owner_kind, name=owner.name, uid=owner.uid, controller=True)
    pod.spec.CopyFrom(tmpl.spec)
    return pod


# ---- the pods each owner has -----------------------------------------------------------------------


class PodIndex:
    """Pods by controller owner uid (of one owner kind), from a pod informer's events.

    Over a `SharedPodInformer` (`shared`) it keeps nothing itself: it reads the shared owner
    index (which the informer updates before calling handlers; `apply` only names the owner),
    and with `label` it shows only the pods carrying that label key (what a loop's own
    label-selected informer held before)."""

    def __init__(self, kind: str, shared: SharedPodInformer | None = None, *, label: str = "") -> None:
        self.kind = kind
        self.label = label
        self._by_owner: Mapping[str, Mapping[Key, pod_pb2.Pod]] = shared.owned(kind) if shared else {}
        self._own: dict[str, dict[Key, pod_pb2.Pod]] | None = None if shared else {}

    def apply(self, type_: int, pod: pod_pb2.Pod) -> str:
        """Record one event; returns the owner uid it concerns ("" if none of ours)."""
        uid = controller_uid(pod.metadata, self.kind)
        if not uid or self._own is None:
            return uid
        key = (pod.metadata.namespace, pod.metadata.name)
        if type_ == meta_pb2.DELETED:
            owned = self._own.get(uid)
            if owned is not None:
                owned.pop(key, None)
                if not owned:
                    del self._own[uid]
        else:
            self._own.setdefault(uid, {})[key] = pod
        return uid

    def owned(self, uid: str) -> list[pod_pb2.Pod]:
        by = self._own if self._own is not None else self._by_owner
        pods = by.get(uid, {}).values()
        if self.label:
            return [p for p in pods if self.label in p.metadata.labels]
        return list(pods)

    def owners(self) -> Iterable[str]:
        by = self._own if self._own is not None else self._by_owner
        if self.label:
            return [uid for uid, pods in by.items()
                    if any(self.label in p.metadata.labels for p in pods.values())]
        return list(by)


class OwnerExpectations(Expectations):
    """`Expectations` for pods controlled by any one kind (the ReplicaSet controller's reads
    only ReplicaSet owner references)."""

    def __init__(self, clock: Clock, kind: str) -> None:
        super().__init__(clock)
        self.kind = kind

    def observe(self, pod: pod_pb2.Pod, gone: bool = False) -> None:
        uid = controller_uid(pod.metadata, self.kind)
        if not uid:
            return
        self._creating.get(uid, {}).pop(pod.metadata.name, None)
        if gone or is_terminating(pod):
            self._deleting.get(uid, {}).pop(pod.metadata.uid, None)


def settled(in_flight: InFlight, owned: Iterable[pod_pb2.Pod]) -> bool:
    """The cache shows every create and delete of this owner: counting pods is safe."""
    seen = {p.metadata.name for p in owned}
    return not (in_flight.creating - seen) and not in_flight.deleting


# ---- actions ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatePod:
    """Create `pod` (named `<prefix>-<random>` by the executor) for its owner."""

    owner_uid: str
    prefix: str
    pod: pod_pb2.Pod = field(hash=False, compare=False)
    # What the pod is for, in events ("on node vm-2").
    why: str = ""


@dataclass(frozen=True)
class DeletePod:
    namespace: str
    name: str
    uid: str
    owner_uid: str
    reason: str


@dataclass(frozen=True)
class CollectOrphan:
    """Delete a pod whose controller is gone (the executor confirms by a direct read first)."""

    namespace: str
    name: str
    owner_name: str
    owner_uid: str


def plan_orphans(index: PodIndex, live_uids: set[str], namespace: str, name: str) -> list[CollectOrphan]:
    """Pure: pods whose owner, once called `namespace/name`, no longer exists with their uid."""
    out = []
    for uid in index.owners():
        if uid in live_uids:
            continue
        for p in index.owned(uid):
            if p.metadata.namespace == namespace and controller_name(p.metadata) == name \
                    and not is_terminating(p):
                out.append(CollectOrphan(p.metadata.namespace, p.metadata.name, name, uid))
    return out


class PodActions:
    """The executor half for pods: create (named here, expected until seen), delete, collect
    orphans, record events. Errors other than the benign ones propagate, so the driver backs
    the key off and plans it again."""

    def __init__(self, client: Client, expectations: OwnerExpectations, *, kind: str, component: str,
                 get_owner: Callable[..., Awaitable[Any]]) -> None:
        self.c = client
        self.expect = expectations
        self.kind = kind
        self.component = component
        self._get_owner = get_owner  # the owner service's Get stub

    async def create(self, a: CreatePod, owner: meta_pb2.ObjectMeta) -> None:
        pod = pod_pb2.Pod()
        pod.CopyFrom(a.pod)
        pod.metadata.name = new_pod_name(a.prefix)
        self.expect.expect_create(a.owner_uid, pod.metadata.name)
        try:
            await self.c.call(self.c.pods.Create, pod)
        except grpc.RpcError as err:
            if rpc_code(err) == grpc.StatusCode.ALREADY_EXISTS:
                return  # our own earlier attempt landed: the name is ours and random
            self.expect.create_failed(a.owner_uid, pod.metadata.name)
            if rpc_code(err) == grpc.StatusCode.INVALID_ARGUMENT:
                await self.event(owner, "FailedCreate", f"Error creating: {err.details()}", warning=True)
            raise
        await self.event(owner, "SuccessfulCreate", f"Created pod: {pod.metadata.name}{a.why}")

    async def delete(self, a: DeletePod, owner: meta_pb2.ObjectMeta | None) -> None:
        self.expect.expect_delete(a.owner_uid, a.uid)
        opts = meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(namespace=a.namespace, name=a.name))
        try:
            await self.c.call(self.c.pods.Delete, opts)
        except grpc.RpcError as err:
            if rpc_code(err) != grpc.StatusCode.NOT_FOUND:
                self.expect.delete_failed(a.owner_uid, a.uid)
                raise
        if owner is not None:
            await self.event(owner, "SuccessfulDelete", f"Deleted pod: {a.name} ({a.reason})")

    async def collect(self, a: CollectOrphan) -> None:
        try:
            cur: Any = await self.c.call(self._get_owner,
                                         meta_pb2.ObjectKey(namespace=a.namespace, name=a.owner_name))
            if cur.metadata.uid == a.owner_uid:
                return  # the cache was behind: the owner exists
        except grpc.RpcError as err:
            if rpc_code(err) != grpc.StatusCode.NOT_FOUND:
                raise
        opts = meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(namespace=a.namespace, name=a.name))
        try:
            await self.c.call(self.c.pods.Delete, opts)
        except grpc.RpcError as err:
            if rpc_code(err) != grpc.StatusCode.NOT_FOUND:
                raise
        log.info("deleted pod %s/%s: its %s %s is gone", a.namespace, a.name, self.kind, a.owner_name)

    async def event(self, owner: meta_pb2.ObjectMeta, reason: str, message: str, *,
                    warning: bool = False) -> None:
        ev = event_pb2.Event(
            involved_object=event_pb2.ObjectReference(kind=self.kind, namespace=owner.namespace,
                                                      name=owner.name, uid=owner.uid),
            reason=reason, message=message, type="Warning" if warning else "Normal",
            source=event_pb2.EventSource(component=self.component),
        )
        ev.metadata.namespace = owner.namespace
        try:
            await self.c.call(self.c.events.Create, ev)
        except grpc.RpcError as err:
            log.debug("event %s for %s %s/%s not recorded: %s", reason, self.kind, owner.namespace,
                      owner.name, err)


# ---- the loop ---------------------------------------------------------------------------------------


class PodOwnerLoop:
    """The reconcile loop of a kind whose objects own pods directly (Jobs, DaemonSets): an
    informer of the owners, one of their pods (those with `pod_label`), the shared driver,
    orphan collection, and the executor's pod half. A subclass gives `plan_owner` (pure) and
    `execute_own` (its other actions: status, ...). Implements `cowpod.reconcile.Reconciler`
    with the pass's time as its state (the caches are the informers')."""

    kind: ClassVar[str]
    component: ClassVar[str]
    pod_label: ClassVar[str]

    def __init__(self, client: Client, clock: Clock | None, *, watch_owners: Callable[..., Any],
                 watch_pods: Callable[..., Any] | SharedPodInformer,
                 get_owner: Callable[..., Awaitable[Any]],
                 resync_seconds: float, registry: CollectorRegistry | None,
                 extra_sources: Sequence[Informer[Any]] = ()) -> None:
        self.c = client
        self.clock: Clock = clock or RealClock()
        self.owners: Informer[Any] = Informer(watch_owners, handler=self._on_owner, clock=self.clock,
                                              name=f"{self.component}-informer")
        # The pods: the controller's shared informer (or a private one over a watch function).
        self.pods = pod_handle(watch_pods, self._on_pod, clock=self.clock,
                               name=f"{self.component}-pod-informer")
        self.index = PodIndex(self.kind, self.pods.shared, label=self.pod_label)
        self.expect = OwnerExpectations(self.clock, self.kind)
        self.pod_actions = PodActions(client, self.expect, kind=self.kind, component=self.component,
                                      get_owner=get_owner)
        self.driver: Driver[Key, float, Any] = Driver(
            self, self.clock, name=self.component, sources=(self.owners, *extra_sources, self.pods),
            resync_seconds=resync_seconds, registry=registry)

    async def run(self) -> None:
        await self.driver.run()

    # -- informer handlers: bookkeeping and marking only

    async def _on_owner(self, type_: int, obj: Any) -> None:
        if type_ == meta_pb2.DELETED:
            self.expect.forget(obj.metadata.uid)
        self.driver.mark((obj.metadata.namespace, obj.metadata.name))

    async def _on_pod(self, type_: int, pod: pod_pb2.Pod) -> None:
        if self.index.apply(type_, pod):
            # Gone for this loop: deleted, or (no longer) carrying its label.
            gone = type_ == meta_pb2.DELETED or self.pod_label not in pod.metadata.labels
            self.expect.observe(pod, gone=gone)
            self.driver.mark((pod.metadata.namespace, controller_name(pod.metadata)))

    # -- what a kind gives

    def plan_owner(self, owner: Any, owned: Sequence[pod_pb2.Pod], in_flight: InFlight,
                   now: float) -> Sequence[Any]:
        raise NotImplementedError

    async def execute_own(self, owner: Any, action: Any) -> None:
        raise NotImplementedError

    # -- Reconciler

    def ready(self) -> bool:
        return True

    async def observe(self) -> float:
        return self.clock.now()

    def plan(self, state: float, dirty: Dirty[Key]) -> Mapping[Key, Sequence[Any]]:
        keys = set(dirty.keys)
        if dirty.everything:
            keys |= set(self.owners.cache)
            keys |= {(p.metadata.namespace, controller_name(p.metadata))
                     for uid in self.index.owners() for p in self.index.owned(uid)[:1]}
        live = {o.metadata.uid for o in self.owners.cache.values()}
        out: dict[Key, list[Any]] = {}
        for key in keys:
            owner = self.owners.cache.get(key)
            actions: list[Any] = list(plan_orphans(self.index, live, *key))
            if owner is not None:
                uid = owner.metadata.uid
                try:
                    owned = self.index.owned(uid)
                    actions.extend(self.plan_owner(owner, owned, self.expect.view(uid), state))
                except Exception:  # a bug on one object must not stop the loop for all the others
                    log.exception("%s: planning %s/%s failed; skipped this pass", self.component, *key)
            if actions:
                out[key] = actions
        return out

    async def execute(self, key: Key, actions: Sequence[Any]) -> None:
        """Pod creates/deletes concurrently, then the kind's own actions; the first error raised
        afterwards, so the driver backs the key off and plans it again."""
        owner = self.owners.cache.get(key)
        meta = owner.metadata if owner is not None else None
        calls = []
        for a in actions:
            if isinstance(a, CreatePod) and meta is not None:
                calls.append(self.pod_actions.create(a, meta))
            elif isinstance(a, DeletePod):
                calls.append(self.pod_actions.delete(a, meta))
            elif isinstance(a, CollectOrphan):
                calls.append(self.pod_actions.collect(a))
        results = await asyncio.gather(*calls, return_exceptions=True)
        if owner is not None:
            for a in actions:
                if not isinstance(a, CreatePod | DeletePod | CollectOrphan):
                    await self.execute_own(owner, a)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def update_status(self, call: Callable[..., Awaitable[Any]], req: Any) -> bool:
        """Write a status; False when the object is gone meanwhile."""
        try:
            await self.c.call(call, req)
        except grpc.RpcError as err:
            if rpc_code(err) != grpc.StatusCode.NOT_FOUND:
                raise
            return False
        return True
