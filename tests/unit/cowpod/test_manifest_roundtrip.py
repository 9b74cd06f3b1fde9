"""Manifest -> proto -> manifest gives the same manifest, and proto -> manifest -> proto the same proto."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from google.protobuf.message import Message

from cowpod.manifest import decode_object, encode_object, load_text, to_json, to_yaml
from cowpod.v1 import pod_pb2
from tests.unit.cowpod import builders

HELLO = """\
apiVersion: v1
kind: Pod
metadata:
  name: hello
  namespace: default
  labels:
    app: hello
  resourceVersion: '42'
  creationTimestamp: '2026-11-25T10:00:00Z'
spec:
  initContainers:
  - name: init
    image: cowpod/busybox:latest
    command: [sh, -c, 'echo init']
  containers:
  - name: hello
    image: cowpod/busybox:latest
    command: [echo, hello from cowpod]
    args: [--verbose]
    env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: GREETING
      value: hi
    ports:
    - name: http
      containerPort: 8080
      protocol: TCP
    resources:
      requests:
        cpu: 10m
        memory: 16Mi
      limits:
        cpu: '1'
        memory: 1G
        example.com/gpu: '1'
    volumeMounts:
    - name: scratch
      mountPath: /scratch
      readOnly: true
    readinessProbe:
      httpGet:
        path: /healthz
        port: 8080
      periodSeconds: 2
    livenessProbe:
      exec:
        command: [cat, /tmp/ok]
  restartPolicy: Never
  nodeSelector:
    pool: web
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions:
          - key: zone
            operator: In
            values: [a, b]
  tolerations:
  - key: dedicated
    operator: Equal
    value: web
    effect: NoSchedule
    tolerationSeconds: 0
  volumes:
  - name: scratch
    emptyDir:
      sizeLimit: 64Mi
  - name: cache
    emptyDir: {}
  terminationGracePeriodSeconds: 0
  topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        app: hello
status:
  phase: Succeeded
  conditions:
  - type: Ready
    status: 'False'
    lastTransitionTime: '2026-11-25T10:00:02Z'
  podIP: 172.17.0.3
  startTime: '2026-11-25T10:00:01Z'
  containerStatuses:
  - name: hello
    state:
      terminated:
        exitCode: 0
        reason: Completed
        startedAt: '2026-11-25T10:00:01Z'
        finishedAt: '2026-11-25T10:00:02Z'
    ready: false
    restartCount: 0
    image: cowpod/busybox:latest
"""

VM = """\
apiVersion: cowpod.io/v1
kind: VM
metadata:
  name: vm-2
spec:
  className: default
  cpu: 500m
  memory: 1536Mi
  provider: docker
  nodeLabels:
    pool: web
"""

NODE = """\
apiVersion: v1
kind: Node
metadata:
  name: vm-1
spec:
  unschedulable: true
  taints:
  - key: dedicated
    value: web
    effect: NoSchedule
status:
  capacity:
    cpu: '2'
    memory: 2Gi
    pods: '110'
    ephemeral-storage: 10Gi
  conditions:
  - type: Ready
    status: 'True'
"""

LEASE = """\
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: scheduler
  namespace: kube-system
spec:
  holderIdentity: host-1
  leaseDurationSeconds: 15
  renewTime: '2026-11-25T10:00:00Z'
"""

EVENT = """\
apiVersion: v1
kind: Event
metadata:
  name: hello.1
  namespace: default
involvedObject:
  kind: Pod
  namespace: default
  name: hello
reason: Scheduled
message: assigned to vm-1
type: Normal
source:
  component: default-scheduler
count: 3
"""


@pytest.mark.parametrize("text", [HELLO, VM, NODE, LEASE, EVENT])
def test_manifest_to_proto_to_manifest(text: str) -> None:
    want = yaml.safe_load(text)
    (doc,) = load_text(text, "x.yaml")
    assert encode_object(doc.obj) == want
    # and through the YAML and JSON text cowpod prints
    assert yaml.safe_load(to_yaml(doc.obj)) == want
    assert json.loads(to_json(doc.obj)) == want


@pytest.mark.parametrize(
    "obj",
    [
        builders.pod(),
        builders.pod(phase="Running"),
        builders.node(),
        builders.vm(),
        builders.vm("vm-1-a", parent="vm-1"),
        builders.event(),
        builders.lease(),
    ],
)
def test_proto_to_manifest_to_proto(obj: Message) -> None:
    _, back = decode_object(yaml.safe_load(to_yaml(obj)), validate=False)
    assert back == whole_seconds(obj)


def whole_seconds(msg: Message) -> Message:
    """A copy with every timestamp cut to whole seconds, as manifests print them."""
    out = type(msg)()
    out.CopyFrom(msg)
    stack: list[Message] = [out]
    while stack:
        m = stack.pop()
        if m.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
            m.nanos = 0  # type: ignore[attr-defined]
            continue
        for fd, value in m.ListFields():
            if fd.message_type is None or fd.message_type.GetOptions().map_entry:
                continue
            stack.extend(value if fd.is_repeated else [value])
    return out


def test_output_is_kubernetes_shaped() -> None:
    out: dict[str, Any] = encode_object(builders.pod())
    assert out["apiVersion"] == "v1" and out["kind"] == "Pod"
    assert list(out) == ["apiVersion", "kind", "metadata", "spec", "status"]
    assert out["metadata"]["resourceVersion"] == "42"
    assert out["metadata"]["creationTimestamp"] == "2026-11-25T09:46:40Z"
    (cs,) = out["status"]["containerStatuses"]
    assert cs["state"]["terminated"]["exitCode"] == 0  # printed although zero
    assert cs["state"]["terminated"]["finishedAt"] == "2026-11-25T09:46:42Z"  # whole seconds
    assert cs["restartCount"] == 0
    assert cs["ready"] is False
    assert out["spec"]["containers"][0]["resources"] == {"requests": {"cpu": "10m", "memory": "16Mi"}}
    assert "initContainers" not in out["spec"]  # empty fields are left out
    assert "nodeSelector" not in out["spec"]


def test_api_version_and_kind_are_filled_when_the_server_leaves_them_empty() -> None:
    p = builders.pod()
    p.api_version = ""
    p.kind = ""
    v = builders.vm()
    v.ClearField("api_version")
    v.ClearField("kind")
    assert encode_object(p)["apiVersion"] == "v1"
    assert encode_object(v)["apiVersion"] == "cowpod.io/v1"
    assert encode_object(v)["kind"] == "VM"


def test_protobuf_json_spellings_of_acronyms_are_accepted_on_input() -> None:
    text = HELLO.replace("podIP:", "podIp:")
    (doc,) = load_text(text, "x.yaml")
    assert doc.obj.status.pod_ip == "172.17.0.3"


def test_output_spells_acronyms_as_kubernetes_does() -> None:
    pod = pod_pb2.Pod()
    pod.status.pod_ip, pod.status.host_ip = "10.0.0.2", "10.0.0.1"
    pod.status.container_statuses.add(name="c", container_id="docker://x", image_id="sha256:y")
    status = encode_object(pod)["status"]
    assert status["podIP"] == "10.0.0.2" and status["hostIP"] == "10.0.0.1"
    assert status["containerStatuses"][0]["containerID"] == "docker://x"
    assert status["containerStatuses"][0]["imageID"] == "sha256:y"


def test_field_set_twice_through_an_alias_is_an_error() -> None:
    from cowpod.manifest import ManifestError

    text = HELLO.replace("      containerPort: 8080\n",
                         "      containerPort: 8080\n      hostIP: 127.0.0.1\n      hostIp: 127.0.0.2\n")
    with pytest.raises(ManifestError, match="set twice"):
        load_text(text, "x.yaml")


def test_list_kind_and_json_documents() -> None:
    items = [yaml.safe_load(VM), yaml.safe_load(LEASE)]
    docs = load_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}), "l.json")
    assert [d.info.kind for d in docs] == ["VM", "Lease"]
    assert [d.item for d in docs] == [0, 1]
    assert docs[0].obj.spec.memory_bytes == 1536 * 2**20


def test_several_documents_keep_their_numbers() -> None:
    docs = load_text(VM + "---\n" + NODE + "---\n" + LEASE, "multi.yaml")
    assert [(d.index, d.info.kind, d.name) for d in docs] == [
        (1, "VM", "vm-2"),
        (2, "Node", "vm-1"),
        (3, "Lease", "scheduler"),
    ]


def test_null_means_unset() -> None:
    (doc,) = load_text(VM.replace("  nodeLabels:\n    pool: web\n", "  nodeLabels:\n  parent: null\n"), "x")
    assert not doc.obj.spec.node_labels and doc.obj.spec.parent == ""


def test_times_are_read_with_fractions_and_offsets_and_printed_in_whole_utc_seconds() -> None:
    text = LEASE.replace("renewTime: '2026-11-25T10:00:00Z'", "renewTime: '2026-11-25T11:00:00.75+01:00'")
    (doc,) = load_text(text, "x.yaml")
    assert doc.obj.spec.renew_time.nanos == 750_000_000
    assert encode_object(doc.obj)["spec"]["renewTime"] == "2026-11-25T10:00:00Z"
