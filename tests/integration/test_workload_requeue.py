"""Transitions that only time brings, on a real controller and etcd, with every workload loop's
resync an hour away: a pod Ready for `minReadySeconds` counts as available (in a ReplicaSet
and in a DaemonSet), a rollout gated on it goes on, a stuck rollout passes its progress
deadline, a Job passes its active deadline and its TTL. No watch event announces any of
these moments; the loops ask the reconcile driver to look again then
(`cowpod.reconcile.Requeue`). Without that, each would wait for the resync and these tests
would time out. No agents: the test plays the kubelet."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from controller.daemonset import DaemonSetController
from controller.deployment import DeploymentController
from controller.job import JobController
from controller.replicaset import ReplicaSetController
from controller.replicaset_executor import GrpcWorkloadAPI
from controller.resource import set_time
from controller.testing import ControllerRunner
from cowpod.client import Client
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import event_pb2, meta_pb2, node_pb2, pod_pb2, workload_pb2
from cowpod.watches import Watches
from tests.polling import eventually

pytestmark = pytest.mark.integration

AN_HOUR = 3600.0


@pytest.fixture
async def c(etcd: EtcdMember, etcd_prefix: str) -> AsyncIterator[Client]:
    """A controller whose own workload loops are off, and the four loops run here with a
    resync of an hour."""
    async with ControllerRunner(etcd.endpoint, etcd_prefix, replicaset_controller=False) as runner, \
            Client(runner.address) as client:
        rsc = ReplicaSetController(GrpcWorkloadAPI(client), Watches.over(client), resync_seconds=AN_HOUR)
        loops = [rsc.run, DeploymentController(client, resync_seconds=AN_HOUR).run,
                 JobController(client, resync_seconds=AN_HOUR).run,
                 DaemonSetController(client, resync_seconds=AN_HOUR).run]
        tasks = [asyncio.create_task(run()) for run in loops]
        try:
            yield client
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def template(msg: workload_pb2.PodTemplateSpec, app: str, image: str = "cowpod/busybox:latest",
             restart: str = "") -> None:
    msg.metadata.labels["app"] = app
    msg.spec.containers.add(name="main", image=image, command=["sleep", "1d"])
    if restart:
        msg.spec.restart_policy = restart


async def live_pods(c: Client, app: str) -> list[pod_pb2.Pod]:
    lst = await c.pods.List(meta_pb2.ListOptions(namespace="default", label_selector=f"app={app}"))
    return [p for p in lst.items if not p.metadata.HasField("deletion_timestamp")
            and p.status.phase not in ("Succeeded", "Failed")]


def is_ready(p: pod_pb2.Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)


async def make_ready(c: Client, p: pod_pb2.Pod) -> float:
    """As an agent reports a pod whose readiness probe passed: Running, Ready since now."""
    now = time.time()
    st = pod_pb2.Pod()
    st.metadata.namespace, st.metadata.name = p.metadata.namespace, p.metadata.name
    st.status.phase = "Running"
    cond = st.status.conditions.add(type="Ready", status="True")
    set_time(cond.last_transition_time, now)
    await c.pods.UpdateStatus(st)
    return now


async def test_a_replicaset_counts_a_pod_available_after_min_ready_seconds(c: Client) -> None:
    rs = workload_pb2.ReplicaSet()
    rs.metadata.name = "steady"
    rs.spec.replicas = 2
    rs.spec.min_ready_seconds = 2
    template(rs.spec.template, "steady")
    await c.replicasets.Create(rs)
    pods = await eventually(lambda: _n_pods(c, "steady", 2), what="2 pods")
    ready_at = [await make_ready(c, p) for p in pods]
    seen: list[tuple[float, int]] = []

    async def available(n: int) -> bool:
        got = await c.replicasets.Get(meta_pb2.ObjectKey(namespace="default", name="steady"))
        seen.append((time.time(), got.status.available_replicas))
        return bool(got.status.ready_replicas == 2 and got.status.available_replicas == n)

    await eventually(lambda: available(2), timeout=20, what="availableReplicas 2 with no pod event")
    # And never before the pods had been Ready for minReadySeconds: none before the first had,
    # not both before the second had.
    early = [(t - min(ready_at), n) for t, n in seen
             if (n > 0 and t < min(ready_at) + 2) or (n == 2 and t < max(ready_at) + 2)]
    assert not early, early


async def _n_pods(c: Client, app: str, n: int) -> list[pod_pb2.Pod] | None:
    pods = await live_pods(c, app)
    return pods if len(pods) == n else None


async def test_a_rollout_gated_on_min_ready_seconds_goes_on_without_a_resync(c: Client) -> None:
    d = workload_pb2.Deployment()
    d.metadata.name = "gated"
    d.spec.replicas = 2
    d.spec.min_ready_seconds = 1
    d.spec.strategy.rolling_update.max_surge = "1"
    d.spec.strategy.rolling_update.max_unavailable = "0"
    template(d.spec.template, "gated", "cowpod/busybox:one")
    await c.deployments.Create(d)

    async def kubelet() -> None:
        while True:
            for p in await live_pods(c, "gated"):
                if not is_ready(p):
                    await make_ready(c, p)
            await asyncio.sleep(0.05)

    async def rolled(image: str) -> bool:
        cur = await c.deployments.Get(meta_pb2.ObjectKey(namespace="default", name="gated"))
        pods = await live_pods(c, "gated")
        st = cur.status
        return (st.updated_replicas == st.available_replicas == st.replicas == 2
                and st.observed_generation == cur.metadata.generation
                and len(pods) == 2 and all(p.spec.containers[0].image == image for p in pods))

    task = asyncio.create_task(kubelet())
    try:
        await eventually(lambda: rolled("cowpod/busybox:one"), timeout=30, what="first rollout")
        cur = await c.deployments.Get(meta_pb2.ObjectKey(namespace="default", name="gated"))
        cur.spec.template.spec.containers[0].image = "cowpod/busybox:two"
        cur.metadata.resource_version = 0
        await c.deployments.Update(cur)
        # maxUnavailable 0: each of the two steps waits for a new pod to be available.
        await eventually(lambda: rolled("cowpod/busybox:two"), timeout=30, what="second rollout")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_stuck_rollout_passes_its_progress_deadline_without_a_resync(c: Client) -> None:
    d = workload_pb2.Deployment()
    d.metadata.name = "stuck"
    d.spec.replicas = 1
    d.spec.progress_deadline_seconds = 2
    template(d.spec.template, "stuck")  # its pod never becomes Ready: no one plays its kubelet
    await c.deployments.Create(d)

    async def exceeded() -> bool:
        cur = await c.deployments.Get(meta_pb2.ObjectKey(namespace="default", name="stuck"))
        conds = {x.type: (x.status, x.reason) for x in cur.status.conditions}
        return conds.get("Progressing") == ("False", "ProgressDeadlineExceeded")

    await eventually(exceeded, timeout=20, what="Progressing False, ProgressDeadlineExceeded")


async def test_a_job_passes_its_active_deadline_then_its_ttl_without_a_resync(c: Client) -> None:
    j = workload_pb2.Job()
    j.metadata.name = "slow"
    j.spec.active_deadline_seconds = 1
    j.spec.ttl_seconds_after_finished = 1
    template(j.spec.template, "slow", restart="Never")  # its pod runs for ever
    await c.jobs.Create(j)
    pods = await eventually(lambda: _n_pods(c, "slow", 1), what="the job's pod")
    await make_ready(c, pods[0])

    async def deleted() -> bool:
        try:
            await c.jobs.Get(meta_pb2.ObjectKey(namespace="default", name="slow"))
        except grpc.aio.AioRpcError as err:
            return err.code() == grpc.StatusCode.NOT_FOUND
        return False

    await eventually(deleted, timeout=20, what="the job failed on its deadline, then deleted by its TTL")
    events = await c.events.List(event_pb2.ListEventsRequest(
        involved_object=event_pb2.ObjectReference(kind="Job", name="slow")))
    assert "DeadlineExceeded" in {e.reason for e in events.items}


async def test_a_daemonset_counts_a_pod_available_after_min_ready_seconds(c: Client) -> None:
    node = node_pb2.Node()
    node.metadata.name = "n1"
    node.status.capacity.pods = 10
    await c.nodes.Register(node)
    ds = workload_pb2.DaemonSet()
    ds.metadata.name = "agent"
    ds.spec.min_ready_seconds = 2
    template(ds.spec.template, "agent")
    await c.daemonsets.Create(ds)
    pods = await eventually(lambda: _n_pods(c, "agent", 1), what="the daemon pod")
    ready_at = await make_ready(c, pods[0])
    seen: list[tuple[float, int]] = []

    async def available() -> bool:
        got = await c.daemonsets.Get(meta_pb2.ObjectKey(namespace="default", name="agent"))
        seen.append((time.time(), got.status.number_available))
        return bool(got.status.number_ready == 1 and got.status.number_available == 1)

    await eventually(available, timeout=20, what="numberAvailable 1 with no pod event")
    assert not [(t - ready_at, n) for t, n in seen if n > 0 and t < ready_at + 2], seen
