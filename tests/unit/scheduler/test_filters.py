"""Each filter plugin's decisions, table-driven over builders."""

from __future__ import annotations

import pytest

from cowpod.v1 import pod_pb2
from scheduler.convert import pod_info
from scheduler.framework.status import Code
from scheduler.plugins.node_affinity import NodeAffinity
from scheduler.plugins.node_ports import NodePorts
from scheduler.plugins.node_ready import NodeReady
from scheduler.plugins.node_resources_fit import NodeResourcesFit
from scheduler.plugins.node_unschedulable import NodeUnschedulable
from scheduler.plugins.taint_toleration import TaintToleration
from scheduler.plugins.topology_spread import MISSING_LABEL, SKEW, PodTopologySpread
from tests.unit.scheduler.builders import PodBuilder, cache_of, make_node, make_pod
from tests.unit.scheduler.helpers import filter_all


@pytest.mark.parametrize(
    ("pod", "used", "alloc", "want"),
    [
        (make_pod().req(cpu="500m"), [], ("1", "1Gi", 110), ()),
        (make_pod().req(cpu="1"), [], ("1", "1Gi", 110), ()),
        (make_pod().req(cpu="1001m"), [], ("1", "1Gi", 110), ("Insufficient cpu",)),
        (make_pod().req(memory="512Mi"), [("600m", "600Mi")], ("1", "1Gi", 110), ("Insufficient memory",)),
        (
            make_pod().req(cpu="500m", memory="512Mi"),
            [("600m", "600Mi")],
            ("1", "1Gi", 110),
            ("Insufficient cpu", "Insufficient memory"),
        ),
        (make_pod(), [("1", "1Gi")], ("1", "1Gi", 110), ()),  # zero request fits a full node
        (make_pod(), [("0", "0")], ("1", "1Gi", 1), ("Too many pods",)),
    ],
)
def test_node_resources_fit(
    pod: PodBuilder, used: list[tuple[str, str]], alloc: tuple[str, str, int], want: tuple[str, ...]
) -> None:
    bound = tuple(make_pod(f"u{i}").req(cpu=c, memory=m).node("n1").build() for i, (c, m) in enumerate(used))
    cache = cache_of(make_node("n1").alloc(*alloc), pods=bound)
    st = filter_all(NodeResourcesFit(), pod.build(), cache)["n1"]
    assert st.reasons == want
    assert st.code == (Code.SUCCESS if not want else Code.UNSCHEDULABLE)


@pytest.mark.parametrize(
    ("pod", "used", "disk", "want"),
    [
        (make_pod().req(disk="1Gi"), [], "2Gi", ()),
        (make_pod().req(disk="2Gi"), [], "2Gi", ()),  # exactly full fits
        (make_pod().req(disk="3Gi"), [], "2Gi", ("Insufficient ephemeral-storage",)),
        (make_pod().req(disk="1Gi"), ["1536Mi"], "2Gi", ("Insufficient ephemeral-storage",)),
        (
            make_pod().req(memory="2Gi", disk="3Gi"),
            [],
            "2Gi",
            ("Insufficient memory", "Insufficient ephemeral-storage"),
        ),
        (make_pod(), ["2Gi"], "2Gi", ()),  # no disk request fits a full disk
        (make_pod().req(disk="100Gi"), [], 0, ()),  # a node that reports no disk is not checked
    ],
)
def test_node_resources_fit_ephemeral_storage(
    pod: PodBuilder, used: list[str], disk: str | int, want: tuple[str, ...]
) -> None:
    """ephemeral-storage requests count against the node's disk like memory against its memory."""
    bound = tuple(make_pod(f"u{i}").req(disk=d).node("n1").build() for i, d in enumerate(used))
    cache = cache_of(make_node("n1").alloc("1", "1Gi", 110, disk), pods=bound)
    st = filter_all(NodeResourcesFit(), pod.build(), cache)["n1"]
    assert st.reasons == want
    assert st.code == (Code.SUCCESS if not want else Code.UNSCHEDULABLE)


@pytest.mark.parametrize(
    ("pod", "node", "ok"),
    [
        (make_pod(), make_node(), True),
        (make_pod().selector("disk", "ssd"), make_node().label("disk", "ssd"), True),
        (make_pod().selector("disk", "ssd"), make_node().label("disk", "hdd"), False),
        (make_pod().selector("disk", "ssd"), make_node(), False),
        (make_pod().affinity(("zone", "In", ("a", "b"))), make_node().label("zone", "b"), True),
        (make_pod().affinity(("zone", "In", ("a", "b"))), make_node().label("zone", "c"), False),
        (make_pod().affinity(("zone", "NotIn", ("a",))), make_node().label("zone", "c"), True),
        (make_pod().affinity(("zone", "NotIn", ("a",))), make_node(), True),
        (make_pod().affinity(("zone", "NotIn", ("a",))), make_node().label("zone", "a"), False),
        (make_pod().affinity(("gpu", "Exists", ())), make_node().label("gpu", "t4"), True),
        (make_pod().affinity(("gpu", "Exists", ())), make_node(), False),
        (make_pod().affinity(("gpu", "DoesNotExist", ())), make_node(), True),
        (make_pod().affinity(("gpu", "DoesNotExist", ())), make_node().label("gpu", "t4"), False),
        (make_pod().affinity(("cores", "Gt", ("4",))), make_node().label("cores", "8"), True),
        (make_pod().affinity(("cores", "Lt", ("4",))), make_node().label("cores", "8"), False),
        # Terms are ORed, expressions within a term ANDed.
        (
            make_pod().affinity(("zone", "In", ("a",))).affinity(("gpu", "Exists", ())),
            make_node().label("gpu", "1"),
            True,
        ),
        (
            make_pod().affinity(("zone", "In", ("a",)), ("gpu", "Exists", ())),
            make_node().label("gpu", "1"),
            False,
        ),
        # nodeSelector and affinity must both hold.
        (
            make_pod().selector("disk", "ssd").affinity(("zone", "In", ("a",))),
            make_node().label("zone", "a"),
            False,
        ),
    ],
)
def test_node_affinity(pod: PodBuilder, node: object, ok: bool) -> None:
    st = filter_all(NodeAffinity(), pod.build(), cache_of(node))["n1"]  # type: ignore[arg-type]
    assert st.ok is ok
    if not ok:
        assert st.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE
        assert st.reasons == ("node(s) didn't match Pod's node affinity/selector",)


@pytest.mark.parametrize(
    ("pod", "node", "reason"),
    [
        (make_pod(), make_node(), None),
        (make_pod(), make_node().taint("dedicated", "gpu"), "node(s) had untolerated taint {dedicated: gpu}"),
        (
            make_pod().toleration("dedicated", "Equal", "gpu", "NoSchedule"),
            make_node().taint("dedicated", "gpu"),
            None,
        ),
        (make_pod().toleration("dedicated", "Equal", "gpu"), make_node().taint("dedicated", "gpu"), None),
        (make_pod().toleration("dedicated", "Exists"), make_node().taint("dedicated", "gpu"), None),
        (make_pod().toleration(op="Exists"), make_node().taint("a").taint("b", "c", "NoExecute"), None),
        (
            make_pod().toleration("dedicated", "Equal", "cpu"),
            make_node().taint("dedicated", "gpu"),
            "node(s) had untolerated taint {dedicated: gpu}",
        ),
        (
            make_pod().toleration("dedicated", "Exists", effect="NoExecute"),
            make_node().taint("dedicated", "gpu", "NoSchedule"),
            "node(s) had untolerated taint {dedicated: gpu}",
        ),
        (make_pod(), make_node().taint("soft", "x", "PreferNoSchedule"), None),
        (
            make_pod(),
            make_node().taint("evict", "now", "NoExecute"),
            "node(s) had untolerated taint {evict: now}",
        ),
    ],
)
def test_taint_toleration(pod: PodBuilder, node: object, reason: str | None) -> None:
    st = filter_all(TaintToleration(), pod.build(), cache_of(node))["n1"]  # type: ignore[arg-type]
    assert st.reasons == (() if reason is None else (reason,))


def test_unschedulable_and_ready() -> None:
    cache = cache_of(make_node("ok"), make_node("cordoned").cordon(), make_node("down").not_ready())
    got = filter_all(NodeUnschedulable(), make_pod().build(), cache)
    assert {n: s.ok for n, s in got.items()} == {"ok": True, "cordoned": False, "down": True}
    assert got["cordoned"].reasons == ("node(s) were unschedulable",)
    tolerant = make_pod().toleration("node.kubernetes.io/unschedulable", "Exists").build()
    assert filter_all(NodeUnschedulable(), tolerant, cache)["cordoned"].ok
    ready = filter_all(NodeReady(), make_pod().build(), cache)
    assert {n: s.ok for n, s in ready.items()} == {"ok": True, "cordoned": True, "down": False}


@pytest.mark.parametrize(
    ("want", "have", "ok"),
    [
        ((8080, "TCP", ""), (8080, "TCP", ""), False),
        ((8080, "TCP", ""), (8081, "TCP", ""), True),
        ((8080, "UDP", ""), (8080, "TCP", ""), True),
        ((8080, "TCP", "10.0.0.1"), (8080, "TCP", "10.0.0.2"), True),
        ((8080, "TCP", "10.0.0.1"), (8080, "TCP", "0.0.0.0"), False),
        ((8080, "TCP", ""), (8080, "TCP", "10.0.0.2"), False),
    ],
)
def test_node_ports(want: tuple[int, str, str], have: tuple[int, str, str], ok: bool) -> None:
    bound = make_pod("b").host_port(*have).node("n1").build()
    pod = make_pod().host_port(*want).build()
    st = filter_all(NodePorts(), pod, cache_of(make_node("n1"), pods=(bound,)))["n1"]
    assert st.ok is ok
    assert NodePorts().skip(make_pod().build())


def test_node_ports_freed_when_pod_leaves() -> None:
    bound = make_pod("b").host_port(80).node("n1").build()
    cache = cache_of(make_node("n1"), pods=(bound,))
    pod = make_pod().host_port(80).build()
    assert not filter_all(NodePorts(), pod, cache)["n1"].ok
    cache.remove_pod(bound.uid)
    assert filter_all(NodePorts(), pod, cache)["n1"].ok


def test_topology_spread_max_skew() -> None:
    # zone a holds 2 web pods, zone b 1, zone c 0 -> min 0; with max_skew 1 only c fits.
    nodes = [
        make_node("a1").label("zone", "a"),
        make_node("a2").label("zone", "a"),
        make_node("b1").label("zone", "b"),
        make_node("c1").label("zone", "c"),
        make_node("nolabel"),
    ]
    bound = (
        make_pod("w1").label("app", "web").node("a1").build(),
        make_pod("w2").label("app", "web").node("a2").build(),
        make_pod("w3").label("app", "web").node("b1").build(),
        make_pod("other").label("app", "db").node("c1").build(),
    )
    pod = make_pod().label("app", "web").spread("zone", 1, app="web").build()
    got = filter_all(PodTopologySpread(), pod, cache_of(*nodes, pods=bound))
    assert {n: s.ok for n, s in got.items()} == {
        "a1": False,
        "a2": False,
        "b1": False,
        "c1": True,
        "nolabel": False,
    }
    assert got["a1"].reasons == (SKEW,)
    assert got["nolabel"].reasons == (MISSING_LABEL,)
    loose = make_pod().label("app", "web").spread("zone", 2, app="web").build()
    got = filter_all(PodTopologySpread(), loose, cache_of(*nodes, pods=bound))
    assert {n for n, s in got.items() if s.ok} == {"b1", "c1"}


def test_topology_spread_counts_follow_cache_changes() -> None:
    cache = cache_of(make_node("n1"), make_node("n2"))
    pod = make_pod().label("app", "web").spread("kubernetes.io/hostname", 1, app="web").build()
    assert all(s.ok for s in filter_all(PodTopologySpread(), pod, cache).values())
    first = make_pod("w1").label("app", "web").build()
    cache.assume(first, "n1")
    got = filter_all(PodTopologySpread(), pod, cache)
    assert (got["n1"].ok, got["n2"].ok) == (False, True)
    cache.forget(first.uid)
    assert all(s.ok for s in filter_all(PodTopologySpread(), pod, cache).values())


def test_topology_spread_ignores_other_namespaces_and_soft_constraints() -> None:
    cache = cache_of(
        make_node("n1"),
        make_node("n2"),
        pods=(make_pod("x", "other").label("app", "web").node("n1").build(),),
    )
    pod = make_pod().label("app", "web").spread("kubernetes.io/hostname", 1, app="web").build()
    assert all(s.ok for s in filter_all(PodTopologySpread(), pod, cache).values())
    soft = make_pod().spread("zone", 1, "ScheduleAnyway", app="web").build()
    assert PodTopologySpread().skip(soft)


def test_container_ports_are_vm_ports() -> None:
    """Pods on a VM share its address: a declared containerPort takes that port of the VM
    (hostPort, when set, takes its own number instead)."""

    def proto_pod(name: str, *ports: pod_pb2.ContainerPort) -> pod_pb2.Pod:
        pod = pod_pb2.Pod()
        pod.metadata.name, pod.metadata.uid = name, name
        pod.spec.containers.add(name="c", image="x").ports.extend(ports)
        return pod

    web = pod_info(proto_pod("web", pod_pb2.ContainerPort(container_port=8080)))
    assert [(p.port, p.protocol) for p in web.host_ports] == [(8080, "TCP")]
    published = pod_info(proto_pod("pub", pod_pb2.ContainerPort(container_port=80, host_port=9090)))
    assert [p.port for p in published.host_ports] == [9090]

    cache = cache_of(make_node("n1"), pods=(make_pod("b").host_port(8080).node("n1").build(),))
    st = filter_all(NodePorts(), web, cache)["n1"]
    assert not st.ok and "free ports" in st.message
    other = pod_info(proto_pod("udp", pod_pb2.ContainerPort(container_port=8080, protocol="UDP")))
    assert filter_all(NodePorts(), other, cache)["n1"].ok
