"""Issue #14's Pod fields through the real controller and a real etcd: PriorityClasses
and a pod's priority, named probe ports resolved at create, the server's warnings in
the answer's trailing metadata, refusals naming the field."""

from __future__ import annotations

import grpc
import pytest

from controller.rpc import WARNING_KEY
from controller.testing import make_pod
from cowpod.client import Client
from cowpod.v1 import meta_pb2, pod_pb2, scheduling_pb2

pytestmark = pytest.mark.integration


def priority_class(name: str, value: int, *, default: bool = False,
                   policy: str = "") -> scheduling_pb2.PriorityClass:
    pc = scheduling_pb2.PriorityClass(value=value, global_default=default, preemption_policy=policy)
    pc.metadata.name = name
    return pc


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call  # type: ignore[misc]
    return e.value


async def test_priority_class_gives_pods_their_priority(client: Client) -> None:
    high = await client.priorityclasses.Create(priority_class("high-priority", 1_000_000))
    assert high.preemption_policy == "PreemptLowerPriority"
    pod = make_pod("urgent")
    pod.spec.priority_class_name = "high-priority"
    created = await client.pods.Create(pod)
    assert (created.spec.priority, created.spec.preemption_policy) == (1_000_000, "PreemptLowerPriority")

    plain = await client.pods.Create(make_pod("plain"))
    assert (plain.spec.priority, plain.spec.priority_class_name) == (0, "")

    missing = make_pod("lost")
    missing.spec.priority_class_name = "no-such-class"
    err = await refused(client.pods.Create(missing))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.priorityClassName" in (err.details() or "") and "no-such-class" in (err.details() or "")

    builtin = make_pod("critical")
    builtin.spec.priority_class_name = "system-node-critical"
    assert (await client.pods.Create(builtin)).spec.priority == 2_000_001_000


async def test_global_default_and_the_rules_of_classes(client: Client) -> None:
    await client.priorityclasses.Create(priority_class("batch", 100, default=True, policy="Never"))
    pod = await client.pods.Create(make_pod("p"))
    spec = pod.spec
    assert (spec.priority_class_name, spec.priority, spec.preemption_policy) == ("batch", 100, "Never")

    err = await refused(client.priorityclasses.Create(priority_class("other", 5, default=True)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "globalDefault" in (err.details() or "")
    err = await refused(client.priorityclasses.Create(priority_class("huge", 2_000_000_000)))
    assert "value" in (err.details() or "")
    err = await refused(client.priorityclasses.Create(priority_class("system-mine", 1)))
    assert "metadata.name" in (err.details() or "")

    cur = await client.priorityclasses.Get(meta_pb2.ObjectKey(name="batch"))
    cur.value = 7
    err = await refused(client.priorityclasses.Update(cur))
    assert "value" in (err.details() or "") and "immutable" in (err.details() or "")

    names = [pc.metadata.name for pc in (await client.priorityclasses.List(meta_pb2.ListOptions())).items]
    assert names == ["system-cluster-critical", "system-node-critical", "batch"]
    await client.priorityclasses.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="batch")))
    err = await refused(client.priorityclasses.Delete(
        meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="system-node-critical"))))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_named_probe_port_is_resolved_at_create(client: Client) -> None:
    pod = make_pod("web")
    c = pod.spec.containers[0]
    c.ports.add(name="http", container_port=8080)
    c.liveness_probe.http_get.CopyFrom(pod_pb2.HTTPGetAction(path="/healthz", port_name="http"))
    created = await client.pods.Create(pod)
    got = created.spec.containers[0].liveness_probe.http_get
    assert (got.port, got.port_name) == (8080, "http")

    bad = make_pod("bad")
    bad.spec.containers[0].readiness_probe.tcp_socket.port_name = "nope"
    err = await refused(client.pods.Create(bad))
    assert "spec.containers[0].readinessProbe.tcpSocket.port" in (err.details() or "")


async def test_ignored_fields_come_back_as_warnings_in_trailing_metadata(client: Client) -> None:
    pod = make_pod("k8s")
    pod.spec.dns_policy = "ClusterFirst"
    pod.spec.service_account_name = "builder"
    pod.spec.image_pull_secrets.add(name="regcred")
    call = client.pods.Create(pod)
    created = await call
    assert created.spec.service_account_name == "builder"
    warnings = [v for k, v in (await call.trailing_metadata()) if k == WARNING_KEY]
    assert [w.split(":")[0] for w in warnings] == ["spec.serviceAccountName",
                                                    "spec.imagePullSecrets"]
    clean = client.pods.Create(make_pod("clean"))
    await clean
    assert [k for k, _ in (await clean.trailing_metadata()) if k == WARNING_KEY] == []


async def test_field_refs_the_agent_cannot_resolve_are_refused(client: Client) -> None:
    pod = make_pod("env")
    pod.spec.containers[0].env.add(name="X").value_from.field_ref.field_path = "spec.hostname"
    err = await refused(client.pods.Create(pod))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath" in (err.details() or "")


async def test_update_of_a_pod_with_named_ports_as_written(client: Client) -> None:
    pod = make_pod("web")
    pod.spec.containers[0].ports.add(name="http", container_port=8080)
    pod.spec.containers[0].liveness_probe.http_get.port_name = "http"
    await client.pods.Create(pod)
    # What `cowpod apply` sends after an image change: the containers as the manifest says.
    pod.spec.containers[0].image = "cowpod/busybox:other"
    updated = await client.pods.Update(pod)
    c = updated.spec.containers[0]
    assert (c.image, c.liveness_probe.http_get.port) == ("cowpod/busybox:other", 8080)


async def test_update_keeps_the_priority_filled_at_create(client: Client) -> None:
    await client.priorityclasses.Create(priority_class("everyone", 50, default=True))
    created = await client.pods.Create(make_pod("p"))
    assert (created.spec.priority_class_name, created.spec.priority) == ("everyone", 50)
    req = make_pod("p")  # as written: no priority, no class
    req.spec.containers[0].image = "cowpod/busybox:other"
    updated = await client.pods.Update(req)
    assert (updated.spec.priority_class_name, updated.spec.priority, updated.spec.containers[0].image) == (
        "everyone", 50, "cowpod/busybox:other")


async def test_workload_templates_get_the_same_warnings(client: Client) -> None:
    from cowpod.manifest import load_text

    (doc,) = load_text("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      imagePullSecrets: [{name: regcred}]
      containers: [{name: web, image: cowpod/busybox:latest}]
""", "d.yaml")
    call = client.deployments.Create(doc.obj)
    await call
    warnings = [v for k, v in (await call.trailing_metadata()) if k == WARNING_KEY]
    assert [w.split(":")[0] for w in warnings] == ["spec.template.spec.imagePullSecrets"]


async def test_pod_security_rules_refuse_a_privileged_pod_and_template(client: Client) -> None:
    from cowpod.manifest import load_text

    pod = make_pod("priv")
    pod.spec.containers[0].security_context.privileged = True
    err = await refused(client.pods.Create(pod))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.containers[0].securityContext.privileged" in (err.details() or "")

    (doc,) = load_text("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: tools, namespace: default}
spec:
  selector: {matchLabels: {app: tools}}
  template:
    metadata: {labels: {app: tools}}
    spec:
      containers:
      - name: t
        image: cowpod/busybox:latest
        securityContext: {capabilities: {add: [NET_ADMIN]}}
""", "d.yaml")
    err = await refused(client.deployments.Create(doc.obj))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.template.spec.containers[0].securityContext.capabilities.add" in (err.details() or "")
