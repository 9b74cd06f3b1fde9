"""The authorization decision table, row by row."""

from __future__ import annotations

from typing import Any

import pytest

from controller.auth.authorizer import PodCheck, Requirement, authorize, selector_pins
from controller.auth.identity import (
    ANONYMOUS,
    Identity,
    Role,
    Via,
    identity_from_subject,
    identity_from_token,
)
from cowpod.pki import Subject, node_subject
from cowpod.v1 import lease_pb2, meta_pb2, node_pb2, pod_pb2, vm_pb2

ADMIN = identity_from_subject(Subject("admin", ("system:masters",)))
EDIT = identity_from_token("aaaaaaaa", "edit")
VIEW = identity_from_token("bbbbbbbb", "view")
NODE1 = identity_from_subject(node_subject("n1"))
SCHED = identity_from_subject(Subject("system:scheduler"))
NOBODY = identity_from_subject(Subject("someone"))
BOOT = identity_from_token("cccccccc", "bootstrap")


def pod_m(verb: str) -> str:
    return f"/cowpod.v1.PodService/{verb}"


def node_m(verb: str) -> str:
    return f"/cowpod.v1.NodeService/{verb}"


def named_node(name: str) -> node_pb2.Node:
    return node_pb2.Node(metadata=meta_pb2.ObjectMeta(name=name))


def lease(ns: str, name: str) -> lease_pb2.Lease:
    return lease_pb2.Lease(metadata=meta_pb2.ObjectMeta(namespace=ns, name=name))


POD = pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(namespace="default", name="web"))
KEY = meta_pb2.ObjectKey(namespace="default", name="web")
ALL = meta_pb2.ListOptions()
MINE = meta_pb2.ListOptions(field_selector="spec.nodeName=n1")
THEIRS = meta_pb2.ListOptions(field_selector="spec.nodeName=n2")

ROWS: list[tuple[Identity, str, Any, bool]] = [
    # admin
    (ADMIN, pod_m("Create"), POD, True),
    (ADMIN, "/cowpod.v1.TokenService/Create", None, True),
    (ADMIN, "/cowpod.v1.VMService/Destroy", None, True),
    # edit
    (EDIT, pod_m("Create"), POD, True),
    (EDIT, pod_m("Delete"), None, True),
    (EDIT, pod_m("Exec"), None, True),
    (EDIT, pod_m("Bind"), None, False),
    (EDIT, pod_m("UpdateStatus"), POD, False),
    (EDIT, node_m("List"), ALL, True),
    (EDIT, node_m("Update"), named_node("n1"), False),
    (EDIT, "/cowpod.v1.VMService/Clone", None, False),
    (EDIT, "/cowpod.v1.TokenService/List", ALL, False),
    (EDIT, "/cowpod.v1.ReplicaSetService/Create", None, True),
    (EDIT, "/cowpod.v1.ReplicaSetService/Scale", None, True),
    (EDIT, "/cowpod.v1.ReplicaSetService/UpdateStatus", None, False),  # the ReplicaSet controller's
    # Least privilege: a service missing from the table is admin-only, reads and writes alike.
    # (SecretService was the example until #14 listed it: edit writes Secrets now.)
    (EDIT, "/cowpod.v1.FutureService/Create", None, False),
    (EDIT, "/cowpod.v1.FutureService/Get", KEY, False),
    (EDIT, "/cowpod.v1.BootstrapService/SignServingCertificate", None, False),
    (ADMIN, "/cowpod.v1.FutureService/Create", None, True),
    # view
    (VIEW, pod_m("Get"), KEY, True),
    (VIEW, pod_m("List"), ALL, True),
    (VIEW, pod_m("Watch"), meta_pb2.WatchOptions(), True),
    (VIEW, pod_m("Logs"), None, True),
    (VIEW, pod_m("Create"), POD, False),
    (VIEW, pod_m("Exec"), None, False),
    (VIEW, pod_m("Delete"), None, False),
    (VIEW, "/cowpod.v1.VMService/List", ALL, True),
    (VIEW, "/cowpod.v1.TokenService/List", ALL, False),
    (VIEW, "/cowpod.v1.ReplicaSetService/Create", None, False),
    (VIEW, "/cowpod.v1.ReplicaSetService/List", ALL, True),
    (VIEW, "/cowpod.v1.SecretService/List", ALL, False),
    # node n1: its own node
    (NODE1, node_m("Register"), named_node("n1"), True),
    (NODE1, node_m("Register"), named_node("n2"), False),
    (NODE1, node_m("Heartbeat"), node_pb2.HeartbeatRequest(node_name="n1"), True),
    (NODE1, node_m("Heartbeat"), node_pb2.HeartbeatRequest(node_name="n2"), False),
    # The stream opens on the method alone; each message is then authorized as a Heartbeat.
    (NODE1, node_m("HeartbeatStream"), None, True),
    (SCHED, node_m("HeartbeatStream"), None, False),
    (EDIT, node_m("HeartbeatStream"), None, False),
    (VIEW, node_m("HeartbeatStream"), None, False),
    (NODE1, node_m("UpdateStatus"), named_node("n1"), True),
    (NODE1, node_m("Update"), named_node("n2"), False),
    # NodeRestriction: a node reports status, it does not rewrite itself
    (NODE1, node_m("Update"), named_node("n1"), False),
    (NODE1, node_m("Register"), node_pb2.Node(metadata=meta_pb2.ObjectMeta(
        name="n1", labels={"disk": "ssd"})), True),
    (NODE1, node_m("Register"), node_pb2.Node(metadata=meta_pb2.ObjectMeta(
        name="n1", labels={"node-restriction.cowpod.io/pci": "true"})), False),
    (NODE1, node_m("Register"), node_pb2.Node(metadata=meta_pb2.ObjectMeta(name="n1"), spec=node_pb2.NodeSpec(
        taints=[node_pb2.Taint(key="k", effect="NoSchedule")])), False),
    (NODE1, node_m("Register"), node_pb2.Node(metadata=meta_pb2.ObjectMeta(name="n1"),
                                              spec=node_pb2.NodeSpec(unschedulable=True)), False),
    (NODE1, node_m("Get"), meta_pb2.ObjectKey(name="n1"), True),
    (NODE1, node_m("Get"), meta_pb2.ObjectKey(name="n2"), False),
    (NODE1, node_m("List"), ALL, False),
    (NODE1, node_m("List"), meta_pb2.ListOptions(field_selector="metadata.name=n1"), True),
    (NODE1, node_m("Delete"), meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="n1")), False),
    # node n1: pods
    (NODE1, pod_m("List"), MINE, True),
    (NODE1, pod_m("List"), ALL, False),
    (NODE1, pod_m("List"), THEIRS, False),
    (NODE1, pod_m("List"), meta_pb2.ListOptions(field_selector="spec.nodeName!=n1"), False),
    (NODE1, pod_m("Watch"), meta_pb2.WatchOptions(list=MINE), True),
    (NODE1, pod_m("Watch"), meta_pb2.WatchOptions(list=THEIRS), False),
    (NODE1, pod_m("Create"), POD, False),
    (NODE1, pod_m("Update"), POD, False),
    (NODE1, pod_m("Bind"), pod_pb2.Binding(pod=KEY, node_name="n1"), False),
    (NODE1, pod_m("BindBatch"), None, False),
    (NODE1, pod_m("Exec"), None, False),
    (NODE1, pod_m("Logs"), None, False),
    (NODE1, "/cowpod.v1.VMService/Get", meta_pb2.ObjectKey(name="vm-1"), False),
    (NODE1, "/cowpod.v1.VMService/UpdateStatus", vm_pb2.VM(), False),
    (NODE1, "/cowpod.v1.TokenService/Create", None, False),
    (NODE1, "/cowpod.v1.EventService/Create", None, True),
    (NODE1, "/cowpod.v1.EventService/List", None, False),
    (NODE1, "/cowpod.v1.LeaseService/Update", lease("cowpod-node-lease", "n1"), True),
    (NODE1, "/cowpod.v1.LeaseService/Update", lease("cowpod-node-lease", "n2"), False),
    (NODE1, "/cowpod.v1.LeaseService/Update", lease("cowpod-system", "scheduler"), False),
    # scheduler
    (SCHED, pod_m("List"), ALL, True),
    (SCHED, pod_m("Watch"), meta_pb2.WatchOptions(), True),
    (SCHED, pod_m("Bind"), None, True),
    (SCHED, pod_m("BindBatch"), None, True),
    (SCHED, node_m("List"), ALL, True),
    (SCHED, pod_m("Create"), POD, False),
    (SCHED, pod_m("Delete"), None, True),  # preemption evicts lower-priority pods
    (SCHED, pod_m("Exec"), None, False),
    (SCHED, node_m("UpdateStatus"), named_node("n1"), False),
    (SCHED, pod_m("UpdateStatus"), POD, True),  # with a check: only unbound pods
    (SCHED, pod_m("Update"), POD, False),
    (SCHED, "/cowpod.v1.VMService/Clone", None, False),
    (SCHED, "/cowpod.v1.LeaseService/Update", lease("cowpod-system", "cowpod-scheduler"), True),
    (SCHED, "/cowpod.v1.LeaseService/Create", lease("cowpod-system", "cowpod-scheduler"), True),
    (SCHED, "/cowpod.v1.LeaseService/Get", meta_pb2.ObjectKey(namespace="cowpod-system",
                                                              name="cowpod-scheduler"), True),
    # Only its own lease: not the autoscaler's leadership, not any other.
    (SCHED, "/cowpod.v1.LeaseService/Update", lease("cowpod-system", "cowpod-autoscaler"), False),
    (SCHED, "/cowpod.v1.LeaseService/Create", lease("cowpod-system", "scheduler"), False),
    (SCHED, "/cowpod.v1.LeaseService/Get", meta_pb2.ObjectKey(namespace="default",
                                                              name="cowpod-scheduler"), False),
    (SCHED, "/cowpod.v1.LeaseService/Update", lease("cowpod-node-lease", "n1"), False),
    # PriorityClasses: cluster-wide policy, admin's to write; everyone reads
    (EDIT, "/cowpod.v1.PriorityClassService/Create", None, False),
    (EDIT, "/cowpod.v1.PriorityClassService/List", None, True),
    (VIEW, "/cowpod.v1.PriorityClassService/Get", None, True),
    (ADMIN, "/cowpod.v1.PriorityClassService/Delete", None, True),
    # anonymous, bootstrap, nobody
    (ANONYMOUS, "/grpc.health.v1.Health/Check", None, True),
    (ANONYMOUS, "/cowpod.v1.BootstrapService/ExchangeToken", None, True),
    (ANONYMOUS, "/cowpod.v1.IdentityService/WhoAmI", None, True),
    (ANONYMOUS, pod_m("List"), ALL, False),
    (BOOT, pod_m("List"), ALL, False),
    (BOOT, "/cowpod.v1.BootstrapService/ExchangeToken", None, True),
    (NOBODY, pod_m("Get"), KEY, False),
    (NOBODY, "/grpc.health.v1.Health/Check", None, True),
]


@pytest.mark.parametrize(("who", "method", "request_", "allowed"), ROWS)
def test_decision_table(who: Identity, method: str, request_: Any, allowed: bool) -> None:
    d = authorize(who, method, request_)
    assert d.allowed is allowed, d.reason
    if not allowed:
        assert who.user in d.reason or "credentials" in d.reason
        assert d.unauthenticated is (who.role is Role.ANONYMOUS)


def test_node_pod_reads_and_writes_carry_binding_checks() -> None:
    get = authorize(NODE1, pod_m("Get"), KEY)
    assert get.check == PodCheck(Requirement.BOUND_RESPONSE, "n1")
    status = authorize(NODE1, pod_m("UpdateStatus"), POD)
    assert status.check == PodCheck(Requirement.BOUND_BEFORE, "n1", "default", "web")
    delete = authorize(NODE1, pod_m("Delete"), meta_pb2.DeleteOptions(key=KEY))
    assert delete.check == PodCheck(Requirement.BOUND_BEFORE, "n1", "default", "web")


def test_scheduler_writes_status_of_unbound_pods_only() -> None:
    d = authorize(SCHED, pod_m("UpdateStatus"), POD)
    assert d.check == PodCheck(Requirement.BOUND_BEFORE, "", "default", "web")


def test_identity_from_certificates() -> None:
    assert NODE1.role is Role.NODE and NODE1.node_name == "n1"
    # A node CN without the nodes group is nobody.
    assert identity_from_subject(Subject("system:node:n1")).role is Role.NONE
    assert identity_from_subject(Subject("ops", ("cowpod:view", "cowpod:edit"))).role is Role.EDIT
    assert identity_from_subject(Subject("system:controller", ("system:controllers",))).role is Role.ADMIN
    assert identity_from_subject(Subject("system:anonymous", ("system:unauthenticated",))) == ANONYMOUS
    assert ADMIN.via is Via.CERTIFICATE


@pytest.mark.parametrize(
    ("selector", "pinned"),
    [
        ("spec.nodeName=n1", True),
        ("spec.nodeName==n1", True),
        ("status.phase=Running,spec.nodeName=n1", True),
        ("spec.nodeName!=n1", False),
        ("spec.nodeName=n10", False),
        ("spec.nodeName=", False),
        ("", False),
    ],
)
def test_selector_pins(selector: str, pinned: bool) -> None:
    assert selector_pins(selector, "spec.nodeName", "n1") is pinned
