"""Bad manifests: every error names the file, the document and the field path."""

from __future__ import annotations

import pytest

from cowpod.manifest import ManifestError, load_text

POD = """apiVersion: v1
kind: Pod
metadata:
  name: hello
spec:
  containers:
  - name: hello
    image: cowpod/busybox:latest
"""


def pod_with(spec_extra: str = "", container_extra: str = "", meta_extra: str = "") -> str:
    return (
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hello\n"
        + meta_extra
        + "spec:\n"
        + spec_extra
        + "  containers:\n  - name: hello\n    image: cowpod/busybox:latest\n"
        + container_extra
    )


CASES = [
    # (manifest, path, words in the reason)
    (pod_with(container_extra="    imagee: x\n"), "spec.containers[0].imagee", "unknown field"),
    (
        pod_with(spec_extra="  restartPolicy: Sometimes\n"),
        "spec.restartPolicy",
        'unsupported value "Sometimes"',
    ),
    (pod_with(spec_extra="  restartPolicy: 3\n"), "spec.restartPolicy", "expected a string"),
    (pod_with(meta_extra="  labels: {version: 1}\n"), "metadata.labels[version]", "quote it"),
    (pod_with(meta_extra="  labels: [a]\n"), "metadata.labels", "expected a mapping"),
    (
        pod_with(container_extra="    resources: {requests: {cpu: lots}}\n"),
        "spec.containers[0].resources.requests.cpu",
        "not a quantity",
    ),
    (
        pod_with(container_extra="    resources: {requests: {memory: -1Gi}}\n"),
        "spec.containers[0].resources.requests.memory",
        "negative",
    ),
    (
        pod_with(container_extra="    resources: {requests: {gpu: 1}}\n"),
        "spec.containers[0].resources.requests.gpu",
        "unknown resource",
    ),
    (
        pod_with(container_extra="    ports: [{containerPort: 70000}]\n"),
        "spec.containers[0].ports[0].containerPort",
        "out of range",
    ),
    (
        pod_with(container_extra="    ports: [{containerPort: '80'}]\n"),
        "spec.containers[0].ports[0].containerPort",
        "expected an integer",
    ),
    (pod_with(container_extra="    command: echo hi\n"), "spec.containers[0].command", "expected a list"),
    (
        pod_with(container_extra="    command: [echo, 1]\n"),
        "spec.containers[0].command[1]",
        "expected a string",
    ),
    (pod_with(container_extra="    tty: yes please\n"), "spec.containers[0].tty", "expected true or false"),
    (
        pod_with(spec_extra="  terminationGracePeriodSeconds: -5\n"),
        "spec.terminationGracePeriodSeconds",
        "out of range",
    ),
    (
        pod_with(meta_extra="  creationTimestamp: yesterday\n"),
        "metadata.creationTimestamp",
        "RFC 3339",
    ),
    (pod_with(meta_extra="  Name: x\n"), "metadata.Name", 'did you mean "name"'),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {}\n", "spec.containers", "required"),
    (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: [{name: a, image: b}]}\n",
        "metadata.name",
        "invalid name",
    ),
    ("apiVersion: v1\nkind: Pod\nspec: {containers: [{name: a, image: b}]}\n", "metadata.name", "required"),
    (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: a}]}\n",
        "spec.containers[0].image",
        "required",
    ),
    (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n"
        "spec: {containers: [{name: a, image: b}, {name: a, image: c}]}\n",
        "spec.containers[1].name",
        "duplicate",
    ),
    (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n"
        "spec: {containers: [{name: a, image: b, volumeMounts: [{name: data, mountPath: /d}]}]}\n",
        "spec.containers[0].volumeMounts[0].name",
        'no volume named "data"',
    ),
    ("apiVersion: v2\nkind: Pod\nmetadata: {name: a}\n", "apiVersion", "not served"),
    ("kind: Pod\nmetadata: {name: a}\n", "apiVersion", "required"),
    ("apiVersion: v1\nmetadata: {name: a}\n", "kind", "required"),
    ("apiVersion: apps/v1\nkind: Deploymnet\n", "kind", 'unknown kind "Deploymnet"'),
    ("apiVersion: apps/v1\nkind: StatefulSet\n", "kind", "StatefulSet: not supported: no stable pod"),
    ("apiVersion: batch/v1\nkind: CronJob\n", "kind", "CronJob: not supported"),
    (
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ipFamilyPolicy: RequireDualStack}\n",
        "spec.ipFamilyPolicy",
        "only SingleStack or PreferDualStack",
    ),
    (
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80, nodePort: 30080}]}\n",
        "spec.ports[0].nodePort",
        "every Service is headless",
    ),
    (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: a, image: b, env: "
        "[{name: X, valueFrom: {fileKeyRef: {path: a, volumeName: v, key: X}}}]}]}\n",
        "spec.containers[0].env[0].valueFrom.fileKeyRef",
        "use configMapKeyRef",
    ),
    ("apiVersion: v1\nkind: Deployment\nmetadata: {name: a}\n", "apiVersion", "not served"),
    (
        "apiVersion: cowpod.io/v1\nkind: VM\nmetadata: {name: vm-9}\nspec: {cpu: 1}\n",
        "spec.memory",
        "required",
    ),
    (
        "apiVersion: cowpod.io/v1\nkind: VM\nmetadata: {name: vm-9}\nspec: {cpu: 1, memory: 1Gb}\n",
        "spec.memory",
        "not a quantity",
    ),
    (
        "apiVersion: v1\nkind: Node\nmetadata: {name: n, namespace: default}\n",
        "metadata.namespace",
        "not namespaced",
    ),
    (
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: a}\n"
        "  spec: {containers: [{name: a, image: b, imagee: c}]}\n",
        "items[0].spec.containers[0].imagee",
        "unknown field",
    ),
    ("- just\n- a list\n", "", "expected a mapping"),
]


@pytest.mark.parametrize(("text", "path", "reason"), CASES)
def test_error_names_file_document_and_field(text: str, path: str, reason: str) -> None:
    with pytest.raises(ManifestError) as e:
        load_text(text, "hello.yaml")
    err = e.value
    assert err.source == "hello.yaml"
    assert err.document == 1
    assert err.path == path
    assert reason in err.reason
    assert str(err).startswith(f"hello.yaml: document 1: {path + ': ' if path else ''}")
    assert "\n" not in str(err)


def test_the_example_from_the_brief() -> None:
    bad = POD + "---\n" + POD.replace("    image:", "    imagee:")
    with pytest.raises(ManifestError) as e:
        load_text(bad, "hello.yaml")
    assert str(e.value).startswith("hello.yaml: document 2: spec.containers[0].imagee: unknown field")


def test_yaml_syntax_errors_have_document_and_line() -> None:
    with pytest.raises(ManifestError) as e:
        load_text(POD + "---\nkind: [\n", "x.yaml")
    assert e.value.document == 2
    assert "line" in str(e.value) and "invalid YAML" in str(e.value)


def test_duplicate_keys_are_errors() -> None:
    with pytest.raises(ManifestError, match='duplicate key "name"'):
        load_text(POD.replace("  name: hello\n", "  name: hello\n  name: again\n"), "x.yaml")


def test_duplicate_keys_in_json_are_errors() -> None:
    with pytest.raises(ManifestError, match='duplicate key "kind"'):
        load_text('{"apiVersion": "v1", "kind": "Pod", "kind": "Pod"}', "x.json")


def test_empty_documents_are_skipped_but_counted() -> None:
    docs = load_text("---\n---\n" + POD + "---\n", "x.yaml")
    assert len(docs) == 1
    assert docs[0].index == 2


def test_nothing_but_comments_is_not_an_object() -> None:
    assert load_text("# nothing\n", "x.yaml") == []


def test_kubernetes_service_fields_holding_what_happens_here_apply() -> None:
    """`kubectl get svc -o yaml` and the docs' dual-stack pages write these; on a single-stack
    cluster Kubernetes accepts them too (PreferDualStack becomes SingleStack)."""
    text = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {selector: {app: a}, "
        "ipFamilyPolicy: PreferDualStack, ipFamilies: [IPv4], clusterIPs: [None], sessionAffinity: None, "
        "internalTrafficPolicy: Cluster, ports: [{port: 80}]}\nstatus: {loadBalancer: {}}\n"
    )
    (doc,) = load_text(text, "svc.yaml")
    assert doc.info.kind == "Service"
