"""The VM manager's plan, one table row per rule."""

from __future__ import annotations

import dataclasses

import pytest

from cowpod.api.phases import VMPhase
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
from hypervisor.provider import CloneKind, VMInfo, VMSpecInfo, VMState

NOW = 1_700_000_100.0


def spec(name: str, parent: str = "") -> VMSpecInfo:
    return VMSpecInfo(name=name, class_name="small", cpu_millis=1000, memory_bytes=1 << 30, parent=parent)


def want(name: str, phase: str = VMPhase.PENDING, *, parent: str = "", **kw: object) -> DesiredVM:
    return DesiredVM(name=name, spec=spec(name, parent), status=StatusFields(phase=phase), **kw)  # type: ignore[arg-type]


def have(name: str, state: VMState = VMState.RUNNING, **kw: object) -> VMInfo:
    fields: dict[str, object] = dict(
        name=name, class_name="small", cpu_millis=1000, memory_bytes=1 << 30, state=state,
        node_name=name, ip="10.0.0.2", provider_id=f"fake://{name}", hostname=name, machine_id="m-" + name,
        clone_kind=CloneKind.FULL, created_at=NOW - 10, ready_at=NOW - 9,
    )
    fields.update(kw)
    return VMInfo(**fields)  # type: ignore[arg-type]


def synced(d: DesiredVM, a: VMInfo, *, ready: bool = False) -> DesiredVM:
    """`d` whose stored status already says what `a` reports."""
    return dataclasses.replace(d, status=target_status(d, a, ready, NOW))


CASES: list[tuple[str, list[DesiredVM], list[VMInfo], frozenset[str], list[Action]]] = [
    ("pending vm is full-cloned", [want("a")], [], frozenset(), [Create("a", spec("a"))]),
    ("creating vm with nothing behind it is created again", [want("a", VMPhase.CREATING)], [],
     frozenset(), [Create("a", spec("a"))]),
    ("child of a running parent is instant-cloned",
     [synced(want("p"), have("p")), want("c", parent="p")], [have("p")], frozenset(),
     [Create("c", spec("c", "p"), parent="p")]),
    ("child of a paused parent is instant-cloned too",
     [synced(want("p", paused=True), have("p", VMState.PAUSED)), want("c", parent="p")],
     [have("p", VMState.PAUSED)], frozenset(), [Create("c", spec("c", "p"), parent="p")]),
    ("child waits while its parent is still being created", [want("p"), want("c", parent="p")], [],
     frozenset(), [Create("p", spec("p"))]),
    ("child of an unknown parent fails", [want("c", parent="ghost")], [], frozenset(),
     [Fail("c", "parent vm 'ghost' not found", present=False)]),
    ("child of a failed parent fails", [want("p", VMPhase.FAILED), want("c", parent="p")],
     [have("p", VMState.FAILED, message="boom")], frozenset(),
     [Fail("c", "parent vm 'p' is failed: cannot clone it", present=False)]),
    ("running vm that vanished fails", [want("a", VMPhase.RUNNING)], [], frozenset(),
     [Fail("a", "the VM vanished from the provider", present=False)]),
    ("failed vm with nothing behind it stays as it is", [want("a", VMPhase.FAILED)], [], frozenset(), []),
    ("vm that died on its own fails", [want("a", VMPhase.RUNNING)],
     [have("a", VMState.FAILED, message="oom")], frozenset(), [Fail("a", "oom", present=True)]),
    ("a failed vm already marked is left alone", [want("a", VMPhase.FAILED)], [have("a", VMState.FAILED)],
     frozenset(), []),
    ("in-sync vm needs nothing", [synced(want("a"), have("a"))], [have("a")], frozenset(), []),
    ("status of a new vm is synced", [want("a", VMPhase.CREATING)], [have("a")], frozenset(),
     [SyncStatus("a", target_status(want("a"), have("a"), False, NOW))]),
    ("ready node stamps ready_at once", [synced(want("a"), have("a"))], [have("a")], frozenset({"a"}),
     [SyncStatus("a", dataclasses.replace(target_status(want("a"), have("a"), False, NOW), ready_at=NOW))]),
    ("ready_at already stamped is not moved", [synced(want("a"), have("a"), ready=True)], [have("a")],
     frozenset({"a"}), []),
    ("pause asked", [synced(want("a", paused=True), have("a"))], [have("a")], frozenset(),
     [SetPaused("a", True)]),
    ("resume asked", [synced(want("a"), have("a", VMState.PAUSED))], [have("a", VMState.PAUSED)],
     frozenset(), [SetPaused("a", False)]),
    ("snap free asked", [synced(want("c", snap_free_requested=True),
                                have("c", clone_kind=CloneKind.INSTANT, parent="p", snapped_free=False))],
     [have("c", clone_kind=CloneKind.INSTANT, parent="p", snapped_free=False)], frozenset(),
     [SnapFree("c")]),
    ("snap free already done", [synced(want("c", snap_free_requested=True), have("c"))], [have("c")],
     frozenset(), []),
    ("deleting vm is destroyed", [want("a", VMPhase.RUNNING, deleting=True)], [have("a")], frozenset(),
     [Destroy("a", present=True, status=StatusFields(phase=VMPhase.RUNNING))]),
    ("deleting vm already gone is finalized", [want("a", VMPhase.DESTROYING, deleting=True)], [], frozenset(),
     [Destroy("a", present=False)]),
    ("parent waits for its unsnapped children",
     [want("p", VMPhase.RUNNING, deleting=True), want("c", VMPhase.RUNNING, deleting=True)],
     [have("p", children=("c",)), have("c", clone_kind=CloneKind.INSTANT, parent="p", snapped_free=False)],
     frozenset(), [Destroy("c", present=True, status=StatusFields(phase=VMPhase.RUNNING))]),
    ("parent with snapped-free children goes at once",
     [want("p", VMPhase.RUNNING, deleting=True), synced(want("c"), have("c", parent="p"))],
     [have("p", children=("c",)), have("c", parent="p")], frozenset(),
     [Destroy("p", present=True, status=StatusFields(phase=VMPhase.RUNNING))]),
    ("provider vm without an object is an orphan", [], [have("x")], frozenset(), [DestroyOrphan("x")]),
]


@pytest.mark.parametrize(("desired", "actual", "ready", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan(desired: list[DesiredVM], actual: list[VMInfo], ready: frozenset[str],
              expected: list[Action]) -> None:
    assert plan(desired, actual, ready, NOW) == expected


def test_plan_is_stable_whatever_the_input_order() -> None:
    desired = [want("b"), want("a"), want("c", VMPhase.RUNNING)]
    actual = [have("z"), have("c", VMState.FAILED, message="x")]
    assert plan(desired, actual, now=NOW) == plan(list(reversed(desired)), list(reversed(actual)), now=NOW)
    assert [a.name for a in plan(desired, actual, now=NOW)] == ["a", "b", "c", "z"]


def test_target_status_carries_the_provider_identity() -> None:
    a = have("a", clone_kind=CloneKind.INSTANT, parent="p", snapped_free=False, children=("k2", "k1"))
    st = target_status(want("a"), a, True, NOW)
    assert (st.phase, st.ip, st.provider_id, st.node_name, st.hostname, st.machine_id) == (
        VMPhase.RUNNING, "10.0.0.2", "fake://a", "a", "a", "m-a")
    assert st.clone_kind == "instant" and st.snapped_free is False
    assert st.children == ()  # lineage in the object is the controller's record
    assert st.created_at == NOW - 10 and st.ready_at == NOW
