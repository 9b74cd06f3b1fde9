"""Namespace, ConfigMap and Secret manifests (#14): bytes are base64 both ways, a bad value is
refused with its path, a Secret's table row and describe never show a value."""

from __future__ import annotations

import pytest

from cowpod.cli import describe, printers
from cowpod.manifest import FieldError, ManifestError, encode_object, load_text
from cowpod.v1 import config_pb2

SECRET = """\
apiVersion: v1
kind: Secret
metadata: {name: db}
type: kubernetes.io/basic-auth
data:
  username: YWRtaW4=
stringData:
  password: t0p-s3cret
"""


def test_secret_data_is_base64_both_ways() -> None:
    doc = load_text(SECRET, "s.yaml")[0]
    s = doc.obj
    assert isinstance(s, config_pb2.Secret)
    assert s.data["username"] == b"admin" and s.string_data["password"] == "t0p-s3cret"
    assert encode_object(s)["data"] == {"username": "YWRtaW4="}


def test_bad_base64_names_the_field() -> None:
    with pytest.raises((FieldError, ManifestError), match=r"data\[username\]: illegal base64 data"):
        load_text(SECRET.replace("YWRtaW4=", "not base64!"), "s.yaml")


def test_configmap_binary_data_and_namespace_kind() -> None:
    docs = load_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\nbinaryData: {logo: iVBORw==}\n"
                     "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n", "f.yaml")
    assert docs[0].obj.binary_data["logo"] == b"\x89PNG"
    assert docs[1].info.kind == "Namespace" and not docs[1].info.namespaced


def test_secret_row_and_describe_show_sizes_not_values() -> None:
    s = config_pb2.Secret(type="Opaque")
    s.metadata.name, s.metadata.namespace = "db", "default"
    s.data["password"] = b"t0p-s3cret"
    s.data["username"] = b"admin"
    row = printers.secret_row(s, 0.0)
    text = describe.describe_secret(s, [], 0.0)
    assert row[:3] == ["db", "Opaque", "2"]
    assert "password:  10 bytes" in text and "username:  5 bytes" in text
    for secret in ("t0p-s3cret", "admin"):
        assert secret not in " ".join(row) + text


def test_describe_pod_names_config_sources_not_values() -> None:
    doc = load_text("""\
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: app
    image: img
    env:
    - {name: LIVES, valueFrom: {configMapKeyRef: {name: game, key: lives}}}
    - {name: PW, valueFrom: {secretKeyRef: {name: db, key: password, optional: true}}}
    envFrom: [{configMapRef: {name: game}, prefix: GAME_}]
    volumeMounts: [{name: cfg, mountPath: /etc/game}]
  volumes:
  - {name: cfg, configMap: {name: game}}
  - {name: sec, secret: {secretName: db, defaultMode: 0400}}
""", "p.yaml")[0]
    assert doc.obj.spec.volumes[1].secret.default_mode == 0o400
    text = describe.describe_pod(doc.obj, [], 0.0)
    assert "<set to the key 'lives' of config map 'game'>" in text
    assert "<set to the key 'password' in secret 'db'> Optional: true" in text
    assert "game  ConfigMap with prefix 'GAME_'  Optional: false" in text
    assert "ConfigMap (a volume populated by a ConfigMap)" in text and "SecretName:" in text
