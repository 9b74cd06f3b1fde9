"""Attacks of issue #15 against a real secure controller (TLS, real etcd): a node
rewriting its own Node object (NodeRestriction), a user running cowpod's
internal images as pods."""

from __future__ import annotations

import pathlib

import grpc
import pytest

from controller.testing import ControllerRunner
from cowpod.client import Client
from cowpod.v1 import meta_pb2, node_pb2
from tests.integration.test_security import admin, code_of, join_node, make_node, make_pod, secure

pytestmark = pytest.mark.integration
__all__ = ["admin", "secure"]  # fixtures


async def test_node_cannot_rewrite_its_own_node(
    secure: ControllerRunner, admin: Client, tmp_path: pathlib.Path
) -> None:
    """Hole 3: with its own certificate a node dropped its taints, uncordoned itself and
    gave itself the labels admins use to place sensitive pods."""
    async with await join_node(secure, admin, "n1", tmp_path) as n1:
        await n1.nodes.Register(make_node("n1"))
        # The admin cordons and taints it and labels it with a reserved (admin-only) label.
        stored = await admin.nodes.Get(meta_pb2.ObjectKey(name="n1"))
        stored.spec.unschedulable = True
        stored.spec.taints.add(key="quarantine", value="yes", effect="NoSchedule")
        stored.metadata.labels["node-restriction.cowpod.io/tier"] = "untrusted"
        await admin.nodes.Update(stored)

        mine = await n1.nodes.Get(meta_pb2.ObjectKey(name="n1"))
        mine.spec.unschedulable = False
        del mine.spec.taints[:]
        mine.metadata.labels["node-restriction.cowpod.io/tier"] = "secure"
        assert await code_of(n1.nodes.Update(mine)) == grpc.StatusCode.PERMISSION_DENIED
        # Nor through Register (its re-register path), with labels, taints or cordon.
        relabel = make_node("n1")
        relabel.metadata.labels["node-restriction.kubernetes.io/tier"] = "secure"
        tainted = make_node("n1")
        tainted.spec.taints.add(key="x", effect="NoExecute")
        cordoned = make_node("n1")
        cordoned.spec.unschedulable = True
        for bad in (relabel, tainted, cordoned):
            assert await code_of(n1.nodes.Register(bad)) == grpc.StatusCode.PERMISSION_DENIED
        # What it may do: re-register with its own labels, report status, heartbeat.
        ok = make_node("n1")
        ok.metadata.labels["disk"] = "ssd"
        await n1.nodes.Register(ok)
        status = await n1.nodes.Get(meta_pb2.ObjectKey(name="n1"))
        status.status.capacity.pods = 20
        await n1.nodes.UpdateStatus(status)
        await n1.nodes.Heartbeat(node_pb2.HeartbeatRequest(node_name="n1"))

        now = await admin.nodes.Get(meta_pb2.ObjectKey(name="n1"))
        assert now.spec.unschedulable
        assert [(t.key, t.value) for t in now.spec.taints] == [("quarantine", "yes")]
        assert now.metadata.labels["node-restriction.cowpod.io/tier"] == "untrusted"
        assert "node-restriction.kubernetes.io/tier" not in now.metadata.labels
        assert now.metadata.labels["disk"] == "ssd" and now.status.capacity.pods == 20


async def test_pods_cannot_run_internal_images(admin: Client) -> None:
    """Hole 2: a pod running a VM snapshot read the parent's disk (and once its node key)."""
    for i, image in enumerate(("cowpod/vm-snap:vm-1-1", "cowpod/vm:latest", "docker.io/cowpod/vm-own:kid",
                               "sha256:" + "a" * 64)):
        pod = make_pod(f"p{i}")
        pod.spec.containers[0].image = image
        try:
            await admin.pods.Create(pod)
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "spec.containers[0].image" in (err.details() or "")
        else:
            raise AssertionError(f"a pod with image {image} was created")
    init = make_pod("init")
    init.spec.init_containers.add(name="i", image="cowpod/vm-snap:vm-1-1")
    assert await code_of(admin.pods.Create(init)) == grpc.StatusCode.INVALID_ARGUMENT
    listed = await admin.pods.List(meta_pb2.ListOptions(namespace="default"))
    assert not listed.items
    await admin.pods.Create(make_pod("fine"))
