"""The VM manager: reconciles the controller's VM objects with a hypervisor provider.

Runs inside the controller process when `--provider` is not `none`. It writes
through the API (a `Client`) like any other component; its informers read the
controller's watch hubs in process when the controller hands it `watches`
(over gRPC otherwise):

    VM informer ──┐                     ┌─► provider (full/instant clone, pause, snap free, destroy)
                  ├─► dirty ─► plan() ──┤
    Node informer ┘   ▲                 └─► VMService.UpdateStatus / Destroy, NodeService.Delete, events
                      └── resync tick (provider.list(); catches VMs that died on their own)

The loop is `cowpod.reconcile.Driver` with one key per VM name: each VM's
actions run as their own task (one in flight per VM name), so a slow clone
never blocks a destroy of another VM; a VM whose action failed backs off. The
first plan runs only after both informers have synced, so startup
reconciliation (orphan VMs destroyed, vanished VMs marked Failed) sees the
whole picture.

A snap free is asked for by setting the annotation `cowpod.io/snap-free` on
the VM (VMService.SnapFree does that); the manager does it and sets
status.snapped_free.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pathlib
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Protocol

import grpc
from google.protobuf import timestamp_pb2
from prometheus_client import CollectorRegistry

from cowpod.api.labels import SNAP_FREE_ANNOTATION
from cowpod.api.phases import VMPhase
from cowpod.api.times import to_timestamp
from cowpod.backoff import Backoff
from cowpod.client import Client
from cowpod.clock import Clock, RealClock
from cowpod.errors import CowpodError, FailedPrecondition, rpc_code
from cowpod.informer import Informer
from cowpod.reconcile import Dirty, Driver
from cowpod.tasks import TaskSupervisor
from cowpod.v1 import event_pb2, meta_pb2, node_pb2, vm_pb2
from cowpod.watches import Watches
from hypervisor import registry
from hypervisor.bootstrap import guest_bootstrap
from hypervisor.metrics import VMMetrics
from hypervisor.plan import (
    Action,
    Create,
    DesiredVM,
    Destroy,
    DestroyOrphan,
    Fail,
    SetPaused,
    SnapFree,
    StatusFields,
    SyncStatus,
    plan,
    target_status,
)
from hypervisor.provider import (
    CollectsGarbage,
    ControllerAddress,
    PreparesParents,
    Provider,
    ProviderContext,
    VMInfo,
    VMSpecInfo,
)

log = logging.getLogger(__name__)

COMPONENT = "vm-manager"
# A VM whose action failed is retried after 0.5 s, doubling up to 30 s.
FAILURE_BACKOFF = Backoff(initial=0.5, cap=30.0)
# A VM object may leave its size to the provider (the API allows 0).
DEFAULT_CPU_MILLIS = 1000
DEFAULT_MEMORY_BYTES = 1 << 30


# ---- protobuf at the edge -----------------------------------------------------


def _from_ts(msg: vm_pb2.VMStatus, field: str) -> float | None:
    if not msg.HasField(field):
        return None
    ts: timestamp_pb2.Timestamp = getattr(msg, field)
    return float(ts.ToNanoseconds()) / 1e9


def desired_of(vm: vm_pb2.VM) -> DesiredVM:
    s = vm.status
    ann = vm.metadata.annotations.get(SNAP_FREE_ANNOTATION, "")
    return DesiredVM(
        name=vm.metadata.name,
        spec=VMSpecInfo(
            name=vm.metadata.name,
            class_name=vm.spec.class_name,
            cpu_millis=vm.spec.cpu_millis or DEFAULT_CPU_MILLIS,
            memory_bytes=vm.spec.memory_bytes or DEFAULT_MEMORY_BYTES,
            image=vm.spec.image,
            parent=vm.spec.parent,
            node_labels=dict(vm.spec.node_labels),
            template=vm.spec.template,
        ),
        status=StatusFields(
            phase=s.phase,
            node_name=s.node_name,
            ip=s.ip,
            provider_id=s.provider_id,
            hostname=s.hostname,
            machine_id=s.machine_id,
            clone_kind=s.clone_kind,
            created_at=_from_ts(s, "created_at"),
            ready_at=_from_ts(s, "ready_at"),
            snapped_free=s.snapped_free,
            children=tuple(s.children),
            message=s.message,
        ),
        deleting=vm.metadata.HasField("deletion_timestamp"),
        paused=vm.spec.paused,
        snap_free_requested=ann.lower() not in ("", "false", "0"),
    )


def apply_status(vm: vm_pb2.VM, st: StatusFields) -> vm_pb2.VM:
    """A copy of `vm` whose status carries `st` (other status fields kept)."""
    out = vm_pb2.VM()
    out.CopyFrom(vm)
    s = out.status
    s.phase = st.phase
    s.node_name = st.node_name
    s.ip = st.ip
    s.provider_id = st.provider_id
    s.hostname = st.hostname
    s.machine_id = st.machine_id
    s.clone_kind = st.clone_kind
    s.snapped_free = st.snapped_free
    s.message = st.message
    del s.children[:]
    s.children.extend(st.children)
    for field, t in (("created_at", st.created_at), ("ready_at", st.ready_at)):
        if t is None:
            s.ClearField(field)
        else:
            getattr(s, field).CopyFrom(to_timestamp(t))
    return out


def _node_ready(node: node_pb2.Node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


# ---- what the executor needs from the controller --------------------------------


class VMApi(Protocol):
    """The controller calls the executor makes; `GrpcVMApi` is the real one."""

    async def update_status(self, name: str, status: StatusFields) -> None: ...

    async def finalize(self, name: str) -> None:
        """Remove the VM object for good (VMService.Destroy with grace 0)."""

    async def delete_node(self, name: str) -> None: ...

    async def event(self, vm: str, reason: str, message: str, *, warning: bool = False) -> None: ...


class GrpcVMApi:
    def __init__(self, client: Client, clock: Clock, latest: Mapping[tuple[str, str], vm_pb2.VM]) -> None:
        self._c = client
        self._clock = clock
        # The VM informer's cache: the freshest copy we have, for CAS writes.
        self._latest = latest
        # VM name -> resource_version of our last status write. Until the cache
        # has caught up with it, planning that VM would act on stale status.
        self.written: dict[str, int] = {}

    async def update_status(self, name: str, status: StatusFields) -> None:
        cached = self._latest.get(("", name))
        for _ in range(5):
            vm: vm_pb2.VM = (
                cached if cached is not None
                else await self._c.call(self._c.vms.Get, meta_pb2.ObjectKey(name=name))
            )
            try:
                out = await self._c.call(self._c.vms.UpdateStatus, apply_status(vm, status))
                self.written[name] = out.metadata.resource_version
                return
            except grpc.RpcError as err:
                if rpc_code(err) == grpc.StatusCode.NOT_FOUND:
                    return  # gone meanwhile: nothing to report on
                if rpc_code(err) != grpc.StatusCode.ABORTED:
                    raise
                cached = None  # stale: read again and retry
        raise FailedPrecondition(f"vm {name!r}: status update kept conflicting")

    async def finalize(self, name: str) -> None:
        try:
            await self._c.call(self._c.vms.Destroy, meta_pb2.DeleteOptions(
                key=meta_pb2.ObjectKey(name=name), grace_period_seconds=0))
        except grpc.RpcError as err:
            if rpc_code(err) != grpc.StatusCode.NOT_FOUND:
                raise

    async def delete_node(self, name: str) -> None:
        try:
            await self._c.call(self._c.nodes.Delete, meta_pb2.DeleteOptions(
                key=meta_pb2.ObjectKey(name=name), grace_period_seconds=0))
        except grpc.RpcError as err:
            if rpc_code(err) != grpc.StatusCode.NOT_FOUND:
                raise

    async def event(self, vm: str, reason: str, message: str, *, warning: bool = False) -> None:
        now = to_timestamp(self._clock.now())
        ev = event_pb2.Event(
            metadata=meta_pb2.ObjectMeta(name=f"{vm}.{uuid.uuid4().hex[:10]}", namespace="default"),
            involved_object=event_pb2.ObjectReference(kind="VM", name=vm),
            reason=reason, message=message, type="Warning" if warning else "Normal",
            source=event_pb2.EventSource(component=COMPONENT),
            first_timestamp=now, last_timestamp=now, count=1,
        )
        try:
            await self._c.call(self._c.events.Create, ev)
        except grpc.RpcError as err:  # events are best effort
            log.warning("event %s for vm %s not recorded: %s", reason, vm, err)


# ---- the executor ------------------------------------------------------------


@dataclass
class Executor:
    """Does one planned action against the provider and the controller."""

    provider: Provider
    api: VMApi
    clock: Clock
    metrics: VMMetrics | None = None
    # A VM's clone kind (full | instant) as its status records it, for destroy metrics.
    kind_of: Callable[[str], str] = dc_field(default=lambda _name: "")
    # Where the controller publishes the join bundle every guest gets (None: insecure).
    join_dir: pathlib.Path | None = None

    @contextlib.contextmanager
    def _timed(self, what: str, kind: str) -> Iterator[None]:
        if self.metrics is None:
            yield
            return
        hist = self.metrics.clone_seconds if what == "clone" else self.metrics.destroy_seconds
        with self.metrics.timed(hist, kind, self.clock):
            yield

    async def _destroy(self, name: str, *, cascade: bool = False) -> None:
        with self._timed("destroy", self.kind_of(name)):
            if cascade:
                await self.provider.destroy(name, cascade=True)
            else:
                await self.provider.destroy(name)

    async def execute(self, action: Action) -> None:
        match action:
            case Create():
                await self._create(action)
            case SyncStatus(name=name, status=status):
                await self.api.update_status(name, status)
            case SetPaused(name=name, paused=paused):
                info = await (self.provider.pause(name) if paused else self.provider.resume(name))
                await self.api.event(name, "Paused" if paused else "Resumed", f"vm {info.name}")
            case SnapFree(name=name):
                await self.provider.snap_free(name)
                await self.api.event(name, "SnappedFree", "no longer depends on its parent")
            case Destroy(name=name, present=present, status=status):
                if status is not None:
                    await self.api.update_status(name, dataclasses.replace(status, phase=VMPhase.DESTROYING))
                if present:
                    await self._destroy(name)
                await self.api.delete_node(name)
                await self.api.finalize(name)
            case Fail(name=name, message=message, present=present):
                await self._fail(name, message, present)
            case DestroyOrphan(name=name):
                log.info("destroying orphan vm %s (no VM object)", name)
                await self._destroy(name, cascade=True)

    async def _create(self, a: Create) -> None:
        # Before anything is reported: a bootstrap that cannot be made yet (no join
        # token published) is retried with back-off, not a failed VM.
        guest = guest_bootstrap(self.provider, a.spec, run_dir=self.join_dir, now=self.clock.now())
        requested = StatusFields(phase=VMPhase.CREATING)
        await self.api.update_status(a.name, requested)
        try:
            with self._timed("clone", "instant" if a.parent else "full"):
                if a.parent:
                    info = await self.provider.instant_clone(a.parent, a.spec, guest)
                else:
                    info = await self.provider.full_clone(a.spec, guest)
        except CowpodError as err:
            await self.api.update_status(a.name, StatusFields(phase=VMPhase.FAILED, message=str(err)))
            await self.api.event(a.name, "CreateFailed", str(err), warning=True)
            return
        d = DesiredVM(name=a.name, spec=a.spec, status=requested)
        await self.api.update_status(a.name, target_status(d, info, False, self.clock.now()))
        kind = "instant clone of " + a.parent if a.parent else "full clone"
        note = f" ({info.message})" if info.message else ""
        await self.api.event(a.name, "Created", f"{kind}: {info.provider_id} ip {info.ip}{note}")
        # A warm parent is kept to be cloned: quiesce it now, not on the first clone.
        if a.spec.template and isinstance(self.provider, PreparesParents):
            try:
                await self.provider.prepare_parent(a.name)
            except CowpodError as err:
                log.warning("vm-manager: preparing parent %s failed: %s", a.name, err)

    async def _fail(self, name: str, message: str, present: bool) -> None:
        await self.api.update_status(name, StatusFields(phase=VMPhase.FAILED, message=message))
        await self.api.event(name, "VMFailed", message, warning=True)
        await self.api.delete_node(name)
        if present:
            # Clean up its pods and the dead VM; a parent whose children still
            # need it keeps its (stopped) container, its pods are stopped.
            try:
                await self._destroy(name)
            except FailedPrecondition:
                await self.provider.power_off(name)


# ---- the manager ---------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """What one VM manager pass plans from."""

    desired: tuple[DesiredVM, ...]
    actual: tuple[VMInfo, ...]  # the provider's list
    ready_nodes: frozenset[str]
    # VMs whose cached object predates our own last status write: planning them would
    # act on stale status, so they wait for the watch to catch up.
    stale: frozenset[str]
    now: float


def plan_pass(state: Observed, dirty: Dirty[str]) -> dict[str, list[Action]]:
    """Pure: `hypervisor.plan.plan` grouped by VM name, without the stale VMs."""
    out: dict[str, list[Action]] = {}
    for a in plan(list(state.desired), list(state.actual), state.ready_nodes, state.now):
        if a.name in dirty and a.name not in state.stale:
            out.setdefault(a.name, []).append(a)
    return out


class VMManager:
    """Watches VMs and nodes, plans, executes, on the reconcile driver (`cowpod.reconcile`):
    one key per VM name, so one VM's actions never run twice at once and a slow clone
    never blocks another VM's destroy; a VM whose action failed backs off
    (`FAILURE_BACKOFF`); every `resync_seconds` the provider is listed again (catches VMs
    that died on their own). `run()` until cancelled."""

    def __init__(
        self,
        client: Client,
        provider_name: str,
        data_dir: pathlib.Path,
        clock: Clock | None = None,
        *,
        settings: Any = None,
        provider: Provider | None = None,
        cluster_id: str = "",
        controller: ControllerAddress | None = None,
        resync_seconds: float = 2.0,
        registry: CollectorRegistry | None = None,
        watches: Watches | None = None,
    ) -> None:
        """`settings` are the provider's own (its plugin's `parse_settings`);
        None = its defaults. `provider` short-cuts the registry (tests, benches).
        `watches`: where the informers read (the controller's hubs in process);
        None = over `client`."""
        self.client = client
        self.provider_name = provider_name
        self.settings = settings
        self.data_dir = data_dir
        self.clock: Clock = clock or RealClock()
        self.cluster_id = cluster_id or os.environ.get("COWPOD_CLUSTER_ID", "default")
        self.controller = controller or ControllerAddress()
        self.resync_seconds = resync_seconds
        # The provider's background work runs here, stopped with the manager.
        self.tasks = TaskSupervisor(f"{provider_name}-provider")
        self._provider = provider
        w = watches or Watches.over(client)
        self.vms: Informer[vm_pb2.VM] = Informer(
            w.vms, handler=self._on_change, clock=self.clock, name="vm-manager/vms"
        )
        self.nodes: Informer[node_pb2.Node] = Informer(
            w.nodes, handler=self._on_change, clock=self.clock, name="vm-manager/nodes"
        )
        # Clone/destroy durations and VMs by phase, on the host process's registry when given.
        self.metrics = VMMetrics(registry)
        self.metrics.track_vms(self._phases)
        self.api = GrpcVMApi(self.client, self.clock, self.vms.cache)
        self._executor: Executor | None = None
        # After an action the VM is planned again from fresh state (requeue_after_success).
        self.driver: Driver[str, Observed, Action] = Driver(
            self, self.clock, name=COMPONENT, sources=(self.vms, self.nodes), resync_seconds=resync_seconds,
            backoff=FAILURE_BACKOFF, requeue_after_success=True, registry=registry)

    @property
    def passes(self) -> int:
        """Completed reconcile passes (tests wait on it)."""
        return self.driver.passes

    async def _on_change(self, _type: int, _obj: object) -> None:
        # The plan is over every VM and the provider's list together: any change replans all.
        self.driver.mark_all()

    @property
    def context(self) -> ProviderContext:
        return ProviderContext(data_dir=self.data_dir, cluster_id=self.cluster_id, clock=self.clock,
                               tasks=self.tasks, controller=self.controller)

    @property
    def provider(self) -> Provider:
        if self._provider is None:
            plugin = registry.plugin(self.provider_name)
            settings = self.settings if self.settings is not None else plugin.parse_settings({}, "provider")
            self._provider = plugin.create(settings, self.context)
        return self._provider

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = Executor(self.provider, self.api, self.clock, self.metrics, self._clone_kind,
                                      join_dir=self.data_dir / "run")
        return self._executor

    def _phases(self) -> list[str]:
        return [str(v.status.phase) for v in list(self.vms.cache.values()) if self._mine(v)]

    def _clone_kind(self, name: str) -> str:
        for vm in list(self.vms.cache.values()):
            if vm.metadata.name == name:
                return str(vm.status.clone_kind)
        return ""

    def _mine(self, vm: vm_pb2.VM) -> bool:
        return vm.spec.provider in ("", self.provider_name)

    def _fresh(self, vm: vm_pb2.VM) -> bool:
        return vm.metadata.resource_version >= self.api.written.get(vm.metadata.name, 0)

    # -- the driver's side (cowpod.reconcile.Reconciler)

    def ready(self) -> bool:
        return True

    async def observe(self) -> Observed:
        """List the provider, then take the caches (after the list: a VM created while
        listing shows in the cache, and the driver drops the plan of any VM whose action
        ended meanwhile, so a list that predates a clone is not read as "it vanished")."""
        actual = await self.provider.list()
        vms = [v for v in self.vms.cache.values() if self._mine(v)]
        return Observed(
            desired=tuple(desired_of(v) for v in vms),
            actual=tuple(actual),
            ready_nodes=frozenset(n.metadata.name for n in self.nodes.cache.values() if _node_ready(n)),
            stale=frozenset(v.metadata.name for v in vms if not self._fresh(v)),
            now=self.clock.now(),
        )

    def plan(self, state: Observed, dirty: Dirty[str]) -> dict[str, list[Action]]:
        return plan_pass(state, dirty)

    async def execute(self, key: str, actions: Sequence[Action]) -> None:
        for a in actions:
            await self.executor.execute(a)

    # -- running

    async def reconcile_once(self) -> list[Action]:
        """One pass over every VM now, its actions executed; returns them (tests)."""
        self.driver.mark_all()
        done = await self.driver.sync()
        return [a for actions in done.values() for a in actions]

    async def run(self) -> None:
        # Leftovers of a previous run whose parent is gone (warm shells): the
        # orphan rule below only sees VMs, and idle shells are not VMs yet.
        if isinstance(self.provider, CollectsGarbage):
            try:
                await self.provider.collect_garbage()
            except Exception:
                log.exception("vm-manager: collecting provider garbage failed")
        try:
            await self.driver.run()
        finally:
            await self.tasks.close()
            await self.provider.close()


async def check_provider(
    name: str, settings: Any, data_dir: pathlib.Path, clock: Clock, controller: ControllerAddress,
    cluster_id: str = "",
) -> None:
    """Run the provider's preflight; raises FailedPrecondition (or Invalid) with one line."""
    plugin = registry.plugin(name)
    if settings is None:
        settings = plugin.parse_settings({}, "provider")
    tasks = TaskSupervisor(f"{name}-check")
    cluster = cluster_id or os.environ.get("COWPOD_CLUSTER_ID", "default")
    ctx = ProviderContext(data_dir=data_dir, cluster_id=cluster, clock=clock, tasks=tasks,
                          controller=controller)
    try:
        await plugin.check(settings, ctx)
    finally:
        await tasks.close()
