"""Deployments, Jobs and DaemonSets end to end: `cowpod up --detach` with one VM on the real
Docker engine and a real etcd (the session's shared cluster), the agent running the pods and
their readiness probes.

- A Deployment rolled from one image tag to another (a second local tag of the busybox
  image) never has fewer than `replicas - maxUnavailable` Ready pods: a watch records the
  Ready count after every pod event, from before the change until the rollout is done.
- A Job with `completions: 3, parallelism: 2` completes and never has more than 2 pods
  active at once (recorded the same way).
- A DaemonSet gets a pod on the node of a VM cloned after it was created.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from cowpod.api.phases import is_terminal
from cowpod.auth.credentials import connect
from cowpod.client import Client
from cowpod.config import load_config
from cowpod.v1 import meta_pb2, pod_pb2
from tests.e2e.cli_cluster import ROOT, CliCluster
from tests.polling import eventually

pytestmark = pytest.mark.e2e

BASE_IMAGE = "cowpod/busybox:latest"


@dataclass
class Cluster:
    cli: CliCluster
    # The cluster's one VM (and node).
    vm: str

    def run(self, *args: str, timeout: float = 300) -> str:
        return self.cli.run(*args, timeout=timeout).stdout

    async def arun(self, *args: str, timeout: float = 300) -> str:
        return await asyncio.to_thread(self.run, *args, timeout=timeout)

    def apply(self, manifest: str) -> str:
        return self.cli.run("apply", "-f", "-", stdin=manifest, timeout=60).stdout

    @asynccontextmanager
    async def client(self) -> AsyncIterator[Client]:
        cfg = load_config(env=self.cli.env)
        c = connect(cfg.connection)
        try:
            yield c
        finally:
            await c.close()


@pytest.fixture(scope="module")
def cluster(default_cluster: CliCluster) -> Cluster:
    return Cluster(default_cluster, vm="vm-1")


@pytest.fixture
def two_tags() -> Iterator[tuple[str, str]]:
    """Two tags of the local busybox image, this test's own (removed afterwards: untagged only)."""
    run = uuid.uuid4().hex[:8]
    tags = (f"cowpod/busybox:roll-a-{run}", f"cowpod/busybox:roll-b-{run}")
    for t in tags:
        subprocess.run(["docker", "tag", BASE_IMAGE, t], check=True)
    try:
        yield tags
    finally:
        subprocess.run(["docker", "rmi", *tags], capture_output=True)


@dataclass
class PodWatch:
    """Every pod matching a selector, kept from a watch; the counts are recorded after each event."""

    pods: dict[str, pod_pb2.Pod] = field(default_factory=dict)
    ready: list[int] = field(default_factory=list)
    active: list[int] = field(default_factory=list)

    def record(self) -> None:
        live = [p for p in self.pods.values()
                if not p.metadata.HasField("deletion_timestamp") and not is_terminal(p.status.phase)]
        self.active.append(len(live))
        self.ready.append(sum(1 for p in live
                              if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)))

    async def run(self, client: Client, selector: str, synced: asyncio.Event) -> None:
        opts = meta_pb2.ListOptions(namespace="default", label_selector=selector)
        listed = await client.pods.List(opts)
        for p in listed.items:
            self.pods[p.metadata.name] = p
        self.record()
        synced.set()
        req = meta_pb2.WatchOptions(list=opts, resource_version=listed.resource_version)
        async for ev in client.pods.Watch(req):
            if ev.type == meta_pb2.BOOKMARK or not ev.HasField("object"):
                continue
            if ev.type == meta_pb2.DELETED:
                self.pods.pop(ev.object.metadata.name, None)
            else:
                self.pods[ev.object.metadata.name] = ev.object
            self.record()


@asynccontextmanager
async def watching(cluster: Cluster, selector: str) -> AsyncIterator[PodWatch]:
    w = PodWatch()
    synced = asyncio.Event()
    async with cluster.client() as client:
        task = asyncio.create_task(w.run(client, selector, synced))
        await asyncio.wait_for(synced.wait(), 30)
        try:
            yield w
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def deployment(image: str) -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: roll}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: roll}}}}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}}}
  template:
    metadata: {{labels: {{app: roll}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        command: ["sh", "-c", "sleep 1; touch /tmp/ready; exec sleep 3600"]
        readinessProbe:
          exec: {{command: [cat, /tmp/ready]}}
          periodSeconds: 1
        resources: {{requests: {{cpu: 10m, memory: 8Mi}}}}
"""


async def test_rolling_update_between_tags_keeps_min_ready(cluster: Cluster, two_tags: tuple[str, str]
                                                           ) -> None:
    old, new = two_tags
    cluster.apply(deployment(old))
    await cluster.arun("rollout", "status", "deploy/roll", "--timeout", "240s")
    async with watching(cluster, "app=roll") as w:
        assert w.ready[-1] == 3
        cluster.apply(deployment(new))
        out = await cluster.arun("rollout", "status", "deploy/roll", "--timeout", "240s")
        assert 'deployment "roll" successfully rolled out' in out
        final = [p for p in w.pods.values() if not p.metadata.HasField("deletion_timestamp")]
    # replicas - maxUnavailable = 2 at every moment the watch saw.
    assert min(w.ready) >= 2, w.ready
    assert max(w.active) <= 4, w.active  # replicas + maxSurge
    assert len(w.ready) > 6  # it saw the rollout, not just its end
    assert sorted(p.spec.containers[0].image for p in final if p.status.phase == "Running") == [new] * 3
    history = await cluster.arun("rollout", "history", "deploy/roll")
    assert [line.split()[0] for line in history.splitlines()[2:]] == ["1", "2"]
    await cluster.arun("delete", "deploy", "roll")


JOB = """
apiVersion: batch/v1
kind: Job
metadata: {name: three}
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: cowpod/busybox:latest
        command: ["sh", "-c", "sleep 2; echo done"]
        resources: {requests: {cpu: 10m, memory: 8Mi}}
"""


async def test_job_three_completions_two_at_a_time(cluster: Cluster) -> None:
    async with watching(cluster, "job-name=three") as w:
        cluster.apply(JOB)
        out = await cluster.arun("wait", "--for=condition=complete", "job/three", "--timeout", "240s")
        assert "job/three condition met" in out
        succeeded = [p for p in w.pods.values() if p.status.phase == "Succeeded"]
    assert max(w.active) == 2, w.active
    assert len(succeeded) == 3
    table = await cluster.arun("get", "jobs")
    assert table.splitlines()[1].split()[:3] == ["three", "Complete", "3/3"]
    await cluster.arun("delete", "job", "three")


DAEMONSET = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: per-node}
spec:
  selector: {matchLabels: {app: per-node}}
  template:
    metadata: {labels: {app: per-node}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: cowpod/busybox:latest
        command: ["sleep", "3600"]
        resources: {requests: {cpu: 5m, memory: 8Mi}}
"""


async def pods_on_nodes(client: Client) -> dict[str, str]:
    lst = await client.pods.List(meta_pb2.ListOptions(namespace="default", label_selector="app=per-node"))
    live = [p for p in lst.items if not p.metadata.HasField("deletion_timestamp")]
    return {p.spec.node_name: p.status.phase for p in live}


async def test_daemonset_pod_on_a_node_cloned_later(cluster: Cluster) -> None:
    cluster.apply(DAEMONSET)
    async with cluster.client() as client:
        async def on(nodes: set[str]) -> bool:
            got = await pods_on_nodes(client)
            return set(got) == nodes and all(ph == "Running" for ph in got.values())

        clone = f"{cluster.vm}-ds"
        await eventually(
            lambda: on({cluster.vm}), timeout=120, what=f"a running daemon pod on {cluster.vm}", interval=0.2
        )
        await cluster.arun("vm", "clone", cluster.vm, "--name", clone, "--wait", "--timeout", "180s")
        await eventually(
            lambda: on({cluster.vm, clone}),
            timeout=120,
            what=f"a running daemon pod on the clone {clone}",
            interval=0.2,
        )
        ds = await cluster.arun("get", "ds", "per-node")
        assert ds.splitlines()[1].split()[1:6] == ["2", "2", "2", "2", "2"], ds
        await cluster.arun("delete", "ds", "per-node")
        await cluster.arun("vm", "destroy", clone, "--wait", "--timeout", "180s")


async def test_app_example_serves_its_configmap_through_its_service(cluster: Cluster) -> None:
    """examples/app.yaml (the README's): a pod resolves the Service name to the Deployment's
    Ready pod, which serves the ConfigMap's page."""
    cluster.apply((ROOT / "examples" / "app.yaml").read_text())
    await cluster.arun("rollout", "status", "deploy/hello-web", "--timeout", "240s")
    pods = (await cluster.arun("get", "pods", "-l", "app=hello-web", "-o", "name")).split()
    assert len(pods) == 1
    page = await cluster.arun("exec", pods[0].split("/", 1)[1], "--", "wget", "-qO-", "http://hello-web:8080")
    assert page.strip() == "hello from a cowpod Deployment"
    await cluster.arun("delete", "-f", str(ROOT / "examples" / "app.yaml"))
