"""Kubernetes Pod fields at the manifest edge: named ports, refused fields with a reason."""

from __future__ import annotations

import pytest

from cowpod.manifest import ManifestError, encode_object, load_text

POD = """
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: c
    image: busybox
    ports: [{name: http, containerPort: 8080}]
    livenessProbe:
      httpGet: {path: /healthz, port: %s}
"""


def test_probe_port_by_name_is_kept_and_printed_back() -> None:
    (doc,) = load_text(POD % "http", "p.yaml")
    get = doc.obj.spec.containers[0].liveness_probe.http_get
    assert (get.port, get.port_name) == (0, "http")
    assert encode_object(doc.obj)["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] == "http"


@pytest.mark.parametrize("written", ["8080", "'8080'"])
def test_probe_port_number_may_be_written_as_a_string(written: str) -> None:
    (doc,) = load_text(POD % written, "p.yaml")
    get = doc.obj.spec.containers[0].liveness_probe.http_get
    assert (get.port, get.port_name) == (8080, "")
    assert encode_object(doc.obj)["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] == 8080


def test_hidden_port_name_field_is_not_a_manifest_field() -> None:
    with pytest.raises(ManifestError, match=r"httpGet\.portName: unknown field"):
        load_text((POD % "80").replace("port: 80", "port: 80, portName: x"), "p.yaml")


@pytest.mark.parametrize(
    ("extra", "path", "reason"),
    [
        ("  hostNetwork: true\n", "spec.hostNetwork", "host namespaces are refused"),
        ("  volumes: [{name: v, persistentVolumeClaim: {claimName: x}}]\n",
         "spec.volumes[0].persistentVolumeClaim", "persistentVolumeClaim volumes are not supported"),
    ],
)
def test_known_kubernetes_fields_cowpod_refuses_say_why(extra: str, path: str, reason: str) -> None:
    with pytest.raises(ManifestError) as e:
        load_text(POD % "80" + extra, "p.yaml")
    assert e.value.path == path
    assert reason in e.value.reason


def test_a_typo_is_still_an_unknown_field() -> None:
    with pytest.raises(ManifestError) as e:
        load_text(POD % "80" + "  dnsPolicyy: Default\n", "p.yaml")
    assert e.value.path == "spec.dnsPolicyy"
    assert "unknown field" in e.value.reason and "dnsPolicy" in e.value.reason
