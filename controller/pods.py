"""Pods: create with defaults, update rules, graceful delete, and binding.

Binding is the scheduler's plan for a pod committed as one conditional etcd
write: the pod must still be the same object (uid), unbound, not being deleted
(and at `pod_resource_version` when given), and the node must exist and not be
going away. `bind_many` serves Bind and BindBatch alike and is built for
thousands of binds per second:

    bindings ──► one batched read of every pod and distinct node (128 keys per round trip)
             ──► per binding: check, build the bound pod
             ──► commit in groups: one txn per group, all compares ANDed
                     └─ a group whose txn fails (some binding went stale) is retried
                        binding by binding, so one stale plan never sinks the others
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from controller import validation
from controller.kinds import NODES, PODS
from controller.resource import Resource, get_time, not_found, set_time
from controller.store import Compare, KeyValue, Put, Store, decode, encode
from cowpod.clock import Clock
from cowpod.errors import Conflict, CowpodError, Invalid, NotFound
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2

log = logging.getLogger(__name__)

DEFAULT_GRACE_SECONDS = 30
# Each binding costs one pod compare and (at most) one node compare; etcd allows 128.
BIND_GROUP = 60


@dataclass
class BindOutcome:
    pod: pod_pb2.Pod | None
    error: CowpodError | None


def qos_class(spec: pod_pb2.PodSpec) -> str:
    """Kubernetes QoS: Guaranteed (limits == requests for cpu and memory everywhere),
    BestEffort (nothing set), Burstable otherwise."""
    containers = [*spec.init_containers, *spec.containers]
    any_set = False
    guaranteed = True
    for c in containers:
        r, lim = c.resources.requests, c.resources.limits
        if r.cpu_millis or r.memory_bytes or lim.cpu_millis or lim.memory_bytes:
            any_set = True
        for f in ("cpu_millis", "memory_bytes"):
            lv = getattr(lim, f)
            rv = getattr(r, f) or lv
            if not lv or rv != lv:
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def set_condition(conds: object, type_: str, status: str, reason: str, message: str, now: float) -> None:
    """Set a condition in a repeated Condition field, touching the transition time only on change."""
    seq = conds  # RepeatedCompositeFieldContainer[Condition]
    for c in seq:  # type: ignore[attr-defined]
        if c.type == type_:
            if c.status != status:
                set_time(c.last_transition_time, now)
            c.status, c.reason, c.message = status, reason, message
            set_time(c.last_probe_time, now)
            return
    c = seq.add()  # type: ignore[attr-defined]
    c.type, c.status, c.reason, c.message = type_, status, reason, message
    set_time(c.last_transition_time, now)
    set_time(c.last_probe_time, now)


# Fields of a pod's spec that an Update may change after creation.
MUTABLE_SPEC = ("spec.containers[*].image", "spec.initContainers[*].image", "spec.activeDeadlineSeconds",
                "spec.tolerations", "spec.terminationGracePeriodSeconds")


class Pods:
    def __init__(self, pods: Resource[pod_pb2.Pod], nodes: Resource[node_pb2.Node], store: Store,
                 clock: Clock, *, bind_concurrency: int = 32) -> None:
        self.res = pods
        self.nodes = nodes
        self.store = store
        self.clock = clock
        self._bind_sem = asyncio.Semaphore(bind_concurrency)

    # -- create / update

    async def create(self, pod: pod_pb2.Pod) -> pod_pb2.Pod:
        pod.ClearField("status")
        spec = pod.spec
        if not spec.restart_policy:
            spec.restart_policy = "Always"
        if not spec.HasField("termination_grace_period_seconds"):
            spec.termination_grace_period_seconds = DEFAULT_GRACE_SECONDS
        pod.status.phase = "Pending"
        pod.status.qos_class = qos_class(spec)
        self.res.prepare_new(pod)
        validation.validate_pod(pod)
        out = await self.res.create(pod)
        log.debug("pod %s/%s created (uid %s)", pod.metadata.namespace, pod.metadata.name, pod.metadata.uid)
        return out

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
                _apply_spec_update(new.spec, req.spec, cur.spec)
                if new.spec != cur.spec:
                    new.metadata.generation = cur.metadata.generation + 1
            validation.validate_pod(new)
            return new

        ns, name = self.res.names(meta.namespace, meta.name)
        return await self.res.update(ns, name, meta.resource_version, mutate)

    async def update_status(self, req: pod_pb2.Pod) -> pod_pb2.Pod:
        validation.validate_pod_status(req)

        def mutate(cur: pod_pb2.Pod) -> pod_pb2.Pod:
            cur.status.CopyFrom(req.status)
            if not cur.status.qos_class:
                cur.status.qos_class = qos_class(cur.spec)
            return cur

        ns, name = self.res.names(req.metadata.namespace, req.metadata.name)
        return await self.res.update(ns, name, req.metadata.resource_version, mutate)

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
        outcomes: list[BindOutcome] = [BindOutcome(None, None) for _ in bindings]
        pod_keys: list[str] = []
        for i, b in enumerate(bindings):
            if not b.pod.name:
                outcomes[i].error = Invalid(f"bindings[{i}].pod.name", "required")
            elif not b.node_name:
                outcomes[i].error = Invalid(f"bindings[{i}].nodeName", "required")
            pod_keys.append(PODS.key(b.pod.namespace or "default", b.pod.name))
        node_names = sorted({b.node_name for b in bindings if b.node_name})
        node_keys = [NODES.key("", n) for n in node_names]
        kvs = await self.store.get_many([*pod_keys, *node_keys])
        pods_kv = kvs[: len(pod_keys)]
        nodes_kv: dict[str, KeyValue | None] = dict(zip(node_names, kvs[len(pod_keys):], strict=True))

        now = self.clock.now()
        # (index, pod key, read pod revision, node key, node create revision, new pod)
        plans: list[tuple[int, str, int, str, int, pod_pb2.Pod]] = []
        claimed: set[str] = set()
        for i, b in enumerate(bindings):
            if outcomes[i].error is not None:
                continue
            err, plan = self._plan_bind(b, pod_keys[i], pods_kv[i], nodes_kv.get(b.node_name), now)
            if err is None and pod_keys[i] in claimed:
                err = Conflict(f'pods "{_qual(b)}" appears twice in one batch; only the first binding counts')
            if err is not None:
                outcomes[i].error = err
                continue
            assert plan is not None
            claimed.add(pod_keys[i])
            plans.append((i, *plan))

        groups = [plans[g: g + BIND_GROUP] for g in range(0, len(plans), BIND_GROUP)]
        await asyncio.gather(*(self._commit_group(grp, bindings, outcomes) for grp in groups))
        if log.isEnabledFor(logging.DEBUG):
            ok = sum(1 for o in outcomes if o.error is None)
            log.debug("bound %d of %d pods; refused: %s", ok, len(bindings),
                      "; ".join(str(o.error) for o in outcomes if o.error is not None)[:500] or "none")
        return outcomes

    def _plan_bind(self, b: pod_pb2.Binding, pod_key: str, pkv: KeyValue | None, nkv: KeyValue | None,
                   now: float) -> tuple[CowpodError | None, tuple[str, int, str, int, pod_pb2.Pod] | None]:
        q = _qual(b)
        if pkv is None:
            return NotFound(f'pods "{q}" not found'), None
        pod = decode(pod_pb2.Pod, pkv.value, pkv.mod_revision)
        if b.pod_uid and pod.metadata.uid != b.pod_uid:
            return Conflict(f'pods "{q}": uid {b.pod_uid} is gone (the pod was recreated as '
                            f"{pod.metadata.uid})"), None
        if b.pod_resource_version and pkv.mod_revision != b.pod_resource_version:
            return Conflict(f'pods "{q}" changed since the scheduler read it (resource_version '
                            f"{b.pod_resource_version} is stale, now {pkv.mod_revision})"), None
        if pod.spec.node_name:
            return Conflict(f'pods "{q}" is already bound to node "{pod.spec.node_name}"'), None
        if pod.metadata.HasField("deletion_timestamp"):
            return Conflict(f'pods "{q}" is being deleted'), None
        if nkv is None:
            return Conflict(f'cannot bind pods "{q}": node "{b.node_name}" not found'), None
        node = node_pb2.Node.FromString(nkv.value)
        if node.metadata.HasField("deletion_timestamp"):
            return Conflict(f'cannot bind pods "{q}": node "{b.node_name}" is being deleted'), None
        pod.spec.node_name = b.node_name
        set_condition(pod.status.conditions, "PodScheduled", "True", "", "", now)
        return None, (pod_key, pkv.mod_revision, NODES.key("", b.node_name), nkv.create_revision, pod)

    async def _commit_group(self, grp: list[tuple[int, str, int, str, int, pod_pb2.Pod]],
                            bindings: Sequence[pod_pb2.Binding], outcomes: list[BindOutcome]) -> None:
        async with self._bind_sem:
            compares: list[Compare] = []
            seen_nodes: set[str] = set()
            puts: list[Put] = []
            for _, pkey, prev, nkey, ncreate, pod in grp:
                compares.append(Compare.at(pkey, prev))
                if nkey not in seen_nodes:
                    seen_nodes.add(nkey)
                    compares.append(Compare.created_at(nkey, ncreate))
                puts.append(Put(pkey, encode(pod)))
            res = await self.store.txn(compares, puts)
        if res.succeeded:
            for i, *_, pod in grp:
                pod.metadata.resource_version = res.revision
                outcomes[i].pod = pod
            return
        if len(grp) == 1:
            i, pkey, prev, nkey, ncreate, pod = grp[0]
            outcomes[i].error = await self._why_stale(bindings[i], pkey, nkey, ncreate)
            return
        # Somebody in the group went stale: commit one by one so the rest still land.
        await asyncio.gather(*(self._commit_group([p], bindings, outcomes) for p in grp))

    async def _why_stale(self, b: pod_pb2.Binding, pkey: str, nkey: str, ncreate: int) -> CowpodError:
        pkv, nkv = await self.store.get_many([pkey, nkey])
        q = _qual(b)
        if pkv is None:
            return NotFound(f'pods "{q}" not found')
        if nkv is None or nkv.create_revision != ncreate:
            return Conflict(f'cannot bind pods "{q}": node "{b.node_name}" not found')
        pod = pod_pb2.Pod.FromString(pkv.value)
        if pod.spec.node_name:
            return Conflict(f'pods "{q}" is already bound to node "{pod.spec.node_name}"')
        return Conflict(f'pods "{q}" changed while binding; re-read and retry')


def _qual(b: pod_pb2.Binding) -> str:
    return f"{b.pod.namespace or 'default'}/{b.pod.name}"


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


def bind_result(b: pod_pb2.Binding, out: BindOutcome) -> pod_pb2.BindResult:
    if out.error is None and out.pod is not None:
        return pod_pb2.BindResult(pod=b.pod, ok=True, code=0,
                                  resource_version=out.pod.metadata.resource_version)
    err = out.error
    code = err.code if err is not None else grpc.StatusCode.INTERNAL
    return pod_pb2.BindResult(pod=b.pod, ok=False, code=int(code.value[0]), message=str(err))


__all__ = ["Pods", "bind_result", "not_found", "qos_class", "set_condition"]
