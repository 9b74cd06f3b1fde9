"""The ReplicaSet controller: keep `spec.replicas` live pods for every ReplicaSet.

    ReplicaSet informer ─┐                                 ┌─► PodService.Create (owner ref set)
                         ├─► dirty sets ─► plan_dirty() ─► ┼─► PodService.Delete (surplus, orphans)
    Pod informer ────────┘   ▲  (cowpod.reconcile.Driver)  └─► ReplicaSetService.UpdateStatus, events
                             └── resync tick; a set whose calls failed, after its back-off

Modules: `replicaset_actions.py` (what may be done), `replicaset_plan.py` (the pure
rules), `replicaset_executor.py` (the calls and the expectations), this one (the
informers' bookkeeping on the reconcile driver). One key per set, plus `ORPHANS`.
A set with a pod Ready for less than `minReadySeconds` is planned again when it turns
available (the plan's `Requeue`), not at the next event or resync.

It runs inside the controller process; its informers read the controller's watch
hubs in process (`controller.reconcile.hub_watches`) and it writes through the API
(a `Client`), so its writes pass the same validation as any client's and it needs
no access to etcd.

Words:
- owned: a pod whose controller owner reference names the ReplicaSet's uid.
- active: owned, not terminating (no deletion_timestamp) and not terminal
  (Succeeded/Failed). Only active pods count towards `replicas`; a pod whose
  node was lost is Failed (reason NodeLost) and terminating, so it is replaced.
- in flight: pods this process created or deleted whose effect the pod informer
  has not shown yet (Kubernetes' "expectations"). While a set has any, it is
  not scaled again: without this, a lagging cache would make every pass create
  (or delete) the same pods again.
- orphan: a pod whose controller ReplicaSet no longer exists. It is deleted
  (Kubernetes' background cascade) after the executor confirms, by a direct
  read, that the owner really is gone.

Crash safety: pod names are chosen here (`<set>-<random>`) before the create, so
a create retried after UNAVAILABLE is idempotent by name (ALREADY_EXISTS means
our first attempt landed). After a restart the informers relist and the plan
starts from what is stored: at most the in-flight creates of the crashed
process exist already and are simply counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from controller.pod_informer import SharedPodInformer, pod_handle
from controller.replicaset_actions import Action
from controller.replicaset_executor import (
    DEFAULT_EXPECTATION_TIMEOUT,
    Executor,
    Expectations,
    ReplicaSetMetrics,
    WorkloadAPI,
)
from controller.replicaset_plan import DEFAULT_BURST, KIND, ORPHANS, Key, Observed, owner_uid, plan_dirty
from cowpod.backoff import Backoff
from cowpod.clock import Clock, RealClock
from cowpod.errors import Unavailable
from cowpod.informer import Informer
from cowpod.reconcile import Dirty, Driver, Requeue
from cowpod.v1 import meta_pb2, pod_pb2, workload_pb2
from cowpod.watches import Watches

log = logging.getLogger(__name__)

NAME = "replicaset-controller"
DEFAULT_RESYNC_SECONDS = 30.0
# A set some of whose calls failed is planned again after this back-off.
FAILURE_BACKOFF = Backoff(initial=0.5, cap=30.0)


class ReplicaSetController:
    """Informers mark dirty sets; the reconcile driver plans and executes. `run()` until cancelled."""

    def __init__(self, api: WorkloadAPI, watches: Watches, clock: Clock | None = None, *,
                 resync_seconds: float = DEFAULT_RESYNC_SECONDS,
                 expectation_timeout: float = DEFAULT_EXPECTATION_TIMEOUT,
                 burst: int = DEFAULT_BURST, registry: CollectorRegistry | None = None,
                 pod_informer: SharedPodInformer | None = None) -> None:
        """Pods come from `pod_informer` when given (the controller's shared one), else from a
        private one over `watches.pods`."""
        self.api = api
        self.clock: Clock = clock or RealClock()
        self.burst = burst
        self.metrics = ReplicaSetMetrics(registry)
        self.expect = Expectations(self.clock, expectation_timeout)
        self.executor = Executor(api, self.expect, self.metrics)
        self.replicasets: Informer[workload_pb2.ReplicaSet] = Informer(
            watches.replicasets, handler=self._on_rs, clock=self.clock, name="replicaset-informer")
        self.pods = pod_handle(pod_informer or watches.pods, self._on_pod, clock=self.clock,
                               name="replicaset-pod-informer")
        # ReplicaSet uid -> its pods: the shared informer's index (read only).
        self._owned = self.pods.shared.owned(KIND)
        self._by_uid: dict[str, Key] = {}
        self.driver: Driver[Key, Observed, Action] = Driver(
            self, self.clock, name=NAME, sources=(self.replicasets, self.pods), resync_seconds=resync_seconds,
            backoff=FAILURE_BACKOFF, registry=registry)

    # -- informer handlers (cheap: bookkeeping and marking dirty only)

    async def _on_rs(self, type_: int, rs: workload_pb2.ReplicaSet) -> None:
        key = (rs.metadata.namespace, rs.metadata.name)
        if type_ == meta_pb2.DELETED:
            self._by_uid.pop(rs.metadata.uid, None)
            self.expect.forget(rs.metadata.uid)
            self.driver.forget(key)
            self.driver.mark(ORPHANS)
        else:
            self._by_uid[rs.metadata.uid] = key
            self.driver.mark(key)

    async def _on_pod(self, type_: int, pod: pod_pb2.Pod) -> None:
        """The shared informer's cache and owner index already show this event."""
        uid = owner_uid(pod)
        if not uid:
            return
        gone = type_ == meta_pb2.DELETED
        self.expect.observe(pod, gone=gone)
        rs_key = self._by_uid.get(uid)
        if rs_key is not None:
            self.driver.mark(rs_key)
        elif not gone:
            self.driver.mark(ORPHANS)

    # -- the driver's side (cowpod.reconcile.Reconciler)

    def ready(self) -> bool:
        return True

    async def observe(self) -> Observed:
        return Observed(self.replicasets.cache, self._owned, self.expect.snapshot(), self.clock.now())

    def plan(self, state: Observed, dirty: Dirty[Key]) -> dict[Key, list[Action | Requeue]]:
        return plan_dirty(state, dirty, burst=self.burst)

    async def execute(self, key: Key, actions: Sequence[Action]) -> None:
        failed = await self.executor.execute(actions)
        self.metrics.in_flight.set(self.expect.pending())
        if failed:
            raise Unavailable(f"{failed} of the calls for {key[0]}/{key[1] or '(orphans)'} failed")

    # -- running

    async def run(self) -> None:
        await self.driver.run()

    async def sync_once(self) -> list[Action]:
        """Plan the dirty sets (and orphans) from the caches and execute now. Returns the actions."""
        done = await self.driver.sync()
        return [a for actions in done.values() for a in actions]
