"""Encryption at rest (controller/encryption.py): the envelope and the config file."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from controller import encryption
from controller.encryption import EncryptionConfig, Undecryptable
from cowpod.errors import Invalid

SECRET_KEY = "registry/secrets/default/db"
CM_KEY = "registry/configmaps/default/page"
K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 32).decode()


def config(*providers: Any, resources: tuple[str, ...] = ("secrets",)) -> EncryptionConfig:
    return encryption.parse({"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
                             "resources": [{"resources": list(resources), "providers": list(providers)}]})


def aesgcm(*keys: tuple[str, str]) -> dict[str, Any]:
    return {"aesgcm": {"keys": [{"name": n, "secret": s} for n, s in keys]}}


IDENTITY: dict[str, Any] = {"identity": {}}


def test_round_trip_stores_prefix_and_ciphertext_only() -> None:
    cfg = config(aesgcm(("k1", K1)))
    stored = cfg.encrypt(SECRET_KEY, b"password=hunter2")
    assert stored.startswith(b"k8s:enc:aesgcm:v1:k1:")
    assert b"hunter2" not in stored
    assert cfg.decrypt(SECRET_KEY, stored) == b"password=hunter2"


def test_every_write_has_its_own_nonce() -> None:
    cfg = config(aesgcm(("k1", K1)))
    assert cfg.encrypt(SECRET_KEY, b"same") != cfg.encrypt(SECRET_KEY, b"same")


def test_other_resources_are_stored_as_they_are() -> None:
    cfg = config(aesgcm(("k1", K1)))
    assert cfg.encrypt(CM_KEY, b"page") == b"page"
    assert cfg.decrypt(CM_KEY, b"page") == b"page"
    assert cfg.encrypt("registry/pods/default/web", b"pod") == b"pod"
    both = config(aesgcm(("k1", K1)), resources=("secrets", "configmaps"))
    assert both.encrypt(CM_KEY, b"page").startswith(b"k8s:enc:aesgcm:v1:k1:")


def test_value_copied_under_another_key_does_not_decrypt() -> None:
    cfg = config(aesgcm(("k1", K1)))
    stored = cfg.encrypt(SECRET_KEY, b"x")
    with pytest.raises(Undecryptable, match='secrets "default/other" does not decrypt with aesgcm key'):
        cfg.decrypt("registry/secrets/default/other", stored)


def test_a_dropped_key_is_named_with_the_object() -> None:
    stored = config(aesgcm(("old", K1))).encrypt(SECRET_KEY, b"x")
    with pytest.raises(Undecryptable) as err:
        config(aesgcm(("new", K2)), IDENTITY).decrypt(SECRET_KEY, stored)
    assert str(err.value).startswith('secrets "default/db" is encrypted with aesgcm key \'old\'')
    assert "no longer lists" in str(err.value)


def test_same_name_with_a_different_secret_is_refused_not_garbage() -> None:
    stored = config(aesgcm(("k1", K1))).encrypt(SECRET_KEY, b"x")
    with pytest.raises(Undecryptable, match="secret differs"):
        config(aesgcm(("k1", K2))).decrypt(SECRET_KEY, stored)
    with pytest.raises(Undecryptable, match="truncated"):
        config(aesgcm(("k1", K1))).decrypt(SECRET_KEY, b"k8s:enc:aesgcm:v1:k1:abc")


def test_rotation_new_key_first_writes_with_it_and_reads_both() -> None:
    before = config(aesgcm(("k1", K1))).encrypt(SECRET_KEY, b"old write")
    rotated = config(aesgcm(("k2", K2), ("k1", K1)))
    after = rotated.encrypt(SECRET_KEY, b"new write")
    assert after.startswith(b"k8s:enc:aesgcm:v1:k2:")
    assert rotated.decrypt(SECRET_KEY, before) == b"old write"
    assert rotated.decrypt(SECRET_KEY, after) == b"new write"
    # Step one of a rotation (new key known but second) still writes with the old one.
    staged = config(aesgcm(("k1", K1), ("k2", K2)))
    assert staged.encrypt(SECRET_KEY, b"x").startswith(b"k8s:enc:aesgcm:v1:k1:")
    assert staged.decrypt(SECRET_KEY, after) == b"new write"
    assert rotated.chains["secrets"].write_key == "aesgcm:k2"


def test_identity_reads_plaintext_and_first_identity_writes_plaintext() -> None:
    enc = config(aesgcm(("k1", K1)), IDENTITY)
    assert enc.decrypt(SECRET_KEY, b"\n\x02db") == b"\n\x02db"  # stored before encryption was on
    with pytest.raises(Undecryptable, match=r"stored unencrypted.*identity"):
        config(aesgcm(("k1", K1))).decrypt(SECRET_KEY, b"\n\x02db")
    # Turning encryption off: identity first writes plaintext, aesgcm second still reads.
    off = config(IDENTITY, aesgcm(("k1", K1)))
    assert off.encrypt(SECRET_KEY, b"plain") == b"plain"
    assert off.decrypt(SECRET_KEY, enc.encrypt(SECRET_KEY, b"was encrypted")) == b"was encrypted"


def test_a_value_of_a_provider_cowpod_lacks_is_named() -> None:
    with pytest.raises(Undecryptable, match="provider 'aescbc'"):
        config(aesgcm(("k1", K1)), IDENTITY).decrypt(SECRET_KEY, b"k8s:enc:aescbc:v1:k:xxxx")


def test_key_material_is_never_in_a_repr() -> None:
    cfg = config(aesgcm(("k1", K1)))
    key = cfg.chains["secrets"].providers[0].keys[0]
    assert b"1" * 32 not in repr(key).encode() and "k1" in repr(key)


@pytest.mark.parametrize(("doc", "path", "reason"), [
    ({"resources": [{"resources": ["secrets"], "providers": [aesgcm(("k1", "c2hvcnQ="))]}]},
     "resources[0].providers[0].aesgcm.keys[0].secret", "must be 32 bytes base64 (got 5 bytes)"),
    ({"resources": [{"resources": ["secrets"], "providers": [aesgcm(("k1", "not base64!"))]}]},
     "resources[0].providers[0].aesgcm.keys[0].secret", "must be 32 bytes base64"),
    ({"resources": [{"resources": ["secrets"], "providers": [IDENTITY, aesgcm(("k1", K1), ("k1", K2))]}]},
     "resources[0].providers[1].aesgcm.keys[1].name", "duplicate key name 'k1'"),
    ({"resources": [{"resources": ["secrets"], "providers": [aesgcm(("a:b", K1))]}]},
     "resources[0].providers[0].aesgcm.keys[0].name", "without ':'"),
    ({"resources": [{"resources": ["secrets"], "providers": [{"aesgcm": {"keys": []}}]}]},
     "resources[0].providers[0].aesgcm.keys", "at least one"),
    ({"resources": [{"resources": ["secrets"], "providers": [{"aescbc": {"keys": []}}]}]},
     "resources[0].providers[0].aescbc", "not supported by cowpod"),
    ({"resources": [{"resources": ["secrets"], "providers": [{"rot13": {}}]}]},
     "resources[0].providers[0].rot13", "unknown provider"),
    ({"resources": [{"resources": ["pods"], "providers": [IDENTITY]}]},
     "resources[0].resources[0]", "cowpod encrypts only configmaps, secrets (got 'pods')"),
    ({"resources": [{"resources": ["secrets"], "providers": [IDENTITY]},
                    {"resources": ["secrets"], "providers": [IDENTITY]}]},
     "resources[1].resources[0]", "already listed"),
    ({"resources": [{"resources": ["secrets"], "providers": []}]}, "resources[0].providers", "required"),
    ({"resources": [{"resources": ["secrets"], "providers": [{"identity": {"x": 1}}]}]},
     "resources[0].providers[0].identity", "takes no settings"),
    ({"resources": [{"resources": ["secrets"], "providers": [IDENTITY], "extra": 1}]},
     "resources[0].extra", "unknown field"),
    ({"resources": []}, "resources", "required"),
    ({"kind": "Pod", "resources": []}, "kind", "must be EncryptionConfiguration"),
])
def test_bad_config_names_the_field(doc: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(Invalid) as err:
        encryption.parse(doc)
    assert err.value.field == path
    assert reason in err.value.reason


def test_file_is_read_and_errors_name_it(tmp_path: Any) -> None:
    f = tmp_path / "enc.yaml"
    f.write_text(f"""\
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - aesgcm:
          keys:
            - name: key1
              secret: {encryption.new_key()}
      - identity: {{}}
""")
    assert encryption.load(f).describe() == "secrets with aesgcm:key1"
    with pytest.raises(Invalid, match="cannot read encryption config"):
        encryption.load(tmp_path / "missing.yaml")
    f.write_text("resources: [")
    with pytest.raises(Invalid, match="not valid YAML"):
        encryption.load(f)


def test_controller_refuses_to_start_with_a_bad_config(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from controller.main import parse_args

    f = tmp_path / "enc.yaml"
    body = ("resources:\n- resources: [secrets]\n  providers:\n"
            "  - aesgcm: {{keys: [{{name: k, secret: {}}}]}}\n")
    f.write_text(body.format("c2hvcnQ="))
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--encryption-config", str(f)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "resources[0].providers[0].aesgcm.keys[0].secret: must be 32 bytes base64" in err
    with pytest.raises(SystemExit):
        parse_args(["--encryption-rewrite"])
    assert "--encryption-rewrite needs --encryption-config" in capsys.readouterr().err
    f.write_text(body.format(K1))
    cfg = parse_args(["--encryption-config", str(f), "--encryption-rewrite"])
    assert cfg.encryption is not None and cfg.encryption.resources == ["secrets"] and cfg.encryption_rewrite
