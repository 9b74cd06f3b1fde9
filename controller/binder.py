"""Capacity-aware binding: the scheduler's plans committed as conditional etcd writes.

    bindings ──► one batched read of every pod and distinct node (128 keys per round trip)
             ──► per binding: the pod is still that object (uid; version or spec generation
                 when given), unbound and not being deleted; the node exists and is not
                 being deleted                                              (else ABORTED / NOT_FOUND)
             ──► grouped by node. In this process one transaction at a time works on a node;
                 nodes that are free now go at once, busy ones when released
             ──► packs of nodes, each one etcd transaction (etcd takes 128 compares):
                   wait until the pods watch has dispatched the node's last known binding
                   fit each binding against allocatable - bound requests     (else FAILED_PRECONDITION)
                   compares, per node: created at the same revision, binding sequence unchanged;
                             per pod:  mod revision unchanged
                   puts: the bound pods and each node's binding sequence key
                   lost: every key is read back (after it); a pod that changed is checked
                         again on its new value (a status write in between does not abort a
                         binding by generation), moved sequences are learnt, and the rest retried

Why it is globally correct (two schedulers, several controller processes): every
write that adds a pod to node N also puts `registry/bindseq/N`
(`controller.node_usage`), so a transaction whose compare on that key holds was
checked against every pod that ever arrived on N — the pods watch had
dispatched at least up to the key's revision. Removals free capacity without
touching the key, so a watch that lags behind them only refuses too much.

**Reading from the controller's caches.** Once the shared pod informer and the node
informer have synced (`Binder.use_caches`), a binding whose pod and node are both in them
and pass every check there skips the batched read: the check is made on the cached
objects (shared, read only: the bound pod is a copy), and the transaction compares the
pod's mod revision (as always) and, instead of the node's create revision, the node's
*mod* revision. Both compares holding means etcd holds exactly the versions that were
checked (a mod revision names one write of one incarnation of a key), so the commit is
what the batched read would have decided at that moment; a cache that lagged loses the
transaction, and the node's bindings are then judged again from the keys read back
exactly as `_check` judges the batched read (which also gives them one more
attempt: the lost one was the cache's, not a race). Anything the cache cannot settle --
a pod or node missing from it, any refusal (a stale cache may refuse what etcd allows:
the refusal's message must come from etcd), a pod named twice in the batch -- sends the
node's bindings through the batched read as before. So every binding is refused or
committed on etcd's state, and the binding sequence argument above is untouched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from controller.capacity import Resources, allocatable, shared_spec_requests, shortfall
from controller.kinds import NODES, PODS
from controller.node_usage import NodeUsage, bindseq_key, seq_value
from controller.resource import set_time
from controller.store import MAX_TXN_OPS, Compare, KeyValue, Op, Put, Store, decode, encode
from controller.watch import WatchHub
from cowpod.clock import Clock
from cowpod.errors import Conflict, CowpodError, FailedPrecondition, Invalid, NotFound
from cowpod.informer import ObjectCache
from cowpod.v1 import node_pb2, pod_pb2

log = logging.getLogger(__name__)

# A pack is retried this often when other binders keep moving its nodes' sequences.
ATTEMPTS = 8

@dataclass
class BindOutcome:
    pod: pod_pb2.Pod | None
    error: CowpodError | None


@dataclass(slots=True)
class _Item:
    index: int  # in the request
    qual: str  # namespace/name
    pod_key: str
    pod_rev: int  # mod revision the checks were made on
    pod: pod_pb2.Pod  # the bound pod
    data: bytes  # ... encoded
    want: Resources
    binding: pod_pb2.Binding


def _bound(index: int, qual: str, key: str, rev: int, pod: pod_pb2.Pod, b: pod_pb2.Binding,
           now: float) -> _Item:
    """The pod as it will be written: on its node, PodScheduled. `pod` is changed in place."""
    spec = pod.spec
    want = shared_spec_requests(spec)  # unbound yet: its replicas' spec
    spec.node_name = b.node_name
    set_condition(pod.status.conditions, "PodScheduled", "True", "", "", now)
    return _Item(index, qual, key, rev, pod, encode(pod), want, b)


@dataclass(slots=True)
class _NodeWork:
    name: str
    key: str
    create_rev: int
    alloc: Resources
    items: list[_Item]
    # > 0: checked on the cached node at this mod revision, which the transaction compares
    # instead of the create revision (module doc); 0: checked on the batched read.
    cached_rev: int = 0


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


def pack_nodes(works: list[_NodeWork], pending: dict[str, _NodeWork],
               max_ops: int = MAX_TXN_OPS) -> list[list[_NodeWork]]:
    """Cut `works` into transactions of at most `max_ops` compares (a node costs 2 plus
    one per pod; puts are never more). A node with more pods than one
    transaction holds keeps the rest in `pending`; taken nodes leave it."""
    packs: list[list[_NodeWork]] = []
    cur: list[_NodeWork] = []
    ops = 0
    for w in works:
        whole = len(w.items) <= max_ops - 2
        need = (len(w.items) if whole else max_ops - 2) + 2
        if cur and ops + need > max_ops:
            packs.append(cur)
            cur, ops = [], 0
        ops += need
        if whole:  # it leaves `pending`: the pack takes it as it is
            cur.append(w)
            pending.pop(w.name, None)
        else:
            take = w.items[: max_ops - 2]
            cur.append(_NodeWork(w.name, w.key, w.create_rev, w.alloc, take, w.cached_rev))
            w.items = w.items[len(take):]
    if cur:
        packs.append(cur)
    return packs


class Binder:
    def __init__(self, store: Store, usage: NodeUsage, hub: WatchHub[pod_pb2.Pod], clock: Clock, *,
                 timeout: float = 5.0, txn_concurrency: int = 32) -> None:
        self.store = store
        self.usage = usage
        self.hub = hub
        self.clock = clock
        self.timeout = timeout
        self._sem = asyncio.Semaphore(txn_concurrency)
        # Nodes a transaction of this process is working on, resolved when it is done.
        self._busy: dict[str, asyncio.Future[None]] = {}
        # The controller's informers, once it has them (module doc); None: read etcd.
        self._pod_cache: ObjectCache[pod_pb2.Pod] | None = None
        self._node_cache: ObjectCache[node_pb2.Node] | None = None
        # node -> (mod revision, allocatable) of the cached node last bound to: a mod revision
        # names one version of the node, so its allocatable is the one computed then.
        self._alloc: dict[str, tuple[int, Resources]] = {}

    def use_caches(self, pods: ObjectCache[pod_pb2.Pod], nodes: ObjectCache[node_pb2.Node]) -> None:
        """Check bindings on these informers' objects while both are synced (module doc)."""
        self._pod_cache = pods
        self._node_cache = nodes

    async def bind_many(self, bindings: Sequence[pod_pb2.Binding]) -> list[BindOutcome]:
        outcomes = [BindOutcome(None, None) for _ in bindings]
        todo: list[int] = []
        for i, b in enumerate(bindings):
            if not b.pod.name:
                outcomes[i].error = Invalid(f"bindings[{i}].pod.name", "required")
            elif not b.node_name:
                outcomes[i].error = Invalid(f"bindings[{i}].nodeName", "required")
            else:
                todo.append(i)
        works, todo = self._check_cached(bindings, todo)
        if todo:
            works.update(await self._check(bindings, todo, outcomes))
        await self._commit(works, outcomes)
        if log.isEnabledFor(logging.DEBUG):
            ok = sum(1 for o in outcomes if o.error is None)
            log.debug("bound %d of %d pods; refused: %s", ok, len(bindings),
                      "; ".join(str(o.error) for o in outcomes if o.error is not None)[:500] or "none")
        return outcomes

    # -- static checks: the caches, else one batched read

    def _check_cached(self, bindings: Sequence[pod_pb2.Binding], todo: list[int]
                      ) -> tuple[dict[str, _NodeWork], list[int]]:
        """The nodes whose every binding the caches settle (module doc), and the bindings
        (indices, in order) left for the batched read."""
        pods, nodes = self._pod_cache, self._node_cache
        if pods is None or nodes is None or not (pods.synced and nodes.synced):
            return {}, todo
        pod_cache, node_cache = pods.cache, nodes.cache
        works: dict[str, _NodeWork] = {}
        unsettled: set[str] = set()
        seen: set[tuple[str, str]] = set()
        now = self.clock.now()
        # One pass, bound as it goes: a node a later binding unsettles is dropped whole.
        for i in todo:
            b = bindings[i]
            name = b.node_name
            ref = b.pod
            ns, pod_name = ref.namespace or "default", ref.name
            pk = (ns, pod_name)
            if pk in seen:  # which binding gets the pod is `_check`'s rule: all go there
                return {}, todo
            seen.add(pk)
            if name in unsettled:
                continue
            w = works.get(name)
            if w is None:
                node = node_cache.get(("", name))
                if node is None or (meta := node.metadata).HasField("deletion_timestamp"):
                    unsettled.add(name)  # the refusal (and its message) comes from etcd
                    continue
                node_rev = meta.resource_version
                known = self._alloc.get(name)
                if known is None or known[0] != node_rev:
                    if len(self._alloc) > 2 * len(node_cache) + 64:
                        self._alloc.clear()  # nodes come and go: bounded by the fleet's size
                    known = self._alloc[name] = (node_rev, allocatable(node))
                w = works[name] = _NodeWork(name, NODES.key("", name), 0, known[1], [], node_rev)
            shared = pod_cache.get(pk)
            if shared is None:
                unsettled.add(name)
                del works[name]
                continue
            rev = shared.metadata.resource_version
            if _check_pod(b, "", shared, rev) is not None:
                unsettled.add(name)
                del works[name]
                continue
            pod = pod_pb2.Pod()
            pod.CopyFrom(shared)  # the cached object is everyone's
            w.items.append(_bound(i, f"{ns}/{pod_name}", PODS.key(ns, pod_name), rev, pod, b, now))
        if not unsettled:
            return works, []
        return works, [i for i in todo if bindings[i].node_name in unsettled]

    async def _check(self, bindings: Sequence[pod_pb2.Binding], todo: list[int],
                     outcomes: list[BindOutcome]) -> dict[str, _NodeWork]:
        """The bindings at `todo` (none refused as Invalid) checked on one batched read."""
        pod_keys = [PODS.key(bindings[i].pod.namespace or "default", bindings[i].pod.name) for i in todo]
        node_names = sorted({bindings[i].node_name for i in todo})
        kvs = await self.store.get_many([*pod_keys, *(NODES.key("", n) for n in node_names)])
        works: dict[str, _NodeWork] = {}
        refused: dict[str, str] = {}  # node -> why nothing binds to it
        for name, nkv in zip(node_names, kvs[len(pod_keys):], strict=True):
            why, node = _refusal(nkv)
            if why:
                refused[name] = why
                continue
            assert nkv is not None and node is not None
            works[name] = _NodeWork(name, NODES.key("", name), nkv.create_revision, allocatable(node), [])
        now = self.clock.now()
        claimed: set[str] = set()
        for j, i in enumerate(todo):
            b = bindings[i]
            q = f"{b.pod.namespace or 'default'}/{b.pod.name}"
            err, pod = _check_kv(b, q, kvs[j])
            if err is None and b.node_name in refused:
                err = Conflict(f'cannot bind pods "{q}": node "{b.node_name}" {refused[b.node_name]}')
            if err is None and pod_keys[j] in claimed:
                err = Conflict(f'pods "{q}" appears twice in one batch; only the first binding counts')
            if err is not None:
                outcomes[i].error = err
                continue
            pkv = kvs[j]
            assert pod is not None and pkv is not None
            claimed.add(pod_keys[j])
            works[b.node_name].items.append(_bound(i, q, pod_keys[j], pkv.mod_revision, pod, b, now))
        return {n: w for n, w in works.items() if w.items}

    # -- commit

    async def _commit(self, pending: dict[str, _NodeWork], outcomes: list[BindOutcome]) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            while pending:
                free = [w for n, w in pending.items() if n not in self._busy]
                if not free:
                    await asyncio.wait({self._busy[n] for n in pending}, return_when=asyncio.FIRST_COMPLETED)
                    continue
                for pack in pack_nodes(free, pending):
                    done = loop.create_future()  # one per pack: its nodes are released together
                    for w in pack:
                        self._busy[w.name] = done
                    tg.create_task(self._commit_pack(pack, outcomes))

    async def _commit_pack(self, pack: list[_NodeWork], outcomes: list[BindOutcome]) -> None:
        names = [w.name for w in pack]
        undecided = [it for w in pack for it in w.items]
        # A transaction lost to a lagging cache is not a race with another binder (module doc).
        attempts = ATTEMPTS + (1 if any(w.cached_rev for w in pack) else 0)
        try:
            for _ in range(attempts):
                await self.hub.wait_position(max(self.usage.seq(n) for n in names), self.timeout)
                compares, puts, planned = self._plan(pack, outcomes)
                if not planned:
                    return
                async with self._sem:
                    res = await self.store.txn(compares, puts)
                if res.succeeded:
                    for w, items in planned:
                        self.usage.note_seq(w.name, res.revision)
                        for it in items:
                            it.pod.metadata.resource_version = res.revision
                            outcomes[it.index].pod = it.pod
                    return
                keys = [k for w, items in planned
                        for k in (bindseq_key(w.name), w.key, *(it.pod_key for it in items))]
                async with self._sem:  # what changed: read after the loss, not in it (`_plan`)
                    gets = await self.store.get_many(keys)
                pack = self._learn(planned, gets, outcomes)
                if not pack:
                    return
            for w in pack:
                for it in w.items:
                    outcomes[it.index].error = Conflict(
                        f'cannot bind pods "{it.qual}": node "{w.name}" kept changing; retry')
        except CowpodError as err:
            for it in undecided:
                o = outcomes[it.index]
                if o.pod is None and o.error is None:
                    o.error = err
        finally:
            for n in names:
                fut = self._busy.pop(n, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)  # the pack's: set once, at its first node

    def _plan(self, pack: list[_NodeWork], outcomes: list[BindOutcome]
              ) -> tuple[list[Compare], list[Op], list[tuple[_NodeWork, list[_Item]]]]:
        """One transaction for `pack`: the bindings that fit, given what the watch has shown.

        It has no failure branch: a loss is read back afterwards (`_commit_pack`). Reads in the
        failure branch cost every transaction a read per compare key while almost none lose,
        and made a pack too large to share a group commit (which reads the compare keys back
        for a merge anyway); a read after the loss sees these keys at or after it, which
        `_learn` judges alike (it checks every key's current value, and the retry compares)."""
        compares: list[Compare] = []
        puts: list[Op] = []
        planned: list[tuple[_NodeWork, list[_Item]]] = []
        for w in pack:
            used = self.usage.used(w.name)
            fit: list[_Item] = []
            for it in w.items:
                why = shortfall(w.name, w.alloc, used, it.want)
                if why is not None:
                    outcomes[it.index].error = FailedPrecondition(f'cannot bind pods "{it.qual}": {why}')
                    continue
                used = used + it.want
                fit.append(it)
            if not fit:
                continue
            seq = self.usage.seq(w.name)
            skey = bindseq_key(w.name)
            compares.append(Compare.at(w.key, w.cached_rev) if w.cached_rev
                            else Compare.created_at(w.key, w.create_rev))
            compares.append(Compare.at(skey, seq) if seq else Compare.absent(skey))
            puts.append(Put(skey, seq_value(fit[-1].pod_key)))
            for it in fit:
                compares.append(Compare.at(it.pod_key, it.pod_rev))
                puts.append(Put(it.pod_key, it.data))
            planned.append((w, fit))
        return compares, puts, planned

    def _learn(self, planned: list[tuple[_NodeWork, list[_Item]]], gets: list[KeyValue | None],
               outcomes: list[BindOutcome]) -> list[_NodeWork]:
        """After a lost transaction: why, from the keys read back (per node its binding
        sequence, the node, its pods). Returns what is left to retry."""
        it = iter(gets)
        left: list[_NodeWork] = []
        for w, items in planned:
            skv, nkv = next(it), next(it)
            pkvs = [next(it) for _ in items]
            self.usage.note_seq(w.name, skv.mod_revision if skv is not None else 0)
            if w.cached_rev:
                again = self._judge(w.name, items, nkv, pkvs, outcomes)
                if again is not None:
                    left.append(again)
                continue
            why, node = _refusal(nkv)
            if nkv is not None and nkv.create_revision != w.create_rev:
                why = "not found"  # created again since the check: not the node checked
            if why:
                for item in items:
                    outcomes[item.index].error = Conflict(
                        f'cannot bind pods "{item.qual}": node "{w.name}" {why}')
                continue
            assert node is not None
            keep: list[_Item] = []
            now = self.clock.now()
            for item, pkv in zip(items, pkvs, strict=True):
                if pkv is None:
                    outcomes[item.index].error = NotFound(f'pods "{item.qual}" not found')
                elif pkv.mod_revision != item.pod_rev:
                    # Changed under us: bind the new value if the binding still holds for it.
                    err, pod = _check_kv(item.binding, item.qual, pkv)
                    if err is not None or pod is None:
                        outcomes[item.index].error = err or _stale(item.qual, pkv)
                    else:
                        keep.append(_bound(item.index, item.qual, item.pod_key, pkv.mod_revision, pod,
                                           item.binding, now))
                else:
                    keep.append(item)
            if keep:
                left.append(_NodeWork(w.name, w.key, w.create_rev, allocatable(node), keep))
        return left

    def _judge(self, name: str, items: list[_Item], nkv: KeyValue | None, pkvs: list[KeyValue | None],
               outcomes: list[BindOutcome]) -> _NodeWork | None:
        """Bindings checked on a cached node that lost their transaction, checked again on the
        keys read back exactly as `_check` checks the batched read (pod first, then the
        node). Returns what is left to retry, now checked on etcd's state."""
        refused, node = _refusal(nkv)
        keep: list[_Item] = []
        now = self.clock.now()
        for item, pkv in zip(items, pkvs, strict=True):
            err, pod = _check_kv(item.binding, item.qual, pkv)
            if err is None and refused:
                err = Conflict(f'cannot bind pods "{item.qual}": node "{name}" {refused}')
            if err is not None:
                outcomes[item.index].error = err
                continue
            assert pod is not None and pkv is not None
            keep.append(_bound(item.index, item.qual, item.pod_key, pkv.mod_revision, pod, item.binding, now))
        if not keep:
            return None
        assert node is not None and nkv is not None
        return _NodeWork(name, NODES.key("", name), nkv.create_revision, allocatable(node), keep)


def _refusal(nkv: KeyValue | None) -> tuple[str, node_pb2.Node | None]:
    """Why no pod may bind to the node read at `nkv` ("" when they may), and the node."""
    if nkv is None:
        return "not found", None
    node = node_pb2.Node.FromString(nkv.value)
    return ("is being deleted" if node.metadata.HasField("deletion_timestamp") else ""), node


def _check_kv(b: pod_pb2.Binding, q: str,
              pkv: KeyValue | None) -> tuple[CowpodError | None, pod_pb2.Pod | None]:
    """`_check_pod` on a read: the decoded pod (the caller's to change) when it passes."""
    if pkv is None:
        return NotFound(f'pods "{q}" not found'), None
    pod = decode(pod_pb2.Pod, pkv.value, pkv.mod_revision)
    err = _check_pod(b, q, pod, pkv.mod_revision)
    return (err, None) if err is not None else (None, pod)


def _check_pod(b: pod_pb2.Binding, q: str, pod: pod_pb2.Pod, rev: int) -> CowpodError | None:
    """Why `b` may not bind `pod` (read at mod revision `rev`), or None. Reads only."""
    if b.pod_uid and pod.metadata.uid != b.pod_uid:
        return Conflict(f'pods "{q}": uid {b.pod_uid} is gone (the pod was recreated as '
                        f"{pod.metadata.uid})")
    if b.pod_resource_version and rev != b.pod_resource_version:
        return Conflict(f'pods "{q}" changed since the scheduler read it (resource_version '
                        f"{b.pod_resource_version} is stale, now {rev})")
    if b.pod_generation and pod.metadata.generation != b.pod_generation:
        return Conflict(f'pods "{q}": its spec changed since the scheduler read it (generation '
                        f"{b.pod_generation}, now {pod.metadata.generation})")
    if pod.spec.node_name:
        return Conflict(f'pods "{q}" is already bound to node "{pod.spec.node_name}"')
    if pod.metadata.HasField("deletion_timestamp"):
        return Conflict(f'pods "{q}" is being deleted')
    return None


def _stale(q: str, pkv: KeyValue) -> CowpodError:
    pod = pod_pb2.Pod.FromString(pkv.value)
    if pod.spec.node_name:
        return Conflict(f'pods "{q}" is already bound to node "{pod.spec.node_name}"')
    if pod.metadata.HasField("deletion_timestamp"):
        return Conflict(f'pods "{q}" is being deleted')
    return Conflict(f'pods "{q}" changed while binding; re-read and retry')


__all__ = ["BindOutcome", "Binder", "pack_nodes", "set_condition"]
