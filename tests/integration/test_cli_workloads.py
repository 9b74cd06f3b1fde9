"""The CLI on Deployments, Jobs and DaemonSets against a real controller on a real etcd:
apply the examples, get/describe, rollout status|history|undo|restart, scale, wait for a Job.
No agents: a helper plays the kubelet (pods Ready, or Succeeded) through the API."""

from __future__ import annotations

import asyncio
import io
import json
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from controller.resource import set_time
from controller.testing import ControllerRunner, make_node
from cowpod.cli.main import main
from cowpod.client import Client
from cowpod.v1 import meta_pb2, pod_pb2
from tests.polling import eventually

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parents[2]


@dataclass
class Result:
    code: int
    out: str
    err: str


Cli = Callable[..., Awaitable[Result]]


@pytest.fixture
def cli(controller: ControllerRunner, tmp_path: pathlib.Path) -> Cli:
    env = {"HOME": str(tmp_path), "COWPOD_DATA_DIR": str(tmp_path / "data")}

    async def run(*args: str) -> Result:
        out, err = io.StringIO(), io.StringIO()
        argv = [*args, "--controller", controller.address]
        code = await asyncio.to_thread(main, argv, env=env, stdout=out, stderr=err, stdin=io.StringIO(""))
        return Result(code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture
async def kubelet(client: Client) -> AsyncIterator[set[str]]:
    """Makes every live pod Running and Ready; pods whose job-name is in the yielded set finish
    Succeeded instead."""
    finishing: set[str] = set()

    async def loop() -> None:
        while True:
            pods = await client.pods.List(meta_pb2.ListOptions(namespace="default"))
            for p in pods.items:
                if p.metadata.HasField("deletion_timestamp") or p.status.phase in ("Succeeded", "Failed"):
                    continue
                done = p.metadata.labels.get("job-name") in finishing
                if not done and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions):
                    continue
                st = pod_pb2.Pod()
                st.metadata.namespace, st.metadata.name = p.metadata.namespace, p.metadata.name
                st.status.phase = "Succeeded" if done else "Running"
                c = st.status.conditions.add(type="Ready", status="False" if done else "True")
                set_time(c.last_transition_time, 1.0)
                await client.pods.UpdateStatus(st)
            await asyncio.sleep(0.05)

    task = asyncio.create_task(loop())
    yield finishing
    task.cancel()


async def test_deployment_verbs(cli: Cli, kubelet: set[str]) -> None:
    r = await cli("apply", "-f", str(ROOT / "examples" / "deployment.yaml"))
    assert r.code == 0 and "deployment" in r.out and "web" in r.out, r.err
    r = await cli("rollout", "status", "deploy/web", "--timeout", "60s")
    assert (r.code, r.out.strip()) == (0, 'deployment "web" successfully rolled out'), r.err
    r = await cli("get", "deploy")
    assert r.out.split("\n")[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert r.out.split("\n")[1].split()[:4] == ["web", "3/3", "3", "3"]

    r = await cli("scale", "deploy/web", "--replicas", "2")
    assert (r.code, r.out) == (0, "deployment.apps/web scaled\n"), r.err
    r = await cli("rollout", "status", "deploy/web", "--timeout", "60s")
    assert r.code == 0, r.err

    r = await cli("rollout", "restart", "deploy/web")
    assert (r.code, r.out) == (0, "deployment.apps/web restarted\n"), r.err
    r = await cli("rollout", "status", "deploy/web", "--timeout", "60s")
    assert r.code == 0, r.err
    r = await cli("rollout", "history", "deploy/web")
    assert [line.split()[0] for line in r.out.splitlines()[1:]] == ["REVISION", "1", "2"], r.out

    r = await cli("rollout", "undo", "deploy/web")
    assert (r.code, r.out) == (0, "deployment.apps/web rolled back\n"), r.err
    r = await cli("rollout", "status", "deploy/web", "--timeout", "60s")
    assert r.code == 0, r.err
    r = await cli("rollout", "history", "deploy/web")
    assert [line.split()[0] for line in r.out.splitlines()[2:]] == ["2", "3"], r.out  # 1 came back as 3
    r = await cli("get", "deploy", "web", "-o", "json")
    annotations = json.loads(r.out)["spec"]["template"]["metadata"].get("annotations", {})
    assert "kubectl.kubernetes.io/restartedAt" not in annotations

    r = await cli("describe", "deploy", "web")
    assert r.code == 0 and "RollingUpdateStrategy:  1 max unavailable, 1 max surge" in r.out, r.out
    assert "NewReplicaSet:" in r.out and "Progressing" in r.out
    r = await cli("get", "rs")
    assert r.code == 0 and r.out.count("web-") == 2

    r = await cli("rollout", "undo", "deploy/web", "--to-revision", "9")
    assert r.code == 1 and "unable to find the specified revision 9" in r.err
    r = await cli("delete", "deploy", "web")
    assert r.code == 0, r.err


async def test_job_wait_complete(cli: Cli, kubelet: set[str]) -> None:
    r = await cli("apply", "-f", str(ROOT / "examples" / "job.yaml"))
    assert r.code == 0, r.err
    r = await cli("wait", "--for=condition=complete", "job/count", "--timeout", "1s")
    assert r.code == 1 and "timed out" in r.err
    kubelet.add("count")
    r = await cli("wait", "--for=condition=complete", "job/count", "--timeout", "60s")
    assert (r.code, r.out) == (0, "job/count condition met\n"), r.err
    r = await cli("get", "jobs")
    assert r.out.split("\n")[1].split()[:3] == ["count", "Complete", "3/3"], r.out
    r = await cli("describe", "job", "count")
    assert "0 Active (0 Ready) / 3 Succeeded / 0 Failed" in r.out, r.out


async def test_daemonset_get(cli: Cli, client: Client) -> None:
    await make_node(client, "cli-n1")
    r = await cli("apply", "-f", str(ROOT / "examples" / "daemonset.yaml"))
    assert r.code == 0, r.err

    async def scheduled() -> bool:
        r = await cli("get", "ds", "node-log")
        return r.out.split("\n")[1].split()[1:3] == ["1", "1"]

    await eventually(scheduled, what="the DaemonSet's pod scheduled (get ds: 1 desired, 1 current)")
    r = await cli("describe", "ds", "node-log")
    assert "Desired Number of Nodes Scheduled:" in r.out


K8S_DOCS = ROOT / "tests" / "fixtures" / "k8s-docs"


async def test_kubernetes_docs_workload_manifests_apply_and_run(cli: Cli, client: Client) -> None:
    """Each manifest of tests/fixtures/k8s-docs applies as it is and its controller acts on it."""
    await make_node(client, "docs-n1")
    for path in sorted(K8S_DOCS.glob("*.yaml")):
        r = await cli("apply", "-f", str(path))
        assert r.code == 0, f"{path.name}: {r.err}"

    async def pod_counts() -> dict[str, int]:
        """Pods per workload (a ReplicaSet's pods count for its Deployment: `<deployment>-<hash>`)."""
        counts: dict[str, int] = {}
        for ns in ("default", "kube-system"):
            lst = await client.pods.List(meta_pb2.ListOptions(namespace=ns))
            for p in lst.items:
                ref = next(r for r in p.metadata.owner_references if r.controller)
                owner = ref.name.rsplit("-", 1)[0] if ref.kind == "ReplicaSet" else ref.name
                counts[owner] = counts.get(owner, 0) + 1
        return counts

    want = {"nginx-deployment": 3, "rolling-demo": 4, "pi": 1, "job-wq-2": 2, "fluentd-elasticsearch": 1}
    async def as_wanted() -> bool:
        return await pod_counts() == want

    await eventually(as_wanted, what=f"pods per owner {want}")
    r = await cli("get", "ds", "-n", "kube-system")
    assert "fluentd-elasticsearch" in r.out
    r = await cli("rollout", "history", "deploy/rolling-demo")
    assert "image updated to 1.16.1" in r.out, r.out
