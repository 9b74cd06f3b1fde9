"""What the autoscaler remembers between passes: empty-since times and back-off."""

from __future__ import annotations

from controller.autoscaler.memory import Backoff, Memory, record_failure, remember
from controller.autoscaler.observe import snapshot
from controller.autoscaler.testing import T0, make_node, make_pod, make_vm
from cowpod.api.ids import ClassName, NodeName, VMName
from cowpod.clusterconfig import ClusterConfig, VMClass
from cowpod.v1 import node_pb2, pod_pb2, vm_pb2

SMALL = VMClass("small", 1000, 1024**3)
CONFIG = ClusterConfig(vm_classes=(SMALL,), cooldown_s=30, max_backoff_s=100)


def fleet(
    pods: list[pod_pb2.Pod] | None = None,
    *,
    ready: bool = True,
    extra_vms: list[vm_pb2.VM] | None = None,
) -> tuple[list[pod_pb2.Pod], list[node_pb2.Node], list[vm_pb2.VM]]:
    vms = [make_vm("small-a").cls(SMALL).clone_of("small-parent").obj(), *(extra_vms or [])]
    nodes = [make_node("small-a").ready(T0).obj()] if ready else []
    return pods or [], nodes, vms


def observe(memory: Memory, now: float, *parts: object) -> Memory:
    pods, nodes, vms = parts
    snap = snapshot(pods, nodes, vms, now)  # type: ignore[arg-type]
    return remember(memory, snap, CONFIG, now)


def test_empty_since_is_the_first_time_seen_empty_and_survives_passes() -> None:
    m = observe(Memory(), T0 + 10, *fleet())
    assert m.unneeded_since == {NodeName("small-a"): T0 + 10}
    m = observe(m, T0 + 20, *fleet())
    assert m.unneeded_since == {NodeName("small-a"): T0 + 10}


def test_a_pod_resets_empty_since_and_system_or_finished_pods_do_not() -> None:
    busy = [make_pod("w").node("small-a").obj()]
    m = observe(Memory(), T0 + 10, *fleet())
    m = observe(m, T0 + 20, *fleet(busy))
    assert m.unneeded_since == {}
    m = observe(m, T0 + 30, *fleet([make_pod("w").node("small-a", phase="Succeeded").obj()]))
    assert m.unneeded_since == {NodeName("small-a"): T0 + 30}
    m = observe(m, T0 + 40, *fleet([make_pod("ds").system().node("small-a").obj()]))
    assert m.unneeded_since == {NodeName("small-a"): T0 + 30}


def test_a_node_not_ready_is_not_counted_as_empty() -> None:
    assert observe(Memory(), T0 + 10, *fleet(ready=False)).unneeded_since == {}


def test_failures_back_off_exponentially_up_to_the_cap() -> None:
    m = Memory()
    untils = []
    for i in range(4):
        m = record_failure(m, "small", CONFIG, T0 + i)
        untils.append(m.backoff[ClassName("small")].until - (T0 + i))
    assert untils == [30, 60, 100, 100]
    assert m.backoff[ClassName("small")].failures == 4


def test_a_failed_vm_is_counted_once() -> None:
    bad = make_vm("small-bad").cls(SMALL).clone_of("small-parent").phase("Failed").obj()
    m = observe(Memory(), T0 + 10, *fleet(extra_vms=[bad]))
    m = observe(m, T0 + 11, *fleet(extra_vms=[bad]))
    assert m.backoff[ClassName("small")].failures == 1
    assert m.failures_seen == {VMName("small-bad")}
    # Once the VM is gone from the API, it is forgotten.
    m = observe(m, T0 + 12, *fleet())
    assert m.failures_seen == frozenset()


def test_a_ready_node_after_the_cooldown_clears_the_backoff() -> None:
    m = Memory(backoff={ClassName("small"): Backoff(2, T0 + 50, T0 - 10)})
    # Still cooling down: kept even though a node is Ready.
    assert ClassName("small") in observe(m, T0 + 40, *fleet()).backoff
    assert observe(m, T0 + 60, *fleet()).backoff == {}


def test_backoff_left() -> None:
    m = Memory(backoff={ClassName("small"): Backoff(1, T0 + 30, T0)})
    assert m.backoff_left("small", T0 + 10) == 20
    assert m.backoff_left("small", T0 + 40) == 0
    assert m.backoff_left("large", T0) == 0
