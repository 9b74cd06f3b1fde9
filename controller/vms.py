"""VM objects: the desired fleet. The VM manager (hypervisor/) makes it real.

The controller records intent and lineage; it never touches a hypervisor:

    Create / Clone ──► VM{status.phase=Pending}            (controller)
    VM manager sees Pending ──► Creating ──► Running       (UpdateStatus)
    SnapFree ──► annotation cowpod.io/snap-free=requested (controller)
    SetPaused ──► spec.paused; VM manager pauses/resumes ──► Paused/Running
    VM manager flattens ──► status.snappedFree=true       (UpdateStatus)
    Destroy ──► metadata.deletionTimestamp set            (controller)
    VM manager destroys ──► Destroying ──► Destroy(grace 0) removes the object

`status.children` is the controller's lineage record (kept across UpdateStatus);
every other status field belongs to the VM manager. See docs/api.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from controller import validation
from controller.kinds import VMS
from controller.resource import Resource, random_suffix, set_time
from controller.store import Compare, Put, Store, encode
from cowpod.api.labels import SNAP_FREE_ANNOTATION
from cowpod.api.phases import CLONABLE_VM_PHASES
from cowpod.clock import Clock
from cowpod.errors import AlreadyExists, Conflict, FailedPrecondition, Invalid, NotFound
from cowpod.v1 import meta_pb2, vm_pb2

log = logging.getLogger(__name__)

MAX_CLONES_PER_REQUEST = 100
# A parent that is Paused is a quiesced parent: Fargo forks exactly those, and the
# docker provider's zygote stays out of the parent's freezer, so it can.


class VMs:
    def __init__(self, res: Resource[vm_pb2.VM], store: Store, clock: Clock) -> None:
        self.res = res
        self.store = store
        self.clock = clock

    async def create(self, vm: vm_pb2.VM) -> vm_pb2.VM:
        if vm.spec.parent:
            # An instant clone named by the caller: same rules as Clone.
            items = await self._clone(vm.spec.parent, [vm], vm.spec.node_labels)
            return items[0]
        vm.ClearField("status")
        self._init(vm, "full")
        validation.validate_vm(vm)
        out = await self.res.create(vm)
        log.info("vm %s requested (full clone, class=%s)", vm.metadata.name, vm.spec.class_name or "-")
        return out

    def _init(self, vm: vm_pb2.VM, clone_kind: str) -> None:
        self.res.prepare_new(vm)
        vm.status.phase = "Pending"
        vm.status.clone_kind = clone_kind
        set_time(vm.status.requested_at, self.clock.now())

    async def clone(self, req: vm_pb2.CloneRequest) -> list[vm_pb2.VM]:
        if not req.parent:
            raise Invalid("parent", "required")
        count = req.count or len(req.names) or 1
        if req.names and req.count and req.count != len(req.names):
            raise Invalid("names", f"{len(req.names)} names given for count {req.count}")
        if not 1 <= count <= MAX_CLONES_PER_REQUEST:
            raise Invalid("count", f"must be between 1 and {MAX_CLONES_PER_REQUEST} (got {count})")
        children = []
        for i in range(count):
            vm = vm_pb2.VM()
            vm.metadata.name = req.names[i] if req.names else f"{req.parent[:56]}-{random_suffix()}"
            children.append(vm)
        return await self._clone(req.parent, children, req.node_labels)

    async def _clone(self, parent_name: str, children: list[vm_pb2.VM],
                     node_labels: Mapping[str, str]) -> list[vm_pb2.VM]:
        for _ in range(8):
            try:
                parent = await self.res.get("", parent_name)
            except NotFound:
                raise FailedPrecondition(f'cannot clone: parent vms "{parent_name}" not found') from None
            if parent.metadata.HasField("deletion_timestamp"):
                raise FailedPrecondition(f'cannot clone: parent vms "{parent_name}" is being destroyed')
            if parent.status.phase not in CLONABLE_VM_PHASES:
                raise FailedPrecondition(
                    f'cannot clone: parent vms "{parent_name}" is {parent.status.phase or "Pending"}, '
                    "not Running or Paused (instant clones fork a live VM, quiesced or not)"
                )
            made: list[vm_pb2.VM] = []
            for c in children:
                vm = vm_pb2.VM()
                vm.metadata.CopyFrom(c.metadata)
                vm.spec.CopyFrom(parent.spec)
                if c.HasField("spec"):
                    vm.spec.MergeFrom(c.spec)
                vm.spec.parent = parent_name
                vm.spec.template = False
                vm.spec.paused = False
                vm.spec.node_labels.update(node_labels)
                self._init(vm, "instant")
                validation.validate_vm(vm)
                made.append(vm)
            names = [v.metadata.name for v in made]
            if len(set(names)) != len(names):
                raise Invalid("names", "must be unique")
            prv = parent.metadata.resource_version
            parent.status.children.extend(names)
            pkey = VMS.key("", parent_name)
            compares = [Compare.at(pkey, prv), *(Compare.absent(VMS.key("", n)) for n in names)]
            puts = [Put(pkey, encode(parent)), *(Put(VMS.key("", v.metadata.name), encode(v)) for v in made)]
            res = await self.store.txn(compares, puts)
            if res.succeeded:
                for v in made:
                    v.metadata.resource_version = res.revision
                log.info("vm %s: instant clone requested: %s", parent_name, ", ".join(names))
                return made
            # Either the parent changed (retry) or a child name is taken (fail).
            existing = await self.store.get_many([VMS.key("", n) for n in names])
            taken = [n for n, kv in zip(names, existing, strict=True) if kv is not None]
            if taken:
                raise AlreadyExists(f'vms "{taken[0]}" already exists')
        raise Conflict(f'vms "{parent_name}" kept changing during clone; retry')

    async def snap_free(self, key: meta_pb2.ObjectKey) -> vm_pb2.VM:
        _, name = self.res.names("", key.name)

        def mark(cur: vm_pb2.VM) -> vm_pb2.VM | None:
            if not cur.spec.parent:
                raise FailedPrecondition(f'vms "{name}" is a full clone; it has no parent to be freed from')
            if cur.status.snapped_free or cur.metadata.annotations.get(SNAP_FREE_ANNOTATION) == "requested":
                return None
            cur.metadata.annotations[SNAP_FREE_ANNOTATION] = "requested"
            return cur

        vm = await self.res.update("", name, 0, mark)
        log.info("vm %s: snap free requested", name)
        return vm

    async def set_paused(self, req: vm_pb2.SetPausedRequest) -> vm_pb2.VM:
        """Record that the VM should be frozen (or thawed); the VM manager acts on spec.paused."""
        if not req.key.name:
            raise Invalid("key.name", "required")
        _, name = self.res.names("", req.key.name)

        def mark(cur: vm_pb2.VM) -> vm_pb2.VM | None:
            if cur.metadata.HasField("deletion_timestamp"):
                raise FailedPrecondition(f'vms "{name}" is being destroyed')
            if cur.status.phase in ("Failed", "Stopped", "Destroying"):
                raise FailedPrecondition(f'vms "{name}" is {cur.status.phase}: only a live VM can be paused')
            if cur.spec.paused == req.paused:
                return None
            cur.spec.paused = req.paused
            return cur

        vm = await self.res.update("", name, 0, mark)
        log.info("vm %s: %s requested", name, "pause" if req.paused else "resume")
        return vm

    async def update_status(self, req: vm_pb2.VM) -> vm_pb2.VM:
        validation.validate_vm_status(req)

        def mutate(cur: vm_pb2.VM) -> vm_pb2.VM:
            children = list(cur.status.children)
            cur.status.CopyFrom(req.status)
            del cur.status.children[:]
            cur.status.children.extend(children)
            if cur.status.snapped_free:
                cur.metadata.annotations.pop(SNAP_FREE_ANNOTATION, None)
            return cur

        _, name = self.res.names("", req.metadata.name)
        return await self.res.update("", name, req.metadata.resource_version, mutate)

    async def live_children(self, name: str) -> list[vm_pb2.VM]:
        items, _ = await self.res.list(meta_pb2.ListOptions(field_selector=f"spec.parent={name}"))
        return [v for v in items if not v.status.snapped_free]

    async def destroy(self, opts: meta_pb2.DeleteOptions) -> vm_pb2.VM:
        """Mark for destruction (the VM manager acts), or with grace 0 remove the object."""
        _, name = self.res.names("", opts.key.name)
        vm = await self.res.get("", name)
        children = await self.live_children(name)
        if children and not opts.cascade:
            shown = ", ".join(c.metadata.name for c in children[:5])
            raise FailedPrecondition(
                f'vms "{name}" has {len(children)} instant clone(s) not snapped free ({shown}); '
                "snap them free first or destroy with cascade"
            )
        for c in children:
            await self.destroy(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name=c.metadata.name),
                                                      cascade=True))
        if opts.HasField("grace_period_seconds") and opts.grace_period_seconds == 0:
            out = await self.res.remove("", name, opts.resource_version)
            await self._forget_child(vm.spec.parent, name)
            log.info("vm %s removed", name)
            return out
        if vm.metadata.HasField("deletion_timestamp"):
            return vm
        now = self.clock.now()

        def mark(cur: vm_pb2.VM) -> vm_pb2.VM | None:
            if cur.metadata.HasField("deletion_timestamp"):
                return None
            set_time(cur.metadata.deletion_timestamp, now)
            if opts.HasField("grace_period_seconds"):
                cur.metadata.deletion_grace_period_seconds = opts.grace_period_seconds
            return cur

        out = await self.res.update("", name, opts.resource_version, mark)
        log.info("vm %s: destroy requested", name)
        return out

    async def _forget_child(self, parent: str, child: str) -> None:
        if not parent:
            return

        def drop(cur: vm_pb2.VM) -> vm_pb2.VM | None:
            if child not in cur.status.children:
                return None
            kept = [c for c in cur.status.children if c != child]
            del cur.status.children[:]
            cur.status.children.extend(kept)
            return cur

        try:
            await self.res.update("", parent, 0, drop)
        except NotFound:
            pass
