"""Deployments, Jobs and DaemonSets as API objects on a real etcd: defaults as Kubernetes
applies them, bad specs refused with the field path, immutable fields, scale, delete."""

from __future__ import annotations

import grpc
import pytest

from cowpod.client import Client
from cowpod.v1 import meta_pb2, workload_pb2

pytestmark = pytest.mark.integration


def template(msg: workload_pb2.PodTemplateSpec, app: str, restart: str = "") -> None:
    msg.metadata.labels["app"] = app
    msg.spec.containers.add(name="main", image="cowpod/busybox:latest", command=["sleep", "1d"])
    if restart:
        msg.spec.restart_policy = restart


def key(name: str) -> meta_pb2.ObjectKey:
    return meta_pb2.ObjectKey(namespace="default", name=name)


async def invalid(call: object, req: object) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call(req)  # type: ignore[operator]
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return str(exc.value.details())


async def test_deployment_defaults_validation_scale_and_immutable_selector(client: Client) -> None:
    d = workload_pb2.Deployment()
    d.metadata.name = "web"
    template(d.spec.template, "web")
    got = await client.deployments.Create(d)
    assert (got.kind, got.api_version) == ("Deployment", "apps/v1")
    assert got.spec.replicas == 1 and got.spec.selector.match_labels["app"] == "web"
    assert got.spec.strategy.type == "RollingUpdate"
    assert (got.spec.strategy.rolling_update.max_surge, got.spec.strategy.rolling_update.max_unavailable) == (
        "25%", "25%")
    assert got.spec.revision_history_limit == 10 and got.spec.progress_deadline_seconds == 600

    scaled = await client.deployments.Scale(workload_pb2.ScaleRequest(key=key("web"), replicas=4))
    assert scaled.spec.replicas == 4 and scaled.metadata.generation == 2

    moved = workload_pb2.Deployment()
    moved.CopyFrom(scaled)
    moved.metadata.resource_version = 0
    moved.spec.selector.match_labels["app"] = "other"
    moved.spec.template.metadata.labels["app"] = "other"
    assert "spec.selector: field is immutable" in await invalid(client.deployments.Update, moved)

    bad = workload_pb2.Deployment()
    bad.metadata.name = "bad"
    template(bad.spec.template, "bad")
    bad.spec.strategy.rolling_update.max_surge = "0"
    bad.spec.strategy.rolling_update.max_unavailable = "0%"
    assert "spec.strategy.rollingUpdate.maxUnavailable" in await invalid(client.deployments.Create, bad)
    bad.spec.strategy.rolling_update.max_unavailable = "150%"
    assert "must not be greater than 100%" in await invalid(client.deployments.Create, bad)
    bad.spec.strategy.rolling_update.max_unavailable = "1"
    bad.spec.template.spec.restart_policy = "Never"
    assert "spec.template.spec.restartPolicy" in await invalid(client.deployments.Create, bad)

    await client.deployments.Delete(meta_pb2.DeleteOptions(key=key("web")))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await client.deployments.Get(key("web"))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


async def test_job_selector_is_generated_and_template_is_immutable(client: Client) -> None:
    j = workload_pb2.Job()
    j.metadata.name = "pi"
    template(j.spec.template, "pi", restart="Never")
    got = await client.jobs.Create(j)
    uid = got.metadata.uid
    assert (got.kind, got.api_version) == ("Job", "batch/v1")
    assert dict(got.spec.selector.match_labels) == {"controller-uid": uid}
    labels = got.spec.template.metadata.labels
    assert labels["controller-uid"] == uid and labels["job-name"] == "pi"
    assert labels["batch.kubernetes.io/job-name"] == "pi"
    assert (got.spec.parallelism, got.spec.completions, got.spec.backoff_limit) == (1, 1, 6)

    # What `apply` sends again (no generated labels) is the same template: accepted.
    again = workload_pb2.Job()
    again.metadata.name = "pi"
    template(again.spec.template, "pi", restart="Never")
    again.spec.parallelism = 3
    updated = await client.jobs.Update(again)
    assert updated.spec.parallelism == 3
    again.spec.template.spec.containers[0].image = "cowpod/busybox:other"
    assert "spec.template: field is immutable" in await invalid(client.jobs.Update, again)

    no_policy = workload_pb2.Job()
    no_policy.metadata.name = "loop"
    template(no_policy.spec.template, "loop")
    assert "must be 'Never' or 'OnFailure'" in await invalid(client.jobs.Create, no_policy)

    own = workload_pb2.Job()
    own.metadata.name = "own"
    template(own.spec.template, "own", restart="OnFailure")
    own.spec.selector.match_labels["app"] = "own"
    assert "manualSelector" in await invalid(client.jobs.Create, own)
    own.spec.manual_selector = True
    assert (await client.jobs.Create(own)).spec.selector.match_labels["app"] == "own"


async def test_daemonset_defaults(client: Client) -> None:
    ds = workload_pb2.DaemonSet()
    ds.metadata.name = "agent"
    template(ds.spec.template, "agent")
    got = await client.daemonsets.Create(ds)
    st = got.spec.update_strategy
    assert (st.type, st.rolling_update.max_unavailable, st.rolling_update.max_surge) == (
        "RollingUpdate", "1", "0")
    assert got.spec.selector.match_labels["app"] == "agent"
    lst = await client.daemonsets.List(meta_pb2.ListOptions(namespace="default"))
    assert [x.metadata.name for x in lst.items] == ["agent"]
