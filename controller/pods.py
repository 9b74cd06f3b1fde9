"""Pods: create with defaults, update rules, graceful delete, and binding.

Binding is the scheduler's plan for a pod committed as one conditional etcd
write that also checks the node's capacity: `controller.binder` (Bind and
BindBatch alike, built for thousands of binds per second).

Every write that adds a pod to a node puts the node's binding sequence key
(`controller.node_usage`) in the same transaction, which is what lets a bind's
capacity check be correct across schedulers and controller processes: a bind,
a create with `spec.nodeName`, and a status write that brings a terminal pod
back to life.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import grpc
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from controller import validation
from controller.binder import Binder, BindOutcome, set_condition
from controller.capacity import counts
from controller.kinds import NODES, PODS
from controller.node_usage import NodeUsage, bindseq_key, seq_value
from controller.resource import Resource, get_time, not_found, set_time
from controller.specmemo import SpecMemo
from controller.store import Compare, Put, Store, encode
from controller.watch import WatchHub
from cowpod.api import podfields
from cowpod.clock import Clock
from cowpod.errors import AlreadyExists, Conflict, CowpodError, Invalid
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2

log = logging.getLogger(__name__)

DEFAULT_GRACE_SECONDS = 30


def qos_class(spec: pod_pb2.PodSpec) -> str:
    """Kubernetes QoS: Guaranteed (limits == requests for cpu and memory everywhere),
    BestEffort (nothing set), Burstable otherwise."""
    any_set = False
    guaranteed = True
    for containers in (spec.init_containers, spec.containers):
        for c in containers:
            res = c.resources
            r, lim = res.requests, res.limits
            rc, rm, lc, lm = r.cpu_millis, r.memory_bytes, lim.cpu_millis, lim.memory_bytes
            if rc or rm or lc or lm:
                any_set = True
            # A request left out defaults to the limit.
            if not lc or (rc or lc) != lc or not lm or (rm or lm) != lm:
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


# `qos_class` of the specs created lately, by their bytes (controller.specmemo).
_QOS_CLASSES: SpecMemo[str] = SpecMemo()

# Fields of a pod's spec that an Update may change after creation.
MUTABLE_SPEC = ("spec.containers[*].image", "spec.initContainers[*].image", "spec.activeDeadlineSeconds",
                "spec.tolerations", "spec.terminationGracePeriodSeconds")


class _Revived(Exception):
    """A status write would bring a bound terminal pod back to life (see `update_status`)."""


class Pods:
    def __init__(self, pods: Resource[pod_pb2.Pod], nodes: Resource[node_pb2.Node], store: Store,
                 clock: Clock, *, usage: NodeUsage, bind_timeout: float = 5.0,
                 bind_concurrency: int = 32) -> None:
        self.res = pods
        self.nodes = nodes
        self.store = store
        self.clock = clock
        hub = pods.hub
        if hub is None:
            raise ValueError("binding needs the pods watch hub (its NodeUsage observer)")
        self.hub: WatchHub[pod_pb2.Pod] = hub
        self.binder = Binder(store, usage, hub, clock, timeout=bind_timeout, txn_concurrency=bind_concurrency)
        # Fills a new pod's spec.priority from its PriorityClass (controller/priorityclasses.py);
        # None: priorities are taken as written.
        self.priority: Callable[[pod_pb2.PodSpec], Awaitable[None]] | None = None

    # -- create / update

    async def _prepare(self, pod: pod_pb2.Pod) -> None:
        """A new pod's defaults, priority, identity and validation, in place; raises what is wrong."""
        pod.ClearField("status")
        spec = pod.spec
        if not spec.restart_policy:
            spec.restart_policy = "Always"
        if not spec.HasField("termination_grace_period_seconds"):
            spec.termination_grace_period_seconds = DEFAULT_GRACE_SECONDS
        podfields.resolve_named_ports(spec)
        if self.priority is not None:
            await self.priority(spec)
        self.res.prepare_new(pod)  # checks the metadata
        # The spec is final: its bytes find its QoS class (which reads only the resources, so
        # the defaults above do not change it) and validation's findings, both remembered.
        key = spec.SerializeToString(deterministic=True)
        qos = _QOS_CLASSES.get(key)
        if qos is None:
            qos = qos_class(spec)
            _QOS_CLASSES.put(key, qos)
        status = pod.status
        status.phase = "Pending"
        status.qos_class = qos
        validation.validate_pod(pod, metadata_checked=True, spec_key=key)

    async def create(self, pod: pod_pb2.Pod) -> pod_pb2.Pod:
        await self._prepare(pod)
        if pod.spec.node_name:
            out = await self._create_bound(pod)
        else:
            out = await self.res.create(pod)
        log.debug("pod %s/%s created (uid %s)", pod.metadata.namespace, pod.metadata.name, pod.metadata.uid)
        return out

    async def create_many(self, pods: Sequence[pod_pb2.Pod]) -> list[pod_pb2.Pod | CowpodError]:
        """Create each pod as `create` does; each gets the created pod or its own error.

        The pods are prepared one after another (each `_prepare` is plain computation; the
        priority lookup awaits only when its snapshot is stale) and their etcd writes issued
        together (`Store.create_many`: one group commit, no task per pod). A pod placed with
        `spec.nodeName` writes its node's binding sequence too, and goes on its own."""
        outs: list[pod_pb2.Pod | CowpodError | None] = [None] * len(pods)
        plain: list[int] = []
        bound: list[int] = []
        for i, pod in enumerate(pods):
            try:
                await self._prepare(pod)
            except CowpodError as err:
                outs[i] = err
                continue
            (bound if pod.spec.node_name else plain).append(i)

        async def place(i: int) -> None:
            try:
                outs[i] = await self._create_bound(pods[i])
            except CowpodError as err:
                outs[i] = err

        async def write() -> None:
            for i, out in zip(plain, await self.res.create_many([pods[i] for i in plain]), strict=True):
                outs[i] = out

        if bound:
            await asyncio.gather(write(), *(place(i) for i in bound))
        elif plain:
            await write()
        if log.isEnabledFor(logging.DEBUG):
            for out in outs:
                if isinstance(out, pod_pb2.Pod):
                    meta = out.metadata
                    log.debug("pod %s/%s created (uid %s)", meta.namespace, meta.name, meta.uid)
        return [out for out in outs if out is not None]

    async def _create_bound(self, pod: pod_pb2.Pod) -> pod_pb2.Pod:
        """A pod created with `spec.nodeName` (placed by its author, not the scheduler; as in
        Kubernetes it is not capacity-checked here, the node's agent admits or fails it) still
        bumps the node's binding sequence, so binds racing with it re-check the node."""
        key = self.res.key_of(pod)
        seq = Put(bindseq_key(pod.spec.node_name), seq_value(key))
        res = await self.store.txn([Compare.absent(key)], [Put(key, encode(pod)), seq])
        if not res.succeeded:
            raise AlreadyExists(f'pods "{pod.metadata.namespace}/{pod.metadata.name}" already exists')
        pod.metadata.resource_version = res.revision
        return pod

    async def update(self, req: pod_pb2.Pod) -> pod_pb2.Pod:
        meta = req.metadata

        def mutate(cur: pod_pb2.Pod) -> pod_pb2.Pod:
            new = pod_pb2.Pod()
            new.CopyFrom(cur)
            new.metadata.labels.clear()
            new.metadata.labels.update(meta.labels)
            new.metadata.annotations.clear()
            new.metadata.annotations.update(meta.annotations)
            del new.metadata.owner_references[:]
            new.metadata.owner_references.extend(meta.owner_references)
            if req.spec.containers:  # an empty spec means "labels/annotations only"
                podfields.resolve_named_ports(req.spec)  # as at create: `port: http` is not a change
                _apply_spec_update(new.spec, req.spec, cur.spec)
                if new.spec != cur.spec:
                    new.metadata.generation = cur.metadata.generation + 1
            validation.validate_pod(new)
            return new

        ns, name = self.res.names(meta.namespace, meta.name)
        return await self.res.update(ns, name, meta.resource_version, mutate)

    async def update_status(self, req: pod_pb2.Pod) -> pod_pb2.Pod:
        validation.validate_pod_status(req)

        def apply(cur: pod_pb2.Pod) -> pod_pb2.Pod:
            cur.status.CopyFrom(req.status)
            if not cur.status.qos_class:
                cur.status.qos_class = qos_class(cur.spec)
            return cur

        def mutate(cur: pod_pb2.Pod) -> pod_pb2.Pod:
            if cur.spec.node_name and not counts(cur) and counts(apply(pod_pb2.Pod(spec=cur.spec,
                                                                                status=cur.status))):
                raise _Revived
            return apply(cur)

        ns, name = self.res.names(req.metadata.namespace, req.metadata.name)
        try:
            return await self.res.update(ns, name, req.metadata.resource_version, mutate)
        except _Revived:
            return await self._revive(ns, name, req.metadata.resource_version, apply)

    async def _revive(self, ns: str, name: str, expected: int, apply: Callable[[pod_pb2.Pod], pod_pb2.Pod],
                      ) -> pod_pb2.Pod:
        """The rare status write that makes a Succeeded/Failed bound pod count on its node
        again: it bumps the node's binding sequence in the same transaction."""
        key = PODS.key(ns, name)
        for _ in range(16):
            cur = await self.store.get(key, pod_pb2.Pod)
            rv = cur.metadata.resource_version
            if expected and rv != expected:
                raise Conflict(f'pods "{ns}/{name}" was modified: resource_version {expected} is stale '
                               f"(now {rv}); re-read and retry")
            new = apply(cur)
            seq = Put(bindseq_key(new.spec.node_name), seq_value(key))
            res = await self.store.txn([Compare.at(key, rv)], [Put(key, encode(new)), seq])
            if res.succeeded:
                new.metadata.resource_version = res.revision
                return new
            if expected:
                raise Conflict(f'pods "{ns}/{name}" was modified during the status write; re-read and retry')
        raise Conflict(f'pods "{ns}/{name}" kept changing; retry')

    # -- delete

    async def delete(self, opts: meta_pb2.DeleteOptions) -> pod_pb2.Pod:
        """Unbound pods, pods on vanished nodes and grace 0 go at once; a bound pod gets a
        deletion_timestamp and waits for its agent to stop it and finalize with grace 0."""
        ns, name = self.res.names(opts.key.namespace, opts.key.name)
        key = PODS.key(ns, name)
        if opts.HasField("grace_period_seconds") and opts.grace_period_seconds < 0:
            raise Invalid("gracePeriodSeconds", "must be greater than or equal to 0")
        for _ in range(16):
            pod = await self.store.get(key, pod_pb2.Pod)
            rv = pod.metadata.resource_version
            if opts.resource_version and rv != opts.resource_version:
                raise Conflict(f'pods "{ns}/{name}": resource_version {opts.resource_version} is stale '
                               f"(now {rv})")
            if opts.HasField("grace_period_seconds"):
                grace = opts.grace_period_seconds
            elif pod.spec.HasField("termination_grace_period_seconds"):
                grace = pod.spec.termination_grace_period_seconds
            else:
                grace = DEFAULT_GRACE_SECONDS
            node = pod.spec.node_name
            if grace == 0 or not node or await self.store.get_raw(NODES.key("", node)) is None:
                try:
                    gone = await self.store.delete(key, pod_pb2.Pod, expected_revision=rv)
                    log.debug("pod %s/%s deleted (%s)", ns, name,
                              "finalized" if grace == 0 else "unbound" if not node else "node gone")
                    return gone
                except Conflict:
                    if opts.resource_version:
                        raise
                    continue
            now = self.clock.now()
            meta = pod.metadata
            if meta.HasField("deletion_timestamp"):
                # Already terminating: a shorter grace may cut the wait, never a longer one.
                remaining_start = get_time(meta.deletion_timestamp)
                if grace >= meta.deletion_grace_period_seconds:
                    return pod
                meta.deletion_grace_period_seconds = grace
                set_time(meta.deletion_timestamp, remaining_start)
            else:
                set_time(meta.deletion_timestamp, now)
                meta.deletion_grace_period_seconds = grace
            try:
                marked = await self.store.update(key, pod, expected_revision=rv)
            except Conflict:
                if opts.resource_version:
                    raise
                continue
            log.debug("pod %s/%s terminating on node %s (grace %ds)", ns, name, node, grace)
            return marked
        raise Conflict(f'pods "{ns}/{name}" kept changing during delete; retry')

    # -- bind

    async def bind(self, b: pod_pb2.Binding) -> pod_pb2.Pod:
        out = (await self.bind_many([b]))[0]
        if out.error is not None:
            raise out.error
        assert out.pod is not None
        return out.pod

    async def bind_many(self, bindings: Sequence[pod_pb2.Binding]) -> list[BindOutcome]:
        return await self.binder.bind_many(bindings)


def _apply_spec_update(new: pod_pb2.PodSpec, req: pod_pb2.PodSpec, cur: pod_pb2.PodSpec) -> None:
    """Copy the mutable fields of `req` into `new` (a copy of `cur`), refusing any other change."""
    candidate = pod_pb2.PodSpec()
    candidate.CopyFrom(req)
    if not candidate.node_name:
        candidate.node_name = cur.node_name
    elif candidate.node_name != cur.node_name:
        raise Invalid("spec.nodeName", "may not be changed by Update; use Bind")
    if not candidate.restart_policy:
        candidate.restart_policy = cur.restart_policy
    # Filled at create from the PriorityClass (controller/priorityclasses.py): unset keeps them.
    for f in ("priority", "preemption_policy", "priority_class_name"):
        if not getattr(candidate, f):
            setattr(candidate, f, getattr(cur, f))
    if not candidate.HasField("termination_grace_period_seconds") and cur.HasField(
            "termination_grace_period_seconds"):
        candidate.termination_grace_period_seconds = cur.termination_grace_period_seconds
    # Blank out the mutable fields on both sides; what remains must be equal.
    a, b = pod_pb2.PodSpec(), pod_pb2.PodSpec()
    a.CopyFrom(candidate)
    b.CopyFrom(cur)
    for s in (a, b):
        for c in [*s.containers, *s.init_containers]:
            c.image = ""
        s.ClearField("active_deadline_seconds")
        s.ClearField("tolerations")
        s.ClearField("termination_grace_period_seconds")
    if a != b:
        raise Invalid("spec", "Forbidden: pod updates may not change fields other than "
                              + ", ".join(MUTABLE_SPEC))
    new.CopyFrom(candidate)


def add_create_result(results: RepeatedCompositeFieldContainer[pod_pb2.CreatePodResult], req: pod_pb2.Pod,
                      out: pod_pb2.Pod | CowpodError) -> None:
    """Append `req`'s CreatePodResult to `results` (a CreatePodsResponse's), filled in place
    (building one and copying it in costs twice as much)."""
    meta = req.metadata  # defaulted in place by create (namespace, generated name)
    if isinstance(out, CowpodError):
        code = out.code if out.code != grpc.StatusCode.UNKNOWN else grpc.StatusCode.INTERNAL
        r = results.add(ok=False, code=int(code.value[0]), message=str(out))
    else:
        out_meta = out.metadata
        r = results.add(ok=True, uid=out_meta.uid, resource_version=out_meta.resource_version)
    key = r.pod
    key.namespace = meta.namespace
    key.name = meta.name


def add_bind_result(results: RepeatedCompositeFieldContainer[pod_pb2.BindResult], b: pod_pb2.Binding,
                    out: BindOutcome) -> bool:
    """Append `b`'s BindResult to `results` (a BindBatchResponse's), filled in place as
    `add_create_result` does; returns whether it bound."""
    if out.error is None and out.pod is not None:
        r = results.add(ok=True, resource_version=out.pod.metadata.resource_version)
        r.pod.CopyFrom(b.pod)
        return True
    err = out.error
    code = err.code if err is not None else grpc.StatusCode.INTERNAL
    r = results.add(ok=False, code=int(code.value[0]), message=str(err))
    r.pod.CopyFrom(b.pod)
    return False


__all__ = ["BindOutcome", "Pods", "add_bind_result", "add_create_result", "not_found", "qos_class",
           "set_condition"]
