"""The autoscaler's decisions, table-driven: a cluster in, the actions out.

Each case builds pods, nodes and VMs with the builders, runs the pure planner
with a fixed `now`, and compares the whole action list, so a stray extra
action (a second VM, an event too many) fails the case too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from controller.autoscaler.actions import (
    Action,
    Cordon,
    CreateParent,
    Drain,
    Event,
    ScaleDown,
    ScaleUp,
    TaintParent,
)
from controller.autoscaler.fit import SchedulerFit
from controller.autoscaler.memory import Backoff, Memory
from controller.autoscaler.model import PodRef
from controller.autoscaler.observe import snapshot
from controller.autoscaler.plan import fmt_duration, plan
from controller.autoscaler.testing import T0, make_node, make_pod, make_vm
from cowpod.api.ids import ClassName, NodeName, VMName
from cowpod.clusterconfig import ClusterConfig, VMClass
from cowpod.v1 import node_pb2, pod_pb2, vm_pb2

GiB = 1024**3
SMALL = VMClass("small", 1000, 1 * GiB, labels={"tier": "small"}, max=10)
LARGE = VMClass("large", 4000, 4 * GiB, labels={"tier": "large"}, max=5)
CONFIG = ClusterConfig(vm_classes=(SMALL, LARGE))
NOW = T0 + 100
# The scheduler's own filters: the planner and the scheduler must agree.
FITS = SchedulerFit()


def warm(*classes: VMClass) -> tuple[list[vm_pb2.VM], list[node_pb2.Node]]:
    """Each class's running warm parent, its node Ready and tainted."""
    vms = [make_vm(f"{c.name}-parent").cls(c).parent().obj() for c in classes]
    nodes = [
        make_node(f"{c.name}-parent").ready().taint("cowpod.io/parent", "true").obj() for c in classes
    ]
    return vms, nodes


WARM_VMS, WARM_NODES = warm(SMALL, LARGE)


def pending(name: str, cpu: str = "300m", memory: str = "64Mi", at: float = T0 + 50) -> pod_pb2.Pod:
    return make_pod(name).req(cpu, memory).unschedulable(at=at).obj()


def refs(*names: str) -> tuple[PodRef, ...]:
    return tuple(sorted(PodRef("default", n) for n in names))


@dataclass
class Case:
    name: str
    want: list[Action]
    pods: list[pod_pb2.Pod] = field(default_factory=list)
    nodes: list[node_pb2.Node] = field(default_factory=lambda: list(WARM_NODES))
    vms: list[vm_pb2.VM] = field(default_factory=lambda: list(WARM_VMS))
    config: ClusterConfig = CONFIG
    memory: Memory = field(default_factory=Memory)
    now: float = NOW


def run(case: Case) -> list[Action]:
    snap = snapshot(case.pods, case.nodes, case.vms, case.now)
    return plan(snap, case.config, case.memory, case.now, FITS)


def small_clone(
    name: str, *, ready: bool = True, since: float = T0
) -> tuple[vm_pb2.VM, node_pb2.Node | None]:
    vm = make_vm(name).cls(SMALL).clone_of("small-parent").requested(since - 1).obj()
    node = make_node(name).labels(tier="small", **{"cowpod.io/class": "small"}).ready(since).obj()
    return vm, (node if ready else None)


IDLE_VM, IDLE_NODE = small_clone("small-idle")
assert IDLE_NODE is not None

SCALE_UP_CASES = [
    Case(
        "one pending pod: one instant clone of the cheapest class from its warm parent",
        pods=[pending("web-1")],
        want=[ScaleUp(ClassName("small"), 1, VMName("small-parent"), refs("web-1"))],
    ),
    Case(
        "seven pods of 300m pack three to a small node: three clones, not seven",
        pods=[pending(f"web-{i}") for i in range(7)],
        want=[ScaleUp(ClassName("small"), 3, VMName("small-parent"), refs(*(f"web-{i}" for i in range(7))))],
    ),
    Case(
        "seven pods of 500m: one large (price 8) is cheaper than seven small (price 14)",
        pods=[pending(f"web-{i}", cpu="500m") for i in range(7)],
        want=[ScaleUp(ClassName("large"), 1, VMName("large-parent"), refs(*(f"web-{i}" for i in range(7))))],
    ),
    Case(
        "a pod only the large class can take gets a large VM",
        pods=[pending("big", cpu="2")],
        want=[ScaleUp(ClassName("large"), 1, VMName("large-parent"), refs("big"))],
    ),
    Case(
        "a pod selecting a class's label goes to that class",
        pods=[make_pod("sel").req("100m").selector(tier="large").unschedulable().obj()],
        want=[ScaleUp(ClassName("large"), 1, VMName("large-parent"), refs("sel"))],
    ),
    Case(
        "bigger than any class: an event, never a VM",
        pods=[pending("huge", cpu="16")],
        want=[
            Event(
                "Pod", "default", "huge", "NotTriggerScaleUp",
                "pod bigger than any VM class (requests cpu 16000m, memory 64Mi; "
                "largest class large offers cpu 3900m, memory 4032Mi)",
                "Warning",
            )
        ],
    ),
    Case(
        "an impossible selector: an event naming each class's reason, never a VM",
        pods=[make_pod("nowhere").req("100m").selector(disk="ssd").unschedulable().obj()],
        want=[
            Event(
                "Pod", "default", "nowhere", "NotTriggerScaleUp",
                "pod fits no VM class (small: node(s) didn't match Pod's node affinity/selector; "
                "large: node(s) didn't match Pod's node affinity/selector)",
                "Warning",
            )
        ],
    ),
    Case(
        "an impossible pod does not stop the possible ones",
        pods=[pending("huge", cpu="16"), pending("web-1")],
        want=[
            Event(
                "Pod", "default", "huge", "NotTriggerScaleUp",
                "pod bigger than any VM class (requests cpu 16000m, memory 64Mi; "
                "largest class large offers cpu 3900m, memory 4032Mi)",
                "Warning",
            ),
            ScaleUp(ClassName("small"), 1, VMName("small-parent"), refs("web-1")),
        ],
    ),
    Case(
        "pods not marked Unschedulable by the scheduler are not the autoscaler's business",
        pods=[
            make_pod("fresh").req("100m").obj(),
            make_pod("other").req("100m").unschedulable(reason="X").obj(),
        ],
        want=[],
    ),
    Case(
        "a pod being deleted triggers nothing",
        pods=[make_pod("bye").req("100m").unschedulable().deleting().obj()],
        want=[],
    ),
    Case(
        "two pods asking for the same host port need two nodes",
        pods=[
            make_pod("a").req("100m").host_port(8080).unschedulable().obj(),
            make_pod("b").req("100m").host_port(8080).unschedulable().obj(),
        ],
        want=[ScaleUp(ClassName("small"), 2, VMName("small-parent"), refs("a", "b"))],
    ),
]

IN_FLIGHT_CASES = [
    Case(
        "a clone in flight takes the pending pods: nothing more is made",
        pods=[pending(f"web-{i}") for i in range(3)],
        vms=[*WARM_VMS, make_vm("small-new").cls(SMALL).clone_of("small-parent").phase("Creating").obj()],
        want=[],
    ),
    Case(
        "a clone in flight takes three of five pods: one more clone for the other two",
        pods=[pending(f"web-{i}") for i in range(5)],
        vms=[*WARM_VMS, make_vm("small-new").cls(SMALL).clone_of("small-parent").phase("Running").obj()],
        want=[ScaleUp(ClassName("small"), 1, VMName("small-parent"), refs("web-3", "web-4"))],
    ),
    Case(
        "a node Ready after the scheduler's verdict may still take the pod: wait",
        pods=[pending("web-1", at=T0 + 50)],
        nodes=[*WARM_NODES, make_node("small-x").ready(since=T0 + 90).obj()],
        vms=[*WARM_VMS, small_clone("small-x")[0]],
        want=[],
    ),
    Case(
        "a verdict within a second of the node's Ready may not have seen it: wait",
        pods=[pending("web-1", at=T0 + 90.5)],
        nodes=[*WARM_NODES, make_node("small-x").ready(since=T0 + 90).obj()],
        vms=[*WARM_VMS, small_clone("small-x")[0]],
        want=[],
    ),
    Case(
        "a verdict given after the node was Ready is trusted: scale up",
        pods=[pending("web-1", at=T0 + 95)],
        nodes=[*WARM_NODES, make_node("small-x").ready(since=T0 + 90).obj()],
        vms=[*WARM_VMS, small_clone("small-x")[0]],
        want=[ScaleUp(ClassName("small"), 1, VMName("small-parent"), refs("web-1"))],
    ),
    Case(
        "a Ready node already full takes no more pods",
        pods=[
            pending("web-1", at=T0 + 50),
            make_pod("hog").req("800m").node("small-x").obj(),
        ],
        nodes=[*WARM_NODES, make_node("small-x").ready(since=T0 + 90).obj()],
        vms=[*WARM_VMS, small_clone("small-x")[0]],
        want=[ScaleUp(ClassName("small"), 1, VMName("small-parent"), refs("web-1"))],
    ),
    Case(
        "a node Ready long ago (past newNodeGrace) is not counted on",
        pods=[pending("web-1", at=T0 + 50)],
        nodes=[*WARM_NODES, make_node("old").ready(since=T0 + 10).obj()],
        now=T0 + 100,
        config=CONFIG.replace(new_node_grace_s=30.0),
        want=[ScaleUp(ClassName("small"), 1, VMName("small-parent"), refs("web-1"))],
    ),
]

PARENT_CASES = [
    Case(
        "no parent yet: create it, and full-clone now rather than wait for it",
        pods=[pending("web-1")],
        vms=[WARM_VMS[1]],
        nodes=[WARM_NODES[1]],
        want=[CreateParent(ClassName("small")), ScaleUp(ClassName("small"), 1, None, refs("web-1"))],
    ),
    Case(
        "a parent still booting is not cloned from: full clone",
        pods=[pending("web-1")],
        vms=[make_vm("small-parent").cls(SMALL).parent().phase("Creating").obj(), WARM_VMS[1]],
        nodes=[WARM_NODES[1]],
        want=[ScaleUp(ClassName("small"), 1, None, refs("web-1"))],
    ),
    Case(
        "a paused parent (paused for a snapshot) is still cloned from",
        pods=[pending("web-1")],
        vms=[make_vm("small-parent").cls(SMALL).parent().phase("Paused").obj(), WARM_VMS[1]],
        want=[ScaleUp(ClassName("small"), 1, VMName("small-parent"), refs("web-1"))],
    ),
    Case(
        "a parent's node without the taint gets it",
        nodes=[make_node("small-parent").ready().obj(), WARM_NODES[1]],
        want=[TaintParent(NodeName("small-parent"))],
    ),
    Case(
        "instant clones off: no parents, full clones",
        pods=[pending("web-1")],
        vms=[],
        nodes=[],
        config=CONFIG.replace(instant_clones=False),
        want=[ScaleUp(ClassName("small"), 1, None, refs("web-1"))],
    ),
    Case(
        "a class with parent: false gets no parent",
        vms=[],
        nodes=[],
        config=ClusterConfig(vm_classes=(VMClass("small", 1000, GiB, parent=False),)),
        want=[],
    ),
    Case(
        "a failed parent is destroyed and replaced",
        vms=[make_vm("small-parent").cls(SMALL).parent().phase("Failed", "exit 137").obj(), WARM_VMS[1]],
        nodes=[WARM_NODES[1]],
        want=[
            Event("VM", "", "small-parent", "ScaleUpFailed",
                  "VM small-parent failed: exit 137; destroying it", "Warning"),
            ScaleDown(VMName("small-parent"), "VM small-parent failed: exit 137"),
            CreateParent(ClassName("small")),
        ],
    ),
]

LIMIT_CASES = [
    Case(
        "class max: only as many clones as the class may still have, then an event",
        pods=[pending(f"w-{i}", cpu="600m") for i in range(4)],
        config=ClusterConfig(vm_classes=(VMClass("small", 1000, GiB, max=2),)),
        want=[
            ScaleUp(ClassName("small"), 2, VMName("small-parent"), refs("w-0", "w-1")),
            Event("Pod", "default", "w-2", "NotTriggerScaleUp",
                  "no VM class may grow: small: class small max 2 reached"),
            Event("Pod", "default", "w-3", "NotTriggerScaleUp",
                  "no VM class may grow: small: class small max 2 reached"),
        ],
    ),
    Case(
        "maxVMs counts every live VM, parents and unmanaged ones (vm-1) too",
        pods=[pending("w-0", cpu="600m"), pending("w-1", cpu="600m")],
        vms=[*WARM_VMS, make_vm("vm-1").cls("", cpu=1, memory="1Gi").obj()],
        nodes=[*WARM_NODES, make_node("vm-1").ready(since=T0 - 3600).obj()],
        config=CONFIG.replace(max_vms=4),
        want=[
            ScaleUp(ClassName("small"), 1, VMName("small-parent"), refs("w-0")),
            Event("Pod", "default", "w-1", "NotTriggerScaleUp",
                  "no VM class may grow: small: maxVMs 4 reached; large: maxVMs 4 reached"),
        ],
    ),
    Case(
        "maxTotalCPU leaves room for a small but not a large VM",
        pods=[pending("w-0", cpu="2"), pending("w-1", cpu="600m")],
        config=CONFIG.replace(max_total_cpu_millis=5000 + 1000),
        want=[
            ScaleUp(ClassName("small"), 1, VMName("small-parent"), refs("w-1")),
            Event("Pod", "default", "w-0", "NotTriggerScaleUp",
                  "no VM class may grow: large: maxTotalCPU reached"),
        ],
    ),
    Case(
        "a class in cooldown after a failure is skipped; another class that fits is used",
        pods=[pending("w-0")],
        memory=Memory(backoff={ClassName("small"): Backoff(1, NOW + 30, NOW - 1)}),
        want=[ScaleUp(ClassName("large"), 1, VMName("large-parent"), refs("w-0"))],
    ),
    Case(
        "every class that fits in cooldown: wait, and say so",
        pods=[pending("w-0", cpu="2")],
        memory=Memory(backoff={ClassName("large"): Backoff(2, NOW + 60, NOW)}),
        want=[
            Event("Pod", "default", "w-0", "NotTriggerScaleUp",
                  "no VM class may grow: large: in cooldown after a failed clone (retry in 1m)"),
        ],
    ),
]

MIN_CASES = [
    Case(
        "below a class's minimum: clones made up to it",
        config=CONFIG.replace(vm_classes=(VMClass("small", 1000, GiB, min=2, max=5), LARGE)),
        want=[ScaleUp(ClassName("small"), 2, VMName("small-parent"), (), "below minimum")],
    ),
    Case(
        "clones made for the minimum take pending pods too",
        pods=[pending("w-0")],
        config=CONFIG.replace(vm_classes=(VMClass("small", 1000, GiB, min=1, max=5), LARGE)),
        want=[ScaleUp(ClassName("small"), 1, VMName("small-parent"), (), "below minimum")],
    ),
]

BROKEN_CASES = [
    Case(
        "a clone that failed is destroyed with a warning",
        vms=[
            *WARM_VMS,
            make_vm("small-bad").cls(SMALL).clone_of("small-parent").phase("Failed", "oom").obj(),
        ],
        want=[
            Event("VM", "", "small-bad", "ScaleUpFailed",
                  "VM small-bad failed: oom; destroying it", "Warning"),
            ScaleDown(VMName("small-bad"), "VM small-bad failed: oom"),
        ],
    ),
    Case(
        "a clone whose node never became Ready within provisionTimeout is destroyed",
        vms=[*WARM_VMS, make_vm("small-slow").cls(SMALL).clone_of("small-parent").requested(T0).obj()],
        now=T0 + 301,
        want=[
            Event("VM", "", "small-slow", "ScaleUpFailed",
                  "node of VM small-slow not Ready for 5m; destroying it", "Warning"),
            ScaleDown(VMName("small-slow"), "node of VM small-slow not Ready for 5m"),
        ],
    ),
    Case(
        "a VM of an unknown class is never touched",
        vms=[*WARM_VMS, make_vm("vm-1").cls("default").phase("Failed").obj()],
        want=[],
    ),
]


def idle(
    name: str,
    want: list[Action],
    *pods: pod_pb2.Pod,
    since: float = NOW - 600,
    config: ClusterConfig = CONFIG,
    memory: Memory | None = None,
) -> Case:
    """A fleet with one clone, small-idle, whose node has been empty since `since`."""
    return Case(
        name,
        want,
        pods=list(pods),
        vms=[*WARM_VMS, IDLE_VM],
        nodes=[*WARM_NODES, IDLE_NODE],
        config=config,
        memory=memory or Memory(unneeded_since={NodeName("small-idle"): since}),
    )


SCALE_DOWN_WANT: list[Action] = [
    Cordon(NodeName("small-idle")),
    Drain(NodeName("small-idle")),
    ScaleDown(VMName("small-idle"), "node small-idle unneeded for 10m", NodeName("small-idle")),
    Event("Node", "", "small-idle", "ScaleDown",
          "node small-idle unneeded for 10m; destroying VM small-idle"),
]

SCALE_DOWN_CASES = [
    idle("a clone empty for scaleDownUnneeded is cordoned, drained, destroyed", SCALE_DOWN_WANT),
    idle("empty for less than scaleDownUnneeded: kept", [], since=NOW - 599),
    idle(
        "per-node system pods do not keep a clone",
        SCALE_DOWN_WANT,
        make_pod("exporter").system().node("small-idle").obj(),
    ),
    idle(
        "never below the class's minimum",
        [],
        config=CONFIG.replace(vm_classes=(VMClass("small", 1000, GiB, min=1, max=5), LARGE)),
    ),
    idle(
        "a warm parent is never scaled down",
        [],
        memory=Memory(unneeded_since={NodeName("small-parent"): NOW - 9999}),
    ),
    idle(
        "not while the class is scaling up in the same pass",
        [ScaleUp(ClassName("small"), 1, VMName("small-parent"), refs("web-9"))],
        pending("web-9", at=T0 + 99),
    ),
]


ALL = (
    SCALE_UP_CASES + IN_FLIGHT_CASES + PARENT_CASES + LIMIT_CASES
    + MIN_CASES + BROKEN_CASES + SCALE_DOWN_CASES
)


@pytest.mark.parametrize("case", ALL, ids=[c.name for c in ALL])
def test_plan(case: Case) -> None:
    assert run(case) == case.want


def test_two_idle_clones_one_min_removes_the_older() -> None:
    a_vm, a_node = small_clone("small-a")
    b_vm, b_node = small_clone("small-b")
    assert a_node is not None and b_node is not None
    case = Case(
        "",
        want=[],
        vms=[*WARM_VMS, a_vm, b_vm],
        nodes=[*WARM_NODES, a_node, b_node],
        config=CONFIG.replace(vm_classes=(VMClass("small", 1000, GiB, min=1, max=5), LARGE)),
        memory=Memory(unneeded_since={NodeName("small-a"): NOW - 700, NodeName("small-b"): NOW - 900}),
    )
    got = run(case)
    assert [a for a in got if isinstance(a, ScaleDown)] == [
        ScaleDown(VMName("small-b"), "node small-b unneeded for 15m", NodeName("small-b"))
    ]


def test_many_pods_place_all_with_mixed_classes() -> None:
    """Ten tiny pods and one that needs a large VM: the tiny ones are not
    forced onto larges, nor the big one left behind."""
    pods = [pending(f"t-{i}", cpu="100m") for i in range(10)] + [pending("big", cpu="3")]
    got = run(Case("", want=[], pods=pods))
    ups = [a for a in got if isinstance(a, ScaleUp)]
    placed = sorted(r for u in ups for r in u.for_pods)
    assert placed == sorted(PodRef("default", p.metadata.name) for p in pods)
    assert {u.vm_class for u in ups} <= {"small", "large"}
    assert sum(u.count for u in ups if u.vm_class == "large") == 1
    assert not [a for a in got if isinstance(a, Event)]


@pytest.mark.parametrize(
    ("seconds", "text"), [(600, "10m"), (90, "1m30s"), (1.117, "1.1s"), (3600 + 61, "1h1m1s"), (45, "45s")]
)
def test_durations_read_like_go(seconds: float, text: str) -> None:
    assert fmt_duration(seconds) == text
