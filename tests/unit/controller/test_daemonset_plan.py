"""The DaemonSet controller's pure plan: which nodes (the scheduler's rules, the default daemon
tolerations), new nodes, misscheduled pods, rolling updates within maxUnavailable/maxSurge."""

from __future__ import annotations

from collections.abc import Sequence

from controller.daemonset import REVISION_LABEL, UpdateDaemonSetStatus, daemon_pod, plan_daemonset
from controller.podowner import CreatePod, DeletePod, template_hash
from controller.replicaset_actions import InFlight
from controller.resource import set_time
from cowpod.v1 import node_pb2, pod_pb2, workload_pb2

NOW = 1_700_000_000.0
NONE = InFlight()


def make_ds(surge: str = "0", unavailable: str = "1") -> workload_pb2.DaemonSet:
    ds = workload_pb2.DaemonSet()
    ds.metadata.namespace, ds.metadata.name, ds.metadata.uid = "default", "agent", "uid-ds"
    ds.metadata.generation = 1
    ds.spec.selector.match_labels["app"] = "agent"
    ds.spec.template.metadata.labels["app"] = "agent"
    ds.spec.template.spec.containers.add(name="c", image="busybox:1")
    ds.spec.template.spec.restart_policy = "Always"
    ds.spec.update_strategy.type = "RollingUpdate"
    ds.spec.update_strategy.rolling_update.max_surge = surge
    ds.spec.update_strategy.rolling_update.max_unavailable = unavailable
    return ds


def node(name: str, labels: dict[str, str] | None = None,
         taints: tuple[tuple[str, str], ...] | list[tuple[str, str]] = ()) -> node_pb2.Node:
    n = node_pb2.Node()
    n.metadata.name = name
    n.metadata.labels.update(labels or {})
    for key, effect in taints:
        n.spec.taints.add(key=key, value="true", effect=effect)
    return n


def pod(ds: workload_pb2.DaemonSet, name: str, node_name: str, *, ready: bool = True,
        revision: str | None = None) -> pod_pb2.Pod:
    p = daemon_pod(ds, revision or template_hash(ds.spec.template))
    p.metadata.name, p.metadata.uid = name, f"uid-{name}"
    p.spec.node_name = node_name
    p.status.phase = "Running"
    c = p.status.conditions.add(type="Ready", status="True" if ready else "False")
    set_time(c.last_transition_time, NOW - 100)
    return p


def created_on(actions: Sequence[object]) -> list[str]:
    return sorted(a.pod.spec.node_name for a in actions if isinstance(a, CreatePod))


def deleted(actions: Sequence[object]) -> list[str]:
    return sorted(a.name for a in actions if isinstance(a, DeletePod))


def test_one_pod_per_node_bound_to_it() -> None:
    ds = make_ds()
    acts = plan_daemonset(ds, [node("n1"), node("n2")], [], NONE, NOW)
    assert created_on(acts) == ["n1", "n2"]
    [p] = [a.pod for a in acts if isinstance(a, CreatePod)][:1]
    assert p.metadata.owner_references[0].kind == "DaemonSet"
    assert p.metadata.labels[REVISION_LABEL] == template_hash(ds.spec.template)


def test_a_node_added_later_gets_its_pod() -> None:
    ds = make_ds()
    have = [pod(ds, "a", "n1")]
    assert created_on(plan_daemonset(ds, [node("n1")], have, NONE, NOW)) == []
    assert created_on(plan_daemonset(ds, [node("n1"), node("clone-1")], have, NONE, NOW)) == ["clone-1"]


def test_node_selector_and_taints_as_the_scheduler_judges_them() -> None:
    ds = make_ds()
    ds.spec.template.spec.node_selector["disk"] = "ssd"
    nodes = [node("ssd", {"disk": "ssd"}), node("hdd", {"disk": "hdd"}),
             node("parent", {"disk": "ssd"}, [("cowpod.io/parent", "NoSchedule")]),
             node("cordoned", {"disk": "ssd"}, [("node.kubernetes.io/unschedulable", "NoSchedule")]),
             node("down", {"disk": "ssd"}, [("node.kubernetes.io/not-ready", "NoExecute")])]
    # The warm parent's taint is not tolerated by default; cordon and not-ready are.
    assert created_on(plan_daemonset(ds, nodes, [], NONE, NOW)) == ["cordoned", "down", "ssd"]
    ds.spec.template.spec.tolerations.add(key="cowpod.io/parent", operator="Exists")
    assert "parent" in created_on(plan_daemonset(ds, nodes, [], NONE, NOW))


def test_pod_on_a_node_that_no_longer_matches_is_deleted() -> None:
    ds = make_ds()
    ds.spec.template.spec.node_selector["disk"] = "ssd"
    acts = plan_daemonset(ds, [node("n1", {"disk": "hdd"})], [pod(ds, "a", "n1")], NONE, NOW)
    assert deleted(acts) == ["a"]
    [st] = [a.status for a in acts if isinstance(a, UpdateDaemonSetStatus)]
    assert st.desired_number_scheduled == 0


def test_rolling_update_replaces_at_most_max_unavailable_at_a_time() -> None:
    ds = make_ds(unavailable="1")
    old = [pod(ds, f"p{i}", f"n{i}", revision="old") for i in range(3)]
    nodes = [node(f"n{i}") for i in range(3)]
    acts = plan_daemonset(ds, nodes, old, NONE, NOW)
    assert len(deleted(acts)) == 1 and created_on(acts) == []
    # Its node without a pod gets the new one; no other old pod goes while one node is unavailable.
    rest = [p for p in old if p.metadata.name not in deleted(acts)]
    acts = plan_daemonset(ds, nodes, rest, NONE, NOW)
    assert len(created_on(acts)) == 1 and deleted(acts) == []


def test_rolling_update_with_surge_starts_new_beside_old() -> None:
    ds = make_ds(surge="1", unavailable="0")
    nodes = [node("n0"), node("n1")]
    old = [pod(ds, "p0", "n0", revision="old"), pod(ds, "p1", "n1", revision="old")]
    acts = plan_daemonset(ds, nodes, old, NONE, NOW)
    assert len(created_on(acts)) == 1 and deleted(acts) == []
    new = pod(ds, "q0", "n0")
    assert deleted(plan_daemonset(ds, nodes, [*old, new], NONE, NOW)) == ["p0"]
    unready = pod(ds, "q0", "n0", ready=False)
    assert deleted(plan_daemonset(ds, nodes, [*old, unready], NONE, NOW)) == []


def test_failed_pod_is_replaced_after_a_back_off() -> None:
    ds = make_ds()
    p = pod(ds, "a", "n1")
    p.status.phase = "Failed"
    cs = p.status.container_statuses.add(name="c")
    set_time(cs.state.terminated.finished_at, NOW)
    early = plan_daemonset(ds, [node("n1")], [p], NONE, NOW + 5)
    assert deleted(early) == [] and created_on(early) == []  # the node is not sent a pod hot
    acts = plan_daemonset(ds, [node("n1")], [p], NONE, NOW + 10)
    assert deleted(acts) == ["a"] and created_on(acts) == ["n1"]
