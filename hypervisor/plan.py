"""The VM manager's brain: a pure `plan(desired, actual, nodes, now) -> [Action]`.

`desired` is what the controller stores (VM objects, as `DesiredVM`), `actual`
is what the provider reports (`VMInfo`), `nodes` says which VMs' nodes are
Ready. The plan says what to do to bring them together; the executor in
`hypervisor.manager` does it. No I/O here, so every rule is a table row in
tests/unit/hypervisor/test_plan.py.

Rules, per VM name:

- deleting (deletion_timestamp set): Destroy (provider destroy, delete its node,
  finalize the object) — but not while the provider still holds children of it
  that are not snapped free: those go first (the controller's cascade marks
  them for deletion too).
- no provider VM, phase Pending/Creating/"": Create (full clone, or instant clone
  once the parent is running; a parent that is not there at all fails the VM).
- no provider VM, phase Running/Paused/Stopped: Fail — the VM vanished.
- provider VM FAILED and phase not Failed: Fail — the VM died on its own.
- spec.paused differs from the provider's state: SetPaused.
- snap free asked for and not yet done: SnapFree.
- the stored status differs from what the provider reports: SyncStatus
  (ready_at is stamped once, when the VM's node is first seen Ready).
- a provider VM with no VM object at all: DestroyOrphan (cascade).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cowpod.api.phases import VMPhase
from hypervisor.provider import VMInfo, VMSpecInfo, VMState

PHASE_OF_STATE: Mapping[VMState, str] = {
    VMState.CREATING: VMPhase.CREATING,
    VMState.RUNNING: VMPhase.RUNNING,
    VMState.PAUSED: VMPhase.PAUSED,
    VMState.STOPPED: VMPhase.STOPPED,
    VMState.FAILED: VMPhase.FAILED,
}


@dataclass(frozen=True)
class StatusFields:
    """The part of VMStatus the manager owns. Times are epoch seconds, None = unset."""

    phase: str = ""
    node_name: str = ""
    ip: str = ""
    provider_id: str = ""
    hostname: str = ""
    machine_id: str = ""
    clone_kind: str = ""
    created_at: float | None = None
    ready_at: float | None = None
    snapped_free: bool = False
    children: tuple[str, ...] = ()
    message: str = ""


@dataclass(frozen=True)
class DesiredVM:
    name: str
    spec: VMSpecInfo
    status: StatusFields
    deleting: bool = False
    paused: bool = False
    snap_free_requested: bool = False


# ---- actions ----------------------------------------------------------------


@dataclass(frozen=True)
class Create:
    name: str
    spec: VMSpecInfo
    # Empty = full clone from the class template.
    parent: str = ""


@dataclass(frozen=True)
class SyncStatus:
    name: str
    status: StatusFields


@dataclass(frozen=True)
class SetPaused:
    name: str
    paused: bool


@dataclass(frozen=True)
class SnapFree:
    name: str


@dataclass(frozen=True)
class Destroy:
    """Tear down a VM whose object is being deleted, then finalize the object."""

    name: str
    # False when the provider no longer has the VM: only node and object remain.
    present: bool
    # The stored status, to report phase Destroying while it happens (None: don't).
    status: StatusFields | None = None


@dataclass(frozen=True)
class Fail:
    """Mark a VM Failed (with an event), delete its node, clean up what is left."""

    name: str
    message: str
    present: bool


@dataclass(frozen=True)
class DestroyOrphan:
    """A provider VM of this cluster with no VM object (left by a crash)."""

    name: str


Action = Create | SyncStatus | SetPaused | SnapFree | Destroy | Fail | DestroyOrphan


def target_status(d: DesiredVM, a: VMInfo, node_ready: bool, now: float) -> StatusFields:
    """What the stored status should say given the provider's report."""
    ready_at = d.status.ready_at
    if ready_at is None and node_ready and a.state == VMState.RUNNING:
        ready_at = now
    return StatusFields(
        phase=PHASE_OF_STATE[a.state],
        node_name=a.node_name,
        ip=a.ip,
        provider_id=a.provider_id,
        hostname=a.hostname,
        machine_id=a.machine_id,
        clone_kind=a.clone_kind.value,
        created_at=d.status.created_at if d.status.created_at is not None else a.created_at,
        ready_at=ready_at,
        snapped_free=a.snapped_free,
        # Lineage in the object is the controller's record (it keeps it across
        # UpdateStatus); the provider's view is not written over it.
        children=d.status.children,
        message=a.message,  # why it failed or stopped; for a running VM, what the provider noted (a fallback)
    )


def _plan_one(
    d: DesiredVM,
    actual: Mapping[str, VMInfo],
    desired: Mapping[str, DesiredVM],
    ready_nodes: frozenset[str],
    now: float,
) -> list[Action]:
    a = actual.get(d.name)
    if d.deleting:
        if a is not None:
            dependants = [k for k in a.children if k in actual and not actual[k].snapped_free]
            if dependants:
                return []  # children first
        report = d.status if d.status.phase != VMPhase.DESTROYING else None
        return [Destroy(d.name, present=a is not None, status=report)]
    if a is None:
        phase = d.status.phase
        if phase in ("", VMPhase.PENDING, VMPhase.CREATING):
            parent = d.spec.parent
            if not parent:
                return [Create(d.name, d.spec)]
            p = actual.get(parent)
            if p is not None and p.state in (VMState.RUNNING, VMState.PAUSED):
                return [Create(d.name, d.spec, parent=parent)]
            if p is None and parent not in desired:
                return [Fail(d.name, f"parent vm {parent!r} not found", present=False)]
            if p is not None and p.state in (VMState.FAILED, VMState.STOPPED):
                return [Fail(d.name, f"parent vm {parent!r} is {p.state.value}: cannot clone it",
                             present=False)]
            return []  # the parent is still being created
        if phase in (VMPhase.RUNNING, VMPhase.PAUSED, VMPhase.STOPPED):
            return [Fail(d.name, "the VM vanished from the provider", present=False)]
        return []
    if a.state == VMState.FAILED:
        if d.status.phase != VMPhase.FAILED:
            return [Fail(d.name, a.message or "the VM died", present=True)]
        return []
    out: list[Action] = []
    if d.paused and a.state == VMState.RUNNING:
        out.append(SetPaused(d.name, True))
    elif not d.paused and a.state == VMState.PAUSED:
        out.append(SetPaused(d.name, False))
    if d.snap_free_requested and not a.snapped_free:
        out.append(SnapFree(d.name))
    target = target_status(d, a, d.name in ready_nodes, now)
    if target != d.status:
        out.append(SyncStatus(d.name, target))
    return out


def plan(
    desired: Sequence[DesiredVM],
    actual: Sequence[VMInfo],
    ready_nodes: frozenset[str] = frozenset(),
    now: float = 0.0,
) -> list[Action]:
    """Actions that move `actual` towards `desired`, in a stable order."""
    by_name = {d.name: d for d in desired}
    act = {a.name: a for a in actual}
    out: list[Action] = []
    for d in sorted(desired, key=lambda d: d.name):
        out.extend(_plan_one(d, act, by_name, ready_nodes, now))
    for a in sorted(actual, key=lambda a: a.name):
        if a.name not in by_name:
            out.append(DestroyOrphan(a.name))
    return out


__all__ = [
    "Action", "Create", "DesiredVM", "Destroy", "DestroyOrphan", "Fail", "SetPaused", "SnapFree",
    "StatusFields", "SyncStatus", "plan", "target_status",
]
