"""Turns the planner's actions into API calls, in order, and says what came of them.

The executor is the only part that talks to the controller. It reports back
the VMs it asked for (so the next pass counts them as in flight before the VM
informer has seen them) and the classes whose clones failed (for the
cooldown); the reconciler folds both into its state.

A node's scale-down is three steps, each guarded: Cordon (compare-and-swap on
the node), then a fresh look at the pods bound to it; if a workload pod slipped
on meanwhile the node is uncordoned and left alone. Drain deletes what is
left (per-node system pods), and ScaleDown destroys the VM.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from controller.autoscaler.actions import (
    Action,
    Cordon,
    CreateParent,
    Drain,
    Event,
    PauseParent,
    ScaleDown,
    ScaleUp,
    TaintParent,
)
from controller.autoscaler.fit import class_labels
from controller.autoscaler.observe import pod_view
from controller.autoscaler.plan import fmt_duration
from cowpod.api.ids import NodeName
from cowpod.api.labels import (
    AUTOSCALER_MANAGED_LABEL,
    PARENT_TAINT_EFFECT,
    PARENT_TAINT_KEY,
    PARENT_TAINT_VALUE,
)
from cowpod.api.times import to_timestamp
from cowpod.clock import Clock
from cowpod.clusterconfig import ClusterConfig, VMClass
from cowpod.errors import rpc_code, rpc_details
from cowpod.v1 import event_pb2, meta_pb2, node_pb2, vm_pb2

log = logging.getLogger(__name__)

COMPONENT = "cowpod-autoscaler"
# The same event about the same object is sent again only after this long
# (the controller folds repeats into a count; this keeps the RPCs down).
EVENT_REPEAT_S = 120.0
# Pods named per scale-up event fan-out.
MAX_POD_EVENTS = 50
CALL_TIMEOUT_S = 15.0
# Pauses between Clone attempts while the parent is momentarily Paused.
CLONE_RETRY_DELAYS_S = (0.05, 0.1, 0.2, 0.3, 0.4)
# The multiplication sign in "cloned 3 x small from small-parent for 7 pods".
TIMES = "\u00d7"


class Api(Protocol):
    """The slice of `cowpod.client.Client` the executor uses (stubs are untyped)."""

    vms: Any
    nodes: Any
    pods: Any
    events: Any
    leases: Any


def random_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@dataclass
class Outcome:
    # VMs the controller accepted in this pass (not yet seen by the informer).
    created: list[vm_pb2.VM] = field(default_factory=list)
    # One entry per failed scale-up attempt, by class.
    failed_classes: list[str] = field(default_factory=list)
    # Nodes whose scale-down stopped early (a pod arrived, an API call failed).
    aborted_nodes: set[NodeName] = field(default_factory=set)


class Executor:
    def __init__(
        self,
        api: Api,
        config: ClusterConfig,
        clock: Clock,
        *,
        names: Callable[[str], str] = random_name,
    ) -> None:
        self.api = api
        self.config = config
        self.clock = clock
        self.names = names
        self._sent: dict[tuple[str, str, str, str, str], float] = {}

    async def execute(self, actions: Sequence[Action]) -> Outcome:
        out = Outcome()
        for a in actions:
            if isinstance(a, ScaleUp):
                await self._scale_up(a, out)
            elif isinstance(a, CreateParent):
                await self._create_parent(a, out)
            elif isinstance(a, TaintParent):
                await self._taint_parent(a.node)
            elif isinstance(a, PauseParent):
                await self._pause_parent(a)
            elif isinstance(a, Cordon):
                if not await self._cordon(a.node):
                    out.aborted_nodes.add(a.node)
            elif isinstance(a, Drain):
                if a.node not in out.aborted_nodes and not await self._drain(a.node):
                    out.aborted_nodes.add(a.node)
            elif isinstance(a, ScaleDown):
                await self._scale_down(a, out)
            elif isinstance(a, Event):
                await self.event(a)
        return out

    # ------------------------------------------------------------- scale up

    def _vm(self, name: str, c: VMClass, *, template: bool) -> vm_pb2.VM:
        vm = vm_pb2.VM(api_version="v1", kind="VM")
        vm.metadata.name = name
        vm.metadata.labels[AUTOSCALER_MANAGED_LABEL] = "true"
        vm.spec.class_name = c.name
        vm.spec.cpu_millis = c.cpu_millis
        vm.spec.memory_bytes = c.memory_bytes
        vm.spec.image = c.image
        vm.spec.provider = self.config.provider
        vm.spec.node_labels.update(class_labels(c))
        vm.spec.template = template
        return vm

    async def _create(self, vm: vm_pb2.VM) -> vm_pb2.VM:
        made: vm_pb2.VM = await self.api.vms.Create(vm, timeout=CALL_TIMEOUT_S)
        return made

    async def _full_clones(self, c: VMClass, count: int) -> tuple[list[vm_pb2.VM], list[str]]:
        results = await asyncio.gather(
            *(self._create(self._vm(self.names(c.name), c, template=False)) for _ in range(count)),
            return_exceptions=True,
        )
        made = [r for r in results if isinstance(r, vm_pb2.VM)]
        errors = [r for r in results if isinstance(r, BaseException)]
        for e in errors:
            if not isinstance(e, grpc.RpcError):
                raise e
        return made, [rpc_details(e) for e in errors if isinstance(e, grpc.RpcError)]

    async def _scale_up(self, a: ScaleUp, out: Outcome) -> None:
        c = self.config.vm_class(a.vm_class)
        if c is None:
            return
        made: list[vm_pb2.VM] = []
        errors: list[str] = []
        how = "by full clone"
        if a.parent is not None:
            req = vm_pb2.CloneRequest(
                parent=a.parent,
                count=a.count,
                names=[self.names(c.name) for _ in range(a.count)],
                node_labels=class_labels(c),
            )
            try:
                resp = await self._clone(req)
                made = list(resp.items)
                how = f"from {a.parent}"
            except grpc.RpcError as err:
                if rpc_code(err) != grpc.StatusCode.FAILED_PRECONDITION:
                    errors.append(rpc_details(err))
                else:
                    # The parent is not clonable after all: don't make the pods
                    # wait for another pass, boot them instead.
                    log.info("autoscaler: instant clone from %s refused (%s); full clones instead",
                             a.parent, rpc_details(err))
                    made, errors = await self._full_clones(c, a.count)
        else:
            made, errors = await self._full_clones(c, a.count)
        out.created.extend(made)
        if errors:
            out.failed_classes.append(c.name)
            msg = f"could not make {a.count - len(made)} of {a.count} {TIMES} {c.name}: {errors[0]}"
            log.warning("autoscaler: %s", msg)
            for ref in a.for_pods[:MAX_POD_EVENTS]:
                await self.event(Event("Pod", ref.namespace, ref.name, "FailedScaleUp", msg, "Warning"))
        if not made:
            return
        verb = "cloned" if how.startswith("from") else "created"
        names = ", ".join(v.metadata.name for v in made[:5]) + (" …" if len(made) > 5 else "")
        if a.for_pods:
            pods = f"{len(a.for_pods)} pod" + ("s" if len(a.for_pods) != 1 else "")
            msg = f"{verb} {len(made)} {TIMES} {c.name} {how} for {pods} ({names})"
        else:
            msg = f"{verb} {len(made)} {TIMES} {c.name} {how}: {a.reason} {c.min} ({names})"
        log.info("autoscaler: %s", msg)
        if a.for_pods:
            await asyncio.gather(
                *(
                    self.event(Event("Pod", r.namespace, r.name, "TriggeredScaleUp", msg))
                    for r in a.for_pods[:MAX_POD_EVENTS]
                )
            )
        else:
            for v in made:
                await self.event(Event("VM", "", v.metadata.name, "TriggeredScaleUp", msg))

    async def _clone(self, req: vm_pb2.CloneRequest) -> vm_pb2.CloneResponse:
        """Clone, retried for about a second while the controller refuses a Paused
        parent. This controller accepts one (a paused parent is quiesced, and
        still forked); the retry is for an older controller that only forked
        Running parents, where a snapshot's pause is over in well under a
        second and a full clone instead would cost the pods far more."""
        for delay in CLONE_RETRY_DELAYS_S:
            try:
                resp: vm_pb2.CloneResponse = await self.api.vms.Clone(req, timeout=CALL_TIMEOUT_S)
                return resp
            except grpc.RpcError as err:
                if rpc_code(err) != grpc.StatusCode.FAILED_PRECONDITION or "Paused" not in rpc_details(err):
                    raise
            await self.clock.sleep(delay)
        resp = await self.api.vms.Clone(req, timeout=CALL_TIMEOUT_S)
        return resp

    async def _create_parent(self, a: CreateParent, out: Outcome) -> None:
        c = self.config.vm_class(a.vm_class)
        if c is None:
            return
        for name in (f"{c.name}-parent", self.names(f"{c.name}-parent")):
            try:
                made = await self._create(self._vm(name, c, template=True))
            except grpc.RpcError as err:
                if rpc_code(err) == grpc.StatusCode.ALREADY_EXISTS:
                    if await self._live_parent(name, c):
                        # Our cache had not seen it yet (or an earlier create's
                        # answer was lost): the class has its parent.
                        return
                    continue
                out.failed_classes.append(c.name)
                log.warning("autoscaler: could not create warm parent %s: %s", name, rpc_details(err))
                return
            out.created.append(made)
            await self._preregister_parent_node(name, c)
            await self.event(
                Event("VM", "", name, "CreatedParent", f"warm parent for class {c.name} (instant clones)")
            )
            return

    async def _live_parent(self, name: str, c: VMClass) -> bool:
        """Whether `name` is a warm parent of class `c` that is not being destroyed."""
        try:
            vm: vm_pb2.VM = await self.api.vms.Get(meta_pb2.ObjectKey(name=name), timeout=CALL_TIMEOUT_S)
        except grpc.RpcError:
            return False
        return (
            vm.spec.template
            and vm.spec.class_name == c.name
            and not vm.metadata.HasField("deletion_timestamp")
            and vm.status.phase != "Failed"
        )

    async def _preregister_parent_node(self, name: str, c: VMClass) -> None:
        """Register the parent's node, tainted, before its agent boots.

        The agent's own Register then adopts it and keeps its spec, so the
        parent is never schedulable, not even for the moment between its
        agent registering and a TaintParent pass. The node has no Ready
        condition until the agent reports one, so nothing lands on it meanwhile."""
        node = node_pb2.Node(api_version="v1", kind="Node")
        node.metadata.name = name
        node.metadata.labels.update(class_labels(c))
        t = node.spec.taints.add(key=PARENT_TAINT_KEY, value=PARENT_TAINT_VALUE, effect=PARENT_TAINT_EFFECT)
        t.time_added.CopyFrom(to_timestamp(self.clock.now()))
        try:
            await self.api.nodes.Register(node, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as err:
            log.info("autoscaler: pre-registering parent node %s: %s (TaintParent will follow)",
                     name, rpc_details(err))

    async def _pause_parent(self, a: PauseParent) -> None:
        """spec.paused=true; the VM manager freezes it. Clones keep forking from it."""
        req = vm_pb2.SetPausedRequest(key=meta_pb2.ObjectKey(name=a.vm), paused=True)
        try:
            await self.api.vms.SetPaused(req, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as err:
            log.warning("autoscaler: pausing idle warm parent %s: %s", a.vm, rpc_details(err))
            return
        msg = (f"warm parent idle for {fmt_duration(a.idle_for)} (no clone asked of it); paused: "
               "instant clones still fork from it")
        log.info("autoscaler: %s: %s", a.vm, msg)
        await self.event(Event("VM", "", a.vm, "PausedParent", msg))

    # ------------------------------------------------------------ node edits

    async def _edit_node(self, name: str, edit: Callable[[node_pb2.Node], bool]) -> bool:
        """Read, edit, compare-and-swap; retried on conflict. False if it could not be done."""
        for _ in range(5):
            try:
                node: node_pb2.Node = await self.api.nodes.Get(
                    meta_pb2.ObjectKey(name=name), timeout=CALL_TIMEOUT_S
                )
                if not edit(node):
                    return True
                await self.api.nodes.Update(node, timeout=CALL_TIMEOUT_S)
                return True
            except grpc.RpcError as err:
                if rpc_code(err) == grpc.StatusCode.ABORTED:
                    continue
                log.warning("autoscaler: node %s: %s", name, rpc_details(err))
                return False
        return False

    async def _taint_parent(self, node: NodeName) -> None:
        def edit(n: node_pb2.Node) -> bool:
            if any(t.key == PARENT_TAINT_KEY for t in n.spec.taints):
                return False
            t = n.spec.taints.add(key=PARENT_TAINT_KEY, value=PARENT_TAINT_VALUE, effect=PARENT_TAINT_EFFECT)
            t.time_added.CopyFrom(to_timestamp(self.clock.now()))
            return True

        if await self._edit_node(node, edit):
            log.info("autoscaler: tainted warm parent node %s", node)

    async def _set_unschedulable(self, node: NodeName, value: bool) -> bool:
        def edit(n: node_pb2.Node) -> bool:
            if n.spec.unschedulable == value:
                return False
            n.spec.unschedulable = value
            return True

        return await self._edit_node(node, edit)

    async def _pods_on(self, node: NodeName) -> list[Any]:
        resp = await self.api.pods.List(
            meta_pb2.ListOptions(field_selector=f"spec.nodeName={node}"), timeout=CALL_TIMEOUT_S
        )
        return list(resp.items)

    async def _cordon(self, node: NodeName) -> bool:
        if not await self._set_unschedulable(node, True):
            return False
        # The scheduler may have bound a pod between our look and the cordon.
        try:
            pods = await self._pods_on(node)
        except grpc.RpcError as err:
            log.warning("autoscaler: listing pods on %s: %s", node, rpc_details(err))
            await self._set_unschedulable(node, False)
            return False
        now = self.clock.now()
        busy = [p for p in pods if (v := pod_view(p, now)).holds_resources and not v.system]
        if busy:
            log.info("autoscaler: %s got pod %s/%s; not scaling it down", node,
                     busy[0].metadata.namespace, busy[0].metadata.name)
            await self._set_unschedulable(node, False)
            return False
        return True

    async def _drain(self, node: NodeName) -> bool:
        try:
            pods = await self._pods_on(node)
            for p in pods:
                key = meta_pb2.ObjectKey(namespace=p.metadata.namespace, name=p.metadata.name)
                try:
                    await self.api.pods.Delete(meta_pb2.DeleteOptions(key=key), timeout=CALL_TIMEOUT_S)
                except grpc.RpcError as err:
                    if rpc_code(err) != grpc.StatusCode.NOT_FOUND:
                        raise
        except grpc.RpcError as err:
            log.warning("autoscaler: draining %s: %s", node, rpc_details(err))
            return False
        return True

    async def _scale_down(self, a: ScaleDown, out: Outcome) -> None:
        if a.node is not None and a.node in out.aborted_nodes:
            return
        try:
            await self.api.vms.Destroy(
                meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name=a.vm)), timeout=CALL_TIMEOUT_S
            )
            log.info("autoscaler: destroying VM %s: %s", a.vm, a.reason)
        except grpc.RpcError as err:
            if rpc_code(err) != grpc.StatusCode.NOT_FOUND:
                log.warning("autoscaler: destroying VM %s: %s", a.vm, rpc_details(err))

    # ---------------------------------------------------------------- events

    async def event(self, e: Event) -> None:
        key = (e.kind, e.namespace, e.name, e.reason, e.message)
        t = self.clock.monotonic()
        last = self._sent.get(key)
        if last is not None and t - last < EVENT_REPEAT_S:
            return
        self._sent[key] = t
        if len(self._sent) > 10_000:
            self._sent = {k: v for k, v in self._sent.items() if t - v < EVENT_REPEAT_S}
        now = to_timestamp(self.clock.now())
        ev = event_pb2.Event(
            api_version="v1",
            kind="Event",
            metadata=meta_pb2.ObjectMeta(namespace=e.namespace or "default"),
            involved_object=event_pb2.ObjectReference(kind=e.kind, namespace=e.namespace, name=e.name),
            reason=e.reason,
            message=e.message,
            type=e.type,
            source=event_pb2.EventSource(component=COMPONENT),
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            await self.api.events.Create(ev, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as err:
            log.info("autoscaler: event %s on %s %s: %s", e.reason, e.kind, e.name, rpc_details(err))
