"""The VM manager's executor against the in-memory provider and a recording API."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import Any

from cowpod.api.phases import VMPhase
from cowpod.clock import FakeClock
from cowpod.errors import FailedPrecondition
from cowpod.v1 import meta_pb2, vm_pb2
from hypervisor.manager import Executor, apply_status, desired_of
from hypervisor.metrics import VMMetrics
from hypervisor.plan import (
    Create,
    Destroy,
    DestroyOrphan,
    Fail,
    SetPaused,
    SnapFree,
    StatusFields,
    SyncStatus,
    plan,
)
from hypervisor.provider import VMSpecInfo, VMState
from hypervisor.providers.fake import FakeProvider
from hypervisor.testing import full_clone, instant_clone


@dataclass
class RecordingApi:
    statuses: dict[str, list[StatusFields]] = field(default_factory=dict)
    finalized: list[str] = field(default_factory=list)
    nodes_deleted: list[str] = field(default_factory=list)
    events: list[tuple[str, str, bool]] = field(default_factory=list)

    async def update_status(self, name: str, status: StatusFields) -> None:
        self.statuses.setdefault(name, []).append(status)

    async def finalize(self, name: str) -> None:
        self.finalized.append(name)

    async def delete_node(self, name: str) -> None:
        self.nodes_deleted.append(name)

    async def event(self, vm: str, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append((vm, reason, warning))


def spec(name: str, parent: str = "") -> VMSpecInfo:
    return VMSpecInfo(name=name, class_name="small", cpu_millis=500, memory_bytes=256 << 20, parent=parent)


def setup() -> tuple[FakeProvider, RecordingApi, Executor]:
    clock = FakeClock()
    p = FakeProvider(clock)
    api = RecordingApi()
    return p, api, Executor(p, api, clock)


async def test_create_full_clone_reports_creating_then_running() -> None:
    p, api, ex = setup()
    await ex.execute(Create("a", spec("a")))
    phases = [s.phase for s in api.statuses["a"]]
    assert phases == ["Creating", VMPhase.RUNNING]
    final = api.statuses["a"][-1]
    info = await p.get("a")
    assert (final.ip, final.provider_id, final.node_name, final.clone_kind) == (
        info.ip, info.provider_id, "a", "full")
    assert final.created_at is not None
    assert ("a", "Created", False) in api.events


async def test_create_instant_clone_records_lineage() -> None:
    p, api, ex = setup()
    await ex.execute(Create("p", spec("p")))
    await ex.execute(Create("c", spec("c", "p"), parent="p"))
    c = await p.get("c")
    assert c.parent == "p" and not c.snapped_free
    assert (await p.get("p")).children == ("c",)
    assert api.statuses["c"][-1].clone_kind == "instant"


async def test_create_failure_marks_the_vm_failed() -> None:
    p, api, ex = setup()
    p.fail_next_create = FailedPrecondition("image missing")
    await ex.execute(Create("a", spec("a")))
    last = api.statuses["a"][-1]
    assert last.phase == VMPhase.FAILED and "image missing" in last.message
    assert ("a", "CreateFailed", True) in api.events


async def test_destroy_tears_down_then_finalizes() -> None:
    p, api, ex = setup()
    await full_clone(p, spec("a"))
    p.add_nested("a", "pod-x")
    await ex.execute(Destroy("a", present=True, status=StatusFields(phase=VMPhase.RUNNING, ip="10.0.0.2")))
    assert api.statuses["a"] == [StatusFields(phase="Destroying", ip="10.0.0.2")]
    assert await p.list() == []
    assert await p.nested_containers("a") == []
    assert api.nodes_deleted == ["a"] and api.finalized == ["a"]


async def test_fail_cleans_up_a_dead_vm_and_its_node() -> None:
    p, api, ex = setup()
    await full_clone(p, spec("a"))
    p.crash("a")
    await ex.execute(Fail("a", "exited with code 137", present=True))
    assert api.statuses["a"][-1].phase == VMPhase.FAILED
    assert api.nodes_deleted == ["a"]
    assert await p.list() == []


async def test_fail_of_a_parent_with_dependent_children_powers_it_off() -> None:
    p, _api, ex = setup()
    await full_clone(p, spec("p"))
    await instant_clone(p, "p", spec("c", "p"))
    p.crash("p")
    await ex.execute(Fail("p", "died", present=True))
    assert (await p.get("p")).state == VMState.STOPPED
    assert (await p.get("c")).state == VMState.RUNNING


async def test_pause_resume_snap_free_orphans() -> None:
    p, _api, ex = setup()
    await full_clone(p, spec("p"))
    await instant_clone(p, "p", spec("c", "p"))
    await ex.execute(SetPaused("p", True))
    assert (await p.get("p")).state == VMState.PAUSED
    await ex.execute(SetPaused("p", False))
    assert (await p.get("p")).state == VMState.RUNNING
    await ex.execute(SnapFree("c"))
    assert (await p.get("c")).snapped_free
    await ex.execute(DestroyOrphan("p"))
    assert [v.name for v in await p.list()] == ["c"]


async def test_sync_status_writes_the_planned_status() -> None:
    _, api, ex = setup()
    st = StatusFields(phase=VMPhase.RUNNING, ip="1.2.3.4")
    await ex.execute(SyncStatus("a", st))
    assert api.statuses["a"] == [st]


async def test_plan_and_execute_converge() -> None:
    """Repeating plan+execute over the fake reaches a fixed point with no actions left."""
    p, api, ex = setup()
    objs = {
        "p": vm_pb2.VM(metadata=meta_pb2.ObjectMeta(name="p"), spec=vm_pb2.VMSpec(
            class_name="small", cpu_millis=500, memory_bytes=256 << 20)),
        "c": vm_pb2.VM(metadata=meta_pb2.ObjectMeta(name="c"), spec=vm_pb2.VMSpec(
            class_name="small", cpu_millis=500, memory_bytes=256 << 20, parent="p")),
    }
    for _ in range(6):
        actions = plan([desired_of(v) for v in objs.values()], await p.list(), frozenset({"p", "c"}), 5.0)
        if not actions:
            break
        for a in actions:
            await ex.execute(a)
            if a.name in api.statuses:
                objs[a.name] = apply_status(objs[a.name], api.statuses[a.name][-1])
    else:
        raise AssertionError(f"did not converge: {actions}")
    assert objs["c"].status.phase == VMPhase.RUNNING and objs["c"].status.clone_kind == "instant"
    assert objs["p"].status.HasField("ready_at")
    assert (await p.get("p")).children == ("c",)


async def test_clone_and_destroy_durations_by_kind_and_outcome() -> None:
    clock = FakeClock()
    p, api, metrics = FakeProvider(clock), RecordingApi(), VMMetrics()
    kinds = {"kid": "instant"}
    ex = Executor(p, api, clock, metrics, lambda name: kinds.get(name, ""))
    await ex.execute(Create("mom", spec("mom")))
    await ex.execute(Create("kid", spec("kid", parent="mom"), parent="mom"))
    await ex.execute(Create("lost", spec("lost", parent="nobody"), parent="nobody"))  # refused
    await ex.execute(Destroy("kid", present=True, status=None))

    def count(name: str, kind: str, outcome: str) -> float:
        got = metrics.registry.get_sample_value(f"{name}_count", {"kind": kind, "outcome": outcome})
        return got or 0.0

    assert count("cowpod_vm_clone_seconds", "full", "ok") == 1
    assert count("cowpod_vm_clone_seconds", "instant", "ok") == 1
    assert count("cowpod_vm_clone_seconds", "instant", "error") == 1
    assert count("cowpod_vm_destroy_seconds", "instant", "ok") == 1


async def test_a_clone_finishing_while_the_provider_is_listed_is_not_taken_for_vanished() -> None:
    """The list can predate a clone whose Running status the cache already holds
    (a warm shell is named at the very end of a clone): that pass must leave the
    VM alone rather than mark it Failed."""
    import asyncio
    import types

    from cowpod.watches import Watches
    from hypervisor.guest import GuestBootstrap
    from hypervisor.manager import VMManager
    from hypervisor.provider import VMInfo

    clock = FakeClock()
    api = RecordingApi()
    release, cloning = asyncio.Event(), asyncio.Event()
    first: list[asyncio.Future[list[Any]]] = []

    class SlowCloneListsBeforeIt(FakeProvider):
        """The clone of "c" waits for `release`; a list taken meanwhile lets the clone end
        (and the cache show it Running) before it returns what it saw before."""

        async def full_clone(self, spec: VMSpecInfo, guest: GuestBootstrap) -> VMInfo:
            cloning.set()
            await release.wait()
            return await super().full_clone(spec, guest)

        async def list(self) -> list[VMInfo]:
            before = await super().list()
            if cloning.is_set() and not release.is_set():
                release.set()
                await first[0]  # the first pass, and with it the clone, is over
                mgr.vms.cache[("", "c")] = apply_status(objs["c"], api.statuses["c"][-1])
            return before

    p = SlowCloneListsBeforeIt(clock)
    client = types.SimpleNamespace()
    mgr = VMManager(client, "fake", pathlib.Path("/nonexistent"), clock, provider=p,  # type: ignore[arg-type]
                    watches=Watches.over(client))
    mgr._executor = Executor(p, api, clock)
    objs = {"c": vm_pb2.VM(metadata=meta_pb2.ObjectMeta(name="c"), spec=vm_pb2.VMSpec(
        class_name="small", cpu_millis=500, memory_bytes=256 << 20))}
    mgr.vms.cache[("", "c")] = objs["c"]
    # The first pass starts the clone; it is held until the second pass lists the provider.
    mgr.driver.mark_all()
    first.append(asyncio.ensure_future(mgr.reconcile_once()))
    await cloning.wait()
    second = await mgr.reconcile_once()
    assert not any(isinstance(a, Fail) for a in second)
    assert "c" in mgr.driver.dirty  # its plan from that pass was dropped; the next one decides
    # The next pass lists after the clone: the VM is there, nothing to fix.
    assert not any(isinstance(a, Fail) for a in await mgr.reconcile_once())
    assert api.statuses["c"][-1].phase == VMPhase.RUNNING
