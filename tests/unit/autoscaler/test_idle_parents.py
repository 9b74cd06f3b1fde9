"""Idle warm parents are paused (quiesced, as Fargo keeps its parents) and stay clone sources.

The rule is pure — `remember` keeps when each parent was last used, `plan`
pauses one idle for `parent_idle_pause_s` — and the reconciler drives it on a
FakeClock, so nothing here sleeps.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from controller.autoscaler.actions import PauseParent, ScaleUp
from controller.autoscaler.executor import Executor
from controller.autoscaler.fit import SchedulerFit
from controller.autoscaler.memory import Memory, remember
from controller.autoscaler.model import PodRef
from controller.autoscaler.observe import snapshot
from controller.autoscaler.plan import plan
from controller.autoscaler.reconciler import DEFAULT_PARENT_IDLE_PAUSE_S, Autoscaler, Options
from controller.autoscaler.testing import T0, make_node, make_pod, make_vm
from cowpod.api.ids import ClassName, VMName
from cowpod.clock import FakeClock
from cowpod.clusterconfig import ClusterConfig, VMClass
from cowpod.v1 import node_pb2, pod_pb2, vm_pb2
from tests.unit.autoscaler.test_executor import FakeApi, RpcError

SMALL = VMClass("small", 1000, 1024**3, labels={"tier": "small"}, max=10)
CONFIG = ClusterConfig(vm_classes=(SMALL,))
IDLE = 30.0
FITS = SchedulerFit()


def parent(*, phase: str = "Running", paused: bool = False, requested: float = T0) -> vm_pb2.VM:
    b = make_vm("small-parent").cls(SMALL).parent().requested(requested)
    b = b.paused() if paused else b.phase(phase)
    return b.obj()


def parent_node() -> node_pb2.Node:
    return make_node("small-parent").ready().taint("cowpod.io/parent", "true").obj()


def child(name: str, at: float) -> vm_pb2.VM:
    return make_vm(name).cls(SMALL).clone_of("small-parent").requested(at).obj()


def observe(memory: Memory, now: float, vms: list[vm_pb2.VM], pods: list[pod_pb2.Pod] | None = None,
            config: ClusterConfig = CONFIG) -> tuple[Memory, list[Any]]:
    """One pass: remember, then plan with the idle pause on."""
    snap = snapshot(pods or [], [parent_node()], vms, now)
    memory = remember(memory, snap, config, now)
    return memory, plan(snap, config, memory, now, FITS, parent_idle_pause_s=IDLE)


def pauses(actions: list[Any]) -> list[PauseParent]:
    return [a for a in actions if isinstance(a, PauseParent)]


def test_a_parent_first_seen_counts_its_idle_time_from_then() -> None:
    # Requested long ago, but this autoscaler (say, just restarted) sees it only now.
    m, acts = observe(Memory(), T0 + 1000, [parent()])
    assert m.parent_last_used == {VMName("small-parent"): T0 + 1000}
    assert pauses(acts) == []
    m, acts = observe(m, T0 + 1029, [parent()])
    assert pauses(acts) == []
    m, acts = observe(m, T0 + 1030, [parent()])
    assert pauses(acts) == [PauseParent(VMName("small-parent"), 30.0)]


def test_a_clone_asked_of_the_parent_restarts_its_idle_time() -> None:
    m, _ = observe(Memory(), T0, [parent()])
    m, acts = observe(m, T0 + 20, [parent(), child("small-a", T0 + 20)])
    assert m.parent_last_used[VMName("small-parent")] == T0 + 20
    # The child goes (scaled down): the parent still counts from its last clone.
    m, acts = observe(m, T0 + 49, [parent()])
    assert pauses(acts) == []
    m, acts = observe(m, T0 + 50, [parent()])
    assert pauses(acts) == [PauseParent(VMName("small-parent"), 30.0)]


def test_a_parent_not_running_yet_or_paused_is_not_idle() -> None:
    m, _ = observe(Memory(), T0, [parent(phase="Creating")])
    m, acts = observe(m, T0 + 100, [parent(phase="Creating")])
    assert m.parent_last_used[VMName("small-parent")] == T0 + 100 and pauses(acts) == []
    # Paused already: nothing to do, and its idle time restarts (an operator's resume
    # gives it a whole idle period).
    m, acts = observe(m, T0 + 200, [parent(paused=True)])
    assert pauses(acts) == [] and m.parent_last_used[VMName("small-parent")] == T0 + 200
    m, acts = observe(m, T0 + 229, [parent()])
    assert pauses(acts) == []


def test_a_parent_cloned_in_this_pass_is_not_paused() -> None:
    m, _ = observe(Memory(), T0, [parent()])
    pod = make_pod("web").req("300m", "64Mi").unschedulable(at=T0 + 99).obj()
    m, acts = observe(m, T0 + 100, [parent()], [pod])
    assert [a for a in acts if isinstance(a, ScaleUp)] == [
        ScaleUp(ClassName("small"), 1, VMName("small-parent"), (PodRef("default", "web"),))
    ]
    assert pauses(acts) == []


def test_a_paused_parent_is_still_the_source_of_instant_clones() -> None:
    m, _ = observe(Memory(), T0, [parent(paused=True)])
    pod = make_pod("web").req("300m", "64Mi").unschedulable(at=T0 + 9).obj()
    _, acts = observe(m, T0 + 10, [parent(paused=True)], [pod])
    assert [a for a in acts if isinstance(a, ScaleUp)] == [
        ScaleUp(ClassName("small"), 1, VMName("small-parent"), (PodRef("default", "web"),))
    ]


@pytest.mark.parametrize("idle", [0.0, -1.0])
def test_zero_never_pauses(idle: float) -> None:
    m, _ = observe(Memory(), T0, [parent()])
    snap = snapshot([], [parent_node()], [parent()], T0 + 10_000)
    m = remember(m, snap, CONFIG, T0 + 10_000)
    assert pauses(plan(snap, CONFIG, m, T0 + 10_000, FITS, parent_idle_pause_s=idle)) == []


def test_no_parent_pausing_without_instant_clones_or_for_unmanaged_vms() -> None:
    off = ClusterConfig(vm_classes=(SMALL,), instant_clones=False)
    m, acts = observe(Memory(), T0, [parent()], config=off)
    _, acts = observe(m, T0 + 100, [parent()], config=off)
    assert pauses(acts) == []
    stranger = make_vm("tpl").cls("other").parent().obj()  # a template of no configured class
    m, _ = observe(Memory(), T0, [parent(), stranger])
    _, acts = observe(m, T0 + 100, [parent(), stranger])
    assert pauses(acts) == [PauseParent(VMName("small-parent"), 100.0)]


async def test_the_reconciler_pauses_an_idle_parent_on_the_fake_clock() -> None:
    clock = FakeClock(start=T0)
    api = FakeApi()
    a = Autoscaler(api, CONFIG, clock=clock, options=Options(leader_elect=False, parent_idle_pause_s=IDLE))
    a.vms.cache[("", "small-parent")] = parent()
    a.nodes.cache[("", "small-parent")] = parent_node()
    assert pauses(list(await a.reconcile_once())) == []
    await clock.advance(IDLE - 1)
    assert pauses(list(await a.reconcile_once())) == []
    await clock.advance(1)
    assert pauses(list(await a.reconcile_once())) == [PauseParent(VMName("small-parent"), IDLE)]
    req = api.requests("vms.SetPaused")
    assert len(req) == 1 and req[0].key.name == "small-parent" and req[0].paused
    events = api.requests("events.Create")
    assert [(e.reason, e.involved_object.name) for e in events] == [("PausedParent", "small-parent")]
    assert "idle for 30s" in events[0].message
    # The VM manager froze it: nothing more to do, however long it stays idle.
    a.vms.cache[("", "small-parent")] = parent(paused=True)
    await clock.advance(600)
    assert pauses(list(await a.reconcile_once())) == []
    assert len(api.requests("vms.SetPaused")) == 1


def test_the_default_idle_pause() -> None:
    assert Options().parent_idle_pause_s == DEFAULT_PARENT_IDLE_PAUSE_S == 30.0


async def test_a_refused_pause_is_logged_and_nothing_else() -> None:
    api = FakeApi()
    api.fail["vms.SetPaused"] = RpcError(grpc.StatusCode.NOT_FOUND, 'vms "small-parent" not found')
    ex = Executor(api, CONFIG, FakeClock())
    out = await ex.execute([PauseParent(VMName("small-parent"), 31.0)])
    assert api.called() == ["vms.SetPaused"]
    assert out.failed_classes == [] and out.created == []
