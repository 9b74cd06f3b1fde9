"""Services and Endpoints through the real controller on a real etcd: what a headless
Service may say, and Endpoints that follow the ready pods its selector picks."""

from __future__ import annotations

import grpc
import pytest

from cowpod.client import Client
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2, service_pb2
from tests.polling import eventually

pytestmark = pytest.mark.integration


def make_service(name: str, **spec: object) -> service_pb2.Service:
    svc = service_pb2.Service(spec=service_pb2.ServiceSpec(**spec))  # type: ignore[arg-type]
    svc.metadata.name = name
    return svc


async def invalid(client: Client, svc: service_pb2.Service) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.services.Create(svc)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return str(err.value.details())


async def test_a_service_is_headless_and_says_why_it_refuses(client: Client) -> None:
    web = make_service("web", selector={"app": "web"}, ports=[service_pb2.ServicePort(port=80)])
    created = await client.services.Create(web)
    assert (created.spec.cluster_ip, created.spec.type) == ("None", "ClusterIP")
    assert created.spec.ports[0].protocol == "TCP" and created.spec.ports[0].target_port == "80"

    assert (await invalid(client, make_service("np", type="NodePort"))).startswith("spec.type:")
    # LoadBalancer: accepted as on Kubernetes without a cloud provider, with a warning.
    call = client.services.Create(make_service("lb", type="LoadBalancer", selector={"app": "web"}))
    lb = await call
    assert (lb.spec.type, lb.spec.cluster_ip) == ("LoadBalancer", "None")
    warnings = [v for k, v in await call.trailing_metadata() if k == "warning"]
    assert len(warnings) == 1 and "no load balancer" in warnings[0], warnings
    await client.services.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="lb")))
    assert "headless" in await invalid(client, make_service("ip", cluster_ip="10.0.0.7"))
    two = make_service("two", ports=[service_pb2.ServicePort(port=80), service_pb2.ServicePort(port=81)])
    assert (await invalid(client, two)).startswith("spec.ports[0].name: required")
    bad_target = make_service("bt", ports=[service_pb2.ServicePort(port=80, target_port="Not_A_Name")])
    assert (await invalid(client, bad_target)).startswith("spec.ports[0].targetPort")
    assert (await invalid(client, make_service("Bad.Name"))).startswith("metadata.name")
    # Nothing refused was stored.
    names = {s.metadata.name for s in (await client.services.List(meta_pb2.ListOptions())).items}
    assert names == {"web"}


async def _running_pod(client: Client, name: str, labels: dict[str, str], ip: str, *, ready: bool) -> None:
    pod = pod_pb2.Pod()
    pod.metadata.name = name
    pod.metadata.labels.update(labels)
    c = pod.spec.containers.add(name="main", image="cowpod/busybox:latest")
    c.ports.add(name="http", container_port=8080)
    await client.pods.Create(pod)
    await client.pods.Bind(pod_pb2.Binding(pod=meta_pb2.ObjectKey(name=name), node_name="n1"))
    await set_ready(client, name, ip, ready)


async def set_ready(client: Client, name: str, ip: str, ready: bool) -> None:
    pod = await client.pods.Get(meta_pb2.ObjectKey(name=name))
    pod.status.phase = "Running"
    pod.status.pod_ip = ip
    del pod.status.conditions[:]
    pod.status.conditions.add(type="Ready", status="True" if ready else "False")
    await client.pods.UpdateStatus(pod)


async def endpoints(client: Client, name: str) -> service_pb2.Endpoints | None:
    try:
        ep: service_pb2.Endpoints = await client.endpoints.Get(meta_pb2.ObjectKey(name=name))
        return ep
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


def addresses(ep: service_pb2.Endpoints | None) -> tuple[list[str], list[str]]:
    if ep is None:
        return [], []
    return ([a.target_ref.name for s in ep.subsets for a in s.addresses],
            [a.target_ref.name for s in ep.subsets for a in s.not_ready_addresses])


async def test_endpoints_follow_ready_pods(client: Client) -> None:
    node = node_pb2.Node()
    node.metadata.name = "n1"
    node.status.capacity.cpu_millis = 4000
    node.status.capacity.memory_bytes = 8 << 30
    node.status.capacity.pods = 10
    await client.nodes.Register(node)
    port = service_pb2.ServicePort(name="web", port=80, target_port="http")
    await client.services.Create(make_service("web", selector={"app": "web"}, ports=[port]))
    await _running_pod(client, "web-1", {"app": "web"}, "10.1.0.1", ready=True)
    await _running_pod(client, "web-2", {"app": "web"}, "10.1.0.2", ready=False)
    await _running_pod(client, "other", {"app": "db"}, "10.1.0.3", ready=True)

    async def split_is(ready: list[str], not_ready: list[str]) -> bool:
        return addresses(await endpoints(client, "web")) == (ready, not_ready)

    await eventually(lambda: split_is(["web-1"], ["web-2"]), what="web-1 ready, web-2 not", timeout=20.0)
    ep = await endpoints(client, "web")
    assert ep is not None
    # The named target port is resolved against each pod's containerPorts.
    assert [(p.name, p.port, p.protocol) for p in ep.subsets[0].ports] == [("web", 8080, "TCP")]
    assert ep.subsets[0].addresses[0].ip == "10.1.0.1" and ep.subsets[0].addresses[0].node_name == "n1"

    await set_ready(client, "web-2", "10.1.0.2", True)
    await eventually(lambda: split_is(["web-1", "web-2"], []), what="both ready", timeout=20.0)
    gone_now = meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="web-1"), grace_period_seconds=0)
    await client.pods.Delete(gone_now)
    await eventually(lambda: split_is(["web-2"], []), what="web-1 gone from the endpoints", timeout=20.0)

    # A Service created after its pods gets its Endpoints too; deleting it deletes them.
    await client.services.Create(make_service("db", selector={"app": "db"}))
    await eventually(lambda: _has(client, "db", ["other"]), what="db endpoints", timeout=20.0)
    await client.services.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="db")))

    async def gone() -> bool:
        return await endpoints(client, "db") is None

    await eventually(gone, what="db endpoints deleted with the service", timeout=20.0)

    # Endpoints are the controller's: clients have no verb to write them.
    assert not hasattr(client.endpoints, "Create") and not hasattr(client.endpoints, "Update")


async def _has(client: Client, name: str, ready: list[str]) -> bool:
    return addresses(await endpoints(client, name))[0] == ready


async def test_a_service_update_replaces_the_spec_defaulted_again(client: Client) -> None:
    created = await client.services.Create(
        make_service("web", selector={"app": "web"}, ports=[service_pb2.ServicePort(port=80)]))
    assert created.metadata.generation == 1

    # Labels only: stored, the spec and its generation unchanged.
    created.metadata.labels["tier"] = "front"
    relabelled = await client.services.Update(created)
    assert relabelled.metadata.labels == {"tier": "front"} and relabelled.metadata.generation == 1

    # A new spec replaces the old one whole, defaulted as at create; the generation moves.
    change = service_pb2.Service()
    change.CopyFrom(relabelled)
    change.spec.ClearField("ports")
    change.spec.ports.add(name="http", port=8080)
    updated = await client.services.Update(change)
    assert [(p.port, p.protocol, p.target_port) for p in updated.spec.ports] == [(8080, "TCP", "8080")]
    assert (updated.spec.cluster_ip, updated.spec.type) == ("None", "ClusterIP")
    assert updated.metadata.generation == 2 and updated.metadata.uid == created.metadata.uid

    # A stale resourceVersion is a conflict; an invalid spec names its field; neither is stored.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.services.Update(relabelled)
    assert err.value.code() == grpc.StatusCode.ABORTED
    updated.spec.type = "NodePort"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.services.Update(updated)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(err.value.details()).startswith("spec.type:")
    stored = await client.services.Get(meta_pb2.ObjectKey(name="web"))
    assert stored.spec.type == "ClusterIP" and stored.metadata.generation == 2
