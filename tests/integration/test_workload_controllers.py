"""Deployments, Jobs and DaemonSets driven by their controllers in a real controller process on
a real etcd. No agents: the test plays the kubelet, writing pod status the way an agent does
(Running + Ready, or Succeeded), so what is checked is the controllers' behaviour."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from controller.daemonset import DaemonSetController
from controller.resource import set_time
from controller.testing import ControllerRunner, make_node
from cowpod.client import Client
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import meta_pb2, pod_pb2, workload_pb2
from tests.polling import eventually

pytestmark = pytest.mark.integration


async def pods_of(c: Client, selector: str) -> list[pod_pb2.Pod]:
    lst = await c.pods.List(meta_pb2.ListOptions(namespace="default", label_selector=selector))
    return list(lst.items)


def live(pods: list[pod_pb2.Pod]) -> list[pod_pb2.Pod]:
    return [p for p in pods if not p.metadata.HasField("deletion_timestamp")
            and p.status.phase not in ("Succeeded", "Failed")]


def ready(p: pod_pb2.Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)


async def set_phase(c: Client, p: pod_pb2.Pod, phase: str, *, is_ready: bool) -> None:
    st = pod_pb2.Pod()
    st.metadata.namespace, st.metadata.name = p.metadata.namespace, p.metadata.name
    st.status.phase = phase
    cond = st.status.conditions.add(type="Ready", status="True" if is_ready else "False")
    set_time(cond.last_transition_time, 1.0)
    await c.pods.UpdateStatus(st)


def template(msg: workload_pb2.PodTemplateSpec, app: str, image: str, restart: str = "") -> None:
    msg.metadata.labels["app"] = app
    msg.spec.containers.add(name="main", image=image, command=["sleep", "1d"])
    if restart:
        msg.spec.restart_policy = restart


async def test_rolling_update_never_below_min_available(client: Client) -> None:
    d = workload_pb2.Deployment()
    d.metadata.name = "web"
    d.spec.replicas = 3
    d.spec.strategy.rolling_update.max_surge = "1"
    d.spec.strategy.rolling_update.max_unavailable = "1"
    template(d.spec.template, "web", "cowpod/busybox:one")
    await client.deployments.Create(d)
    ready_counts: list[int] = []

    async def kubelet() -> None:
        """Pods become Ready as soon as they exist; the ready count is recorded throughout."""
        while True:
            pods = live(await pods_of(client, "app=web"))
            ready_counts.append(sum(1 for p in pods if ready(p)))
            for p in pods:
                if not ready(p):
                    await set_phase(client, p, "Running", is_ready=True)
            await asyncio.sleep(0.02)

    async def rolled(image: str) -> bool:
        cur = await client.deployments.Get(meta_pb2.ObjectKey(namespace="default", name="web"))
        pods = live(await pods_of(client, "app=web"))
        st = cur.status
        return (st.updated_replicas == st.available_replicas == st.replicas == 3
                and st.observed_generation == cur.metadata.generation
                and len(pods) == 3 and all(p.spec.containers[0].image == image and ready(p) for p in pods))

    task = asyncio.create_task(kubelet())
    try:
        await eventually(lambda: rolled("cowpod/busybox:one"), what="first rollout")
        ready_counts.clear()
        cur = await client.deployments.Get(meta_pb2.ObjectKey(namespace="default", name="web"))
        cur.spec.template.spec.containers[0].image = "cowpod/busybox:two"
        cur.metadata.resource_version = 0
        await client.deployments.Update(cur)
        await eventually(lambda: rolled("cowpod/busybox:two"), what="second rollout")
    finally:
        task.cancel()
    assert ready_counts and min(ready_counts) >= 2, ready_counts
    sets = await client.replicasets.List(meta_pb2.ListOptions(namespace="default", label_selector="app=web"))
    revisions = sorted((rs.metadata.annotations["deployment.kubernetes.io/revision"], rs.spec.replicas)
                       for rs in sets.items)
    assert revisions == [("1", 0), ("2", 3)]
    cur = await client.deployments.Get(meta_pb2.ObjectKey(namespace="default", name="web"))
    conds = {c.type: (c.status, c.reason) for c in cur.status.conditions}
    assert conds["Progressing"] == ("True", "NewReplicaSetAvailable")
    assert conds["Available"] == ("True", "MinimumReplicasAvailable")

    # Deleting the Deployment deletes its sets, and the ReplicaSet controller their pods.
    await client.deployments.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="web")))

    async def collected() -> bool:
        opts = meta_pb2.ListOptions(namespace="default", label_selector="app=web")
        left = await client.replicasets.List(opts)
        return not left.items and not live(await pods_of(client, "app=web"))

    await eventually(collected, what="sets and pods collected")


async def test_job_completions_3_parallelism_2(client: Client) -> None:
    j = workload_pb2.Job()
    j.metadata.name = "count"
    j.spec.completions, j.spec.parallelism = 3, 2
    template(j.spec.template, "count", "cowpod/busybox:latest", restart="Never")
    await client.jobs.Create(j)
    most = 0
    finished: set[str] = set()

    async def done() -> bool:
        nonlocal most
        pods = await pods_of(client, "job-name=count")
        running = live(pods)
        most = max(most, len(running))
        if running:  # one pod finishes at a time
            await set_phase(client, running[0], "Succeeded", is_ready=False)
            finished.add(running[0].metadata.name)
        cur = await client.jobs.Get(meta_pb2.ObjectKey(namespace="default", name="count"))
        return any(c.type == "Complete" and c.status == "True" for c in cur.status.conditions)

    await eventually(done, what="job complete")
    assert most == 2
    cur = await client.jobs.Get(meta_pb2.ObjectKey(namespace="default", name="count"))
    assert (cur.status.succeeded, cur.status.active) == (3, 0)
    assert cur.status.HasField("completion_time")
    assert len(finished) == 3 and len(await pods_of(client, "job-name=count")) == 3


async def test_job_backoff_limit_fails_it(client: Client) -> None:
    j = workload_pb2.Job()
    j.metadata.name = "flaky"
    j.spec.backoff_limit = 1
    template(j.spec.template, "flaky", "cowpod/busybox:latest", restart="Never")
    await client.jobs.Create(j)

    async def failed() -> bool:
        for p in live(await pods_of(client, "job-name=flaky")):
            await set_phase(client, p, "Failed", is_ready=False)
        cur = await client.jobs.Get(meta_pb2.ObjectKey(namespace="default", name="flaky"))
        return any(c.type == "Failed" and c.reason == "BackoffLimitExceeded" for c in cur.status.conditions)

    await eventually(failed, what="job failed")
    assert len(await pods_of(client, "job-name=flaky")) == 2  # the first try and one retry


async def test_daemonset_follows_nodes(client: Client) -> None:
    await make_node(client, "ds-n1")
    parent = await make_node(client, "ds-parent")
    parent.spec.taints.add(key="cowpod.io/parent", value="true", effect="NoSchedule")
    parent.metadata.resource_version = 0
    await client.nodes.Update(parent)
    ds = workload_pb2.DaemonSet()
    ds.metadata.name = "logs"
    template(ds.spec.template, "logs", "cowpod/busybox:latest")
    await client.daemonsets.Create(ds)

    async def on_nodes(*want: str) -> bool:
        pods = live(await pods_of(client, "app=logs"))
        return sorted(p.spec.node_name for p in pods if p.spec.node_name.startswith("ds-")) == sorted(want)

    await eventually(lambda: on_nodes("ds-n1"), what="a pod on ds-n1 only (the parent is tainted)")
    await make_node(client, "ds-clone-1")
    await eventually(lambda: on_nodes("ds-n1", "ds-clone-1"), what="a pod on the node added later")
    await client.nodes.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="ds-clone-1")))
    await eventually(lambda: on_nodes("ds-n1"), what="the gone node's pod removed")


async def test_finished_job_with_ttl_0_is_deleted_with_its_pods(client: Client) -> None:
    j = workload_pb2.Job()
    j.metadata.name = "once"
    j.spec.ttl_seconds_after_finished = 0
    template(j.spec.template, "once", "cowpod/busybox:latest", restart="Never")
    await client.jobs.Create(j)

    async def gone() -> bool:
        for p in live(await pods_of(client, "job-name=once")):
            await set_phase(client, p, "Succeeded", is_ready=False)
        jobs = await client.jobs.List(meta_pb2.ListOptions(namespace="default"))
        left = await pods_of(client, "job-name=once")
        return "once" not in {x.metadata.name for x in jobs.items} and not left

    await eventually(gone, what="the job and its pods deleted")


async def test_deleting_a_daemonset_deletes_its_pods(client: Client) -> None:
    await make_node(client, "del-n1")
    ds = workload_pb2.DaemonSet()
    ds.metadata.name = "shortlived"
    template(ds.spec.template, "shortlived", "cowpod/busybox:latest")
    await client.daemonsets.Create(ds)

    async def count(n: int) -> bool:
        return len(live(await pods_of(client, "app=shortlived"))) == n

    await eventually(lambda: count(1), what="its pod")
    await client.daemonsets.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="shortlived")))
    await eventually(lambda: count(0), what="its pod deleted")


async def test_rollout_survives_a_controller_restart(controller: ControllerRunner, client: Client) -> None:
    """The Deployment controller keeps no state but what is stored: restarted mid-rollout, it
    finishes the rollout from the stored sets, never below replicas - maxUnavailable Ready."""
    d = workload_pb2.Deployment()
    d.metadata.name = "crash"
    d.spec.replicas = 4
    d.spec.strategy.rolling_update.max_surge = "1"
    d.spec.strategy.rolling_update.max_unavailable = "1"
    template(d.spec.template, "crash", "cowpod/busybox:one")
    await client.deployments.Create(d)
    ready_counts: list[int] = []
    hold = asyncio.Event()  # while clear, new pods stay unready: the rollout waits mid-way

    async def kubelet() -> None:
        while True:
            try:
                pods = live(await pods_of(client, "app=crash"))
                ready_counts.append(sum(1 for p in pods if ready(p)))
                for p in pods:
                    if not ready(p) and (hold.is_set() or p.spec.containers[0].image.endswith("one")):
                        await set_phase(client, p, "Running", is_ready=True)
            except grpc.aio.AioRpcError:
                pass  # the controller is restarting
            await asyncio.sleep(0.02)

    async def rolled(image: str) -> bool:
        pods = live(await pods_of(client, "app=crash"))
        return len(pods) == 4 and all(p.spec.containers[0].image == image and ready(p) for p in pods)

    task = asyncio.create_task(kubelet())
    try:
        await eventually(lambda: rolled("cowpod/busybox:one"), what="first rollout")
        ready_counts.clear()
        cur = await client.deployments.Get(meta_pb2.ObjectKey(namespace="default", name="crash"))
        cur.spec.template.spec.containers[0].image = "cowpod/busybox:two"
        cur.metadata.resource_version = 0
        await client.deployments.Update(cur)

        async def stuck_mid_way() -> bool:
            pods = live(await pods_of(client, "app=crash"))
            return sum(1 for p in pods if p.spec.containers[0].image.endswith("two")) == 2

        await eventually(stuck_mid_way, what="the rollout waiting on unready new pods")
        await controller.restart()
        hold.set()
        await eventually(lambda: rolled("cowpod/busybox:two"), what="the rollout finished after the restart")
    finally:
        task.cancel()
    assert min(ready_counts) >= 3, ready_counts


async def test_recreate_never_runs_old_and_new_together(client: Client) -> None:
    d = workload_pb2.Deployment()
    d.metadata.name = "recreate"
    d.spec.replicas = 2
    d.spec.strategy.type = "Recreate"
    template(d.spec.template, "recreate", "cowpod/busybox:one")
    await client.deployments.Create(d)
    mixed: list[set[str]] = []

    async def kubelet() -> None:
        while True:
            pods = live(await pods_of(client, "app=recreate"))
            mixed.append({p.spec.containers[0].image for p in pods})
            for p in pods:
                if not ready(p):
                    await set_phase(client, p, "Running", is_ready=True)
            await asyncio.sleep(0.02)

    async def rolled(image: str) -> bool:
        pods = live(await pods_of(client, "app=recreate"))
        return len(pods) == 2 and all(p.spec.containers[0].image == image and ready(p) for p in pods)

    task = asyncio.create_task(kubelet())
    try:
        await eventually(lambda: rolled("cowpod/busybox:one"), what="first rollout")
        cur = await client.deployments.Get(meta_pb2.ObjectKey(namespace="default", name="recreate"))
        cur.spec.template.spec.containers[0].image = "cowpod/busybox:two"
        cur.metadata.resource_version = 0
        await client.deployments.Update(cur)
        await eventually(lambda: rolled("cowpod/busybox:two"), what="the recreate rollout")
    finally:
        task.cancel()
    assert all(len(images) <= 1 for images in mixed), [m for m in mixed if len(m) > 1][:3]


async def test_a_new_node_gets_its_daemon_pod_from_the_watch_not_a_resync(etcd: EtcdMember,
                                                                           etcd_prefix: str) -> None:
    """The DaemonSet loop runs here with a resync of an hour (the controller's own is off): the
    pod on a node registered later can only come from the node watch."""
    async with ControllerRunner(etcd.endpoint, etcd_prefix, replicaset_controller=False) as runner, \
            Client(runner.address) as c:
        loop = DaemonSetController(c, resync_seconds=3600.0)
        task = asyncio.create_task(loop.run())
        try:
            ds = workload_pb2.DaemonSet()
            ds.metadata.name = "watcher"
            template(ds.spec.template, "watcher", "cowpod/busybox:latest")
            await c.daemonsets.Create(ds)
            await make_node(c, "w-1")

            async def on(*nodes: str) -> bool:
                pods = live(await pods_of(c, "app=watcher"))
                return sorted(p.spec.node_name for p in pods) == sorted(nodes)

            await eventually(lambda: on("w-1"), timeout=20, what="the pod on w-1")
            await make_node(c, "w-clone")
            await eventually(lambda: on("w-1", "w-clone"), timeout=20, what="the pod on the later node")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_daemonset_rolling_update_replaces_one_node_at_a_time(client: Client) -> None:
    for n in ("ru-1", "ru-2", "ru-3"):
        await make_node(client, n)
    ds = workload_pb2.DaemonSet()
    ds.metadata.name = "agentd"
    template(ds.spec.template, "agentd", "cowpod/busybox:one")
    await client.daemonsets.Create(ds)
    ready_nodes: list[int] = []

    async def kubelet() -> None:
        while True:
            pods = live(await pods_of(client, "app=agentd"))
            ready_nodes.append(len({p.spec.node_name for p in pods if ready(p)}))
            for p in pods:
                if not ready(p):
                    await set_phase(client, p, "Running", is_ready=True)
            await asyncio.sleep(0.02)

    async def all_on(image: str) -> bool:
        pods = live(await pods_of(client, "app=agentd"))
        return (sorted(p.spec.node_name for p in pods) == ["ru-1", "ru-2", "ru-3"]
                and all(p.spec.containers[0].image == image and ready(p) for p in pods))

    task = asyncio.create_task(kubelet())
    try:
        await eventually(lambda: all_on("cowpod/busybox:one"), what="a ready pod on each node")
        ready_nodes.clear()
        cur = await client.daemonsets.Get(meta_pb2.ObjectKey(namespace="default", name="agentd"))
        cur.spec.template.spec.containers[0].image = "cowpod/busybox:two"
        cur.metadata.resource_version = 0
        await client.daemonsets.Update(cur)
        await eventually(lambda: all_on("cowpod/busybox:two"), what="every node on the new template")
    finally:
        task.cancel()
    assert min(ready_nodes) >= 2, ready_nodes  # maxUnavailable 1 of 3 nodes

    async def status_updated() -> bool:
        st = (await client.daemonsets.Get(meta_pb2.ObjectKey(namespace="default", name="agentd"))).status
        return (st.desired_number_scheduled, st.updated_number_scheduled, st.number_available) == (3, 3, 3)

    await eventually(status_updated, what="status: 3 desired, 3 updated, 3 available")
