"""PodService.CreateBatch: each pod created exactly as by Create, each with its own outcome."""

from __future__ import annotations

import grpc
import pytest

from controller.auth.authorizer import authorize
from controller.auth.identity import identity_from_subject, identity_from_token
from controller.testing import make_node, make_pod
from cowpod.client import Client
from cowpod.pki import Subject, node_subject
from cowpod.v1 import meta_pb2, pod_pb2

pytestmark = pytest.mark.integration


def _code(value: int) -> grpc.StatusCode:
    return next(c for c in grpc.StatusCode if c.value[0] == value)


async def test_create_batch_mixed_outcomes(client: Client) -> None:
    await make_node(client, "n1")
    await client.pods.Create(make_pod("exists"))
    bad = make_pod("bad")
    bad.spec.containers[0].image = ""
    sock = make_pod("sock")
    sock.spec.volumes.add(name="d").host_path.path = "/var/run/docker.sock"
    gen = make_pod("")
    gen.metadata.generate_name = "job-"
    gen.metadata.namespace = ""
    placed = make_pod("placed")
    placed.spec.node_name = "n1"
    pods = [make_pod("a"), bad, make_pod("exists"), sock, gen, make_pod("a"), placed]
    resp = await client.pods.CreateBatch(pod_pb2.CreatePodsRequest(pods=pods))
    got = [(r.pod.name[:4], r.ok, grpc.StatusCode.OK if r.ok else _code(r.code)) for r in resp.results]
    # The same name twice: exactly one wins (which one is up to etcd).
    assert sorted([got[0], got[5]]) == [
        ("a", False, grpc.StatusCode.ALREADY_EXISTS),
        ("a", True, grpc.StatusCode.OK),
    ]
    got[0] = got[5] = ("a", True, grpc.StatusCode.OK)
    assert got == [
        ("a", True, grpc.StatusCode.OK),
        ("bad", False, grpc.StatusCode.INVALID_ARGUMENT),
        ("exis", False, grpc.StatusCode.ALREADY_EXISTS),
        ("sock", False, grpc.StatusCode.INVALID_ARGUMENT),
        ("job-", True, grpc.StatusCode.OK),
        ("a", True, grpc.StatusCode.OK),
        ("plac", True, grpc.StatusCode.OK),
    ]
    assert "spec.containers[0].image" in resp.results[1].message
    assert "spec.volumes[0].hostPath.path" in resp.results[3].message
    job = resp.results[4]
    assert job.pod.namespace == "default" and len(job.pod.name) == len("job-") + 5
    stored = await client.pods.Get(job.pod)
    assert stored.metadata.uid == job.uid and stored.metadata.resource_version == job.resource_version
    assert stored.status.phase == "Pending" and stored.spec.restart_policy == "Always"
    listed = (await client.pods.List(meta_pb2.ListOptions())).items
    names = {p.metadata.name: p.spec.node_name for p in listed}
    assert names == {"exists": "", "a": "", job.pod.name: "", "placed": "n1"}


def test_who_may_create_in_batches() -> None:
    method = "/cowpod.v1.PodService/CreateBatch"
    req = pod_pb2.CreatePodsRequest()
    assert authorize(identity_from_token("aaaaaaaa", "edit"), method, req).allowed
    assert not authorize(identity_from_token("bbbbbbbb", "view"), method, req).allowed
    assert not authorize(identity_from_subject(node_subject("n1")), method, req).allowed
    assert not authorize(identity_from_subject(Subject("system:scheduler")), method, req).allowed
