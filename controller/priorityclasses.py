"""PriorityClasses (scheduling.k8s.io/v1): the kind, its rules, and a pod's priority.

As Kubernetes has them:
- cluster-scoped; `value` at most `MAX_USER_VALUE` (one billion); higher values
  belong to the two built-in classes, `system-cluster-critical` and
  `system-node-critical`, which always exist (they are answered from here, not
  stored) and cannot be created, changed or deleted;
- at most one class is `globalDefault`;
- `value` and `preemptionPolicy` (PreemptLowerPriority, the default, or Never)
  cannot change after create: delete and recreate, as in Kubernetes.

A pod's priority is resolved once, at create (`resolve`): a pod naming a class
gets its value and preemption policy, or is refused with
`spec.priorityClassName` when no such class exists; a pod naming none gets the
global default class's, else priority 0. A pod that sets `spec.priority` itself
must agree with its class. The scheduler's queue (PrioritySort) then takes
higher priority first.

Pod creates are a hot path, so classes are read from a snapshot at most
`SNAPSHOT_SECONDS` old; writes through this process drop it at once. A class
created through another controller process can take that long to be seen.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from controller import validation
from controller.kinds import Kind
from controller.metrics import Metrics
from controller.resource import Resource
from controller.rpc import Ctx
from cowpod.api import priority
from cowpod.clock import Clock
from cowpod.errors import Invalid
from cowpod.v1 import meta_pb2, pod_pb2, scheduling_pb2

PRIORITYCLASSES: Kind[scheduling_pb2.PriorityClass] = Kind(
    "priorityclasses", "PriorityClass", "scheduling.k8s.io/v1", False, scheduling_pb2.PriorityClass,
    scheduling_pb2.PriorityClassList, scheduling_pb2.PriorityClassWatchEvent,
)

MAX_USER_VALUE = 1_000_000_000
PREEMPT_LOWER = priority.PREEMPT_LOWER
NEVER = priority.NEVER
PREEMPTION_POLICIES = priority.PREEMPTION_POLICIES
SNAPSHOT_SECONDS = 2.0


def _builtin(name: str, value: int, description: str) -> scheduling_pb2.PriorityClass:
    pc = scheduling_pb2.PriorityClass(api_version=PRIORITYCLASSES.api_version, kind=PRIORITYCLASSES.kind,
                                      value=value, preemption_policy=PREEMPT_LOWER, description=description)
    pc.metadata.name = name
    return pc


BUILTIN: dict[str, scheduling_pb2.PriorityClass] = {
    pc.metadata.name: pc for pc in (
        _builtin("system-cluster-critical", 2_000_000_000,
                 "Used for system critical pods that must run in the cluster, but can be moved to "
                 "another node"),
        _builtin("system-node-critical", 2_000_001_000,
                 "Used for system critical pods that must not be moved from their current node"),
    )
}


def validate_priority_class(pc: scheduling_pb2.PriorityClass) -> None:
    errs = validation.Errors()
    validation.metadata(errs, pc.metadata, namespaced=False)
    if pc.metadata.name.startswith("system-"):
        errs.add("metadata.name", "names starting with system- are reserved for the built-in classes")
    if pc.value > MAX_USER_VALUE:
        errs.add("value", f"must be at most {MAX_USER_VALUE} (higher values are reserved for system classes)")
    validation.one_of(errs, "preemptionPolicy", pc.preemption_policy, PREEMPTION_POLICIES)
    errs.raise_if_any()


class PriorityClasses:
    def __init__(self, res: Resource[scheduling_pb2.PriorityClass], clock: Clock) -> None:
        self.res = res
        self.clock = clock
        self._snapshot: dict[str, scheduling_pb2.PriorityClass] | None = None
        self._snapshot_until = 0.0

    async def classes(self) -> dict[str, scheduling_pb2.PriorityClass]:
        """Every class by name, built-ins included (a snapshot at most SNAPSHOT_SECONDS old)."""
        now = self.clock.monotonic()
        if self._snapshot is None or now >= self._snapshot_until:
            items, _ = await self.res.list(meta_pb2.ListOptions())
            self._snapshot = {**{pc.metadata.name: pc for pc in items}, **BUILTIN}
            self._snapshot_until = now + SNAPSHOT_SECONDS
        return self._snapshot

    async def _check_single_default(self, pc: scheduling_pb2.PriorityClass) -> None:
        if not pc.global_default:
            return
        self._snapshot = None
        others = [n for n, c in (await self.classes()).items() if c.global_default and n != pc.metadata.name]
        if others:
            raise Invalid("globalDefault", f"PriorityClass {others[0]!r} is already the global default")

    async def create(self, pc: scheduling_pb2.PriorityClass) -> scheduling_pb2.PriorityClass:
        if not pc.preemption_policy:
            pc.preemption_policy = PREEMPT_LOWER
        self.res.prepare_new(pc)
        validate_priority_class(pc)
        await self._check_single_default(pc)
        out = await self.res.create(pc)
        self._snapshot = None
        return out

    async def get(self, name: str) -> scheduling_pb2.PriorityClass:
        builtin = BUILTIN.get(name)
        return builtin if builtin is not None else await self.res.get("", name)

    async def update(self, req: scheduling_pb2.PriorityClass) -> scheduling_pb2.PriorityClass:
        if req.metadata.name in BUILTIN:
            raise Invalid("metadata.name", f"{req.metadata.name} is a built-in class and cannot be changed")
        await self._check_single_default(req)

        def mutate(cur: scheduling_pb2.PriorityClass) -> scheduling_pb2.PriorityClass:
            if req.value != cur.value:
                raise Invalid("value", "field is immutable: delete and recreate the PriorityClass")
            if (req.preemption_policy or PREEMPT_LOWER) != cur.preemption_policy:
                raise Invalid("preemptionPolicy", "field is immutable: delete and recreate the PriorityClass")
            cur.metadata.labels.clear()
            cur.metadata.labels.update(req.metadata.labels)
            cur.metadata.annotations.clear()
            cur.metadata.annotations.update(req.metadata.annotations)
            cur.description = req.description
            cur.global_default = req.global_default
            validate_priority_class(cur)
            return cur

        _, name = self.res.names("", req.metadata.name)
        out = await self.res.update("", name, req.metadata.resource_version, mutate)
        self._snapshot = None
        return out

    async def delete(self, opts: meta_pb2.DeleteOptions) -> scheduling_pb2.PriorityClass:
        if opts.key.name in BUILTIN:
            raise Invalid("metadata.name", f"{opts.key.name} is a built-in class and cannot be deleted")
        _, name = self.res.names("", opts.key.name)
        out = await self.res.remove("", name, opts.resource_version)
        self._snapshot = None
        return out

    async def resolve(self, spec: pod_pb2.PodSpec) -> None:
        """Fill a new pod's priority and preemption policy from its class (see module doc)."""
        classes = await self.classes()
        if spec.priority_class_name:
            pc = classes.get(spec.priority_class_name)
            if pc is None:
                name = spec.priority_class_name
                raise Invalid("spec.priorityClassName",
                              f"no PriorityClass named {name!r} (cowpod get priorityclasses)")
        else:
            defaults = [c for c in classes.values() if c.global_default]
            if not defaults:
                return
            pc = defaults[0]
            spec.priority_class_name = pc.metadata.name
        if spec.priority and spec.priority != pc.value:
            raise Invalid("spec.priority", f"must be {pc.value} (the value of PriorityClass "
                                           f"{pc.metadata.name!r}) or unset")
        spec.priority = pc.value
        spec.preemption_policy = pc.preemption_policy or PREEMPT_LOWER


class PriorityClassServicer:
    def __init__(self, classes: PriorityClasses, metrics: Metrics) -> None:
        self.classes = classes
        self.res = classes.res
        self.metrics = metrics

    async def Create(self, req: scheduling_pb2.PriorityClass, ctx: Ctx) -> scheduling_pb2.PriorityClass:
        return await self.classes.create(req)

    async def Get(self, req: meta_pb2.ObjectKey, ctx: Ctx) -> scheduling_pb2.PriorityClass:
        return await self.classes.get(req.name)

    async def List(self, req: meta_pb2.ListOptions, ctx: Ctx) -> scheduling_pb2.PriorityClassList:
        items, rev = await self.res.list(req)
        if not (req.label_selector or req.field_selector):  # the built-ins are listed, as in Kubernetes
            items = [*BUILTIN.values(), *items]
        return scheduling_pb2.PriorityClassList(items=items, resource_version=rev)

    async def Update(self, req: scheduling_pb2.PriorityClass, ctx: Ctx) -> scheduling_pb2.PriorityClass:
        return await self.classes.update(req)

    async def Delete(self, req: meta_pb2.DeleteOptions, ctx: Ctx) -> scheduling_pb2.PriorityClass:
        return await self.classes.delete(req)

    async def Watch(self, req: meta_pb2.WatchOptions, ctx: Ctx) -> AsyncIterator[bytes]:
        with self.metrics.watch_open(PRIORITYCLASSES.resource):
            async for b in self.res.watch(req):
                yield b
