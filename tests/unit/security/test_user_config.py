"""The user config file (`~/.cowpod/config`) and the TLS flags."""

from __future__ import annotations

import argparse
import pathlib
import stat

import pytest

from cowpod.auth.config import (
    ClusterEntry,
    ConfigError,
    ContextEntry,
    UserConfig,
    UserEntry,
    default_config_path,
    load_config,
)
from cowpod.auth.credentials import channel_credentials
from cowpod.auth.flags import add_tls_arguments, settings_from_args

SECRET = "abcdefgh." + "s" * 32


def sample(tmp: pathlib.Path) -> UserConfig:
    (tmp / "pki").mkdir()
    (tmp / "pki" / "ca.crt").write_bytes(b"CA")
    (tmp / "pki" / "admin.crt").write_bytes(b"CERT")
    (tmp / "pki" / "admin.key").write_bytes(b"KEY")
    (tmp / "pki" / "transport.crt").write_bytes(b"TCERT")
    (tmp / "pki" / "transport.key").write_bytes(b"TKEY")
    cfg = UserConfig(base_dir=tmp)
    cfg = cfg.with_cluster(ClusterEntry(
        "local", "127.0.0.1:7070", certificate_authority="pki/ca.crt",
        transport_certificate="pki/transport.crt", transport_key="pki/transport.key",
    ))
    cfg = cfg.with_user(UserEntry("admin", client_certificate="pki/admin.crt", client_key="pki/admin.key"))
    cfg = cfg.with_user(UserEntry("viewer", token=SECRET))
    cfg = cfg.with_context(ContextEntry("local", "local", "admin"), use=True)
    return cfg.with_context(ContextEntry("local-view", "local", "viewer"))


def test_roundtrip_and_private_mode(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "config"
    sample(tmp_path).save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cfg = load_config(path)
    s = cfg.settings()
    assert (s.server, s.user, s.ca_pem, s.client_cert_pem, s.client_key_pem) == (
        "127.0.0.1:7070", "admin", b"CA", b"CERT", b"KEY"
    )
    v = cfg.settings("local-view")
    # A token user goes through the handshake with the shared transport certificate.
    assert (v.token, v.client_cert_pem, v.client_key_pem) == (SECRET, b"TCERT", b"TKEY")
    assert SECRET not in repr(v)


def test_describe_names_cluster_and_user_but_no_secret(tmp_path: pathlib.Path) -> None:
    cfg = sample(tmp_path)
    text = cfg.describe()
    assert "local (127.0.0.1:7070)" in text and "admin (client certificate)" in text
    view = cfg.describe("local-view")
    assert "viewer (bearer token)" in view and SECRET not in view


def test_missing_file_is_empty_config(tmp_path: pathlib.Path) -> None:
    cfg = load_config(tmp_path / "nope")
    with pytest.raises(ConfigError, match="no current-context"):
        cfg.settings()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("clusters: {}", "clusters: must be a list"),
        ("clusters: [{name: a, cluster: {server: x, bogus: 1}}]", "clusters[0].cluster.bogus: unknown field"),
        ("clusters: [{name: a, cluster: {}}]", "clusters[0].cluster.server: required"),
        ("users: [{user: {}}]", "users[0].name: required"),
        ("current-context: a\ncontexts: [{name: a, context: {cluster: x, user: y}}]", "names cluster 'x'"),
        ("[unclosed", "not valid YAML"),
    ],
)
def test_bad_config_names_the_field(tmp_path: pathlib.Path, text: str, message: str) -> None:
    path = tmp_path / "config"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(path).settings()


def test_default_path_honours_env(tmp_path: pathlib.Path) -> None:
    assert default_config_path({"COWPOD_CONFIG": str(tmp_path / "c")}) == tmp_path / "c"
    assert default_config_path({}).name == "config"


def test_token_on_insecure_cluster_is_refused(tmp_path: pathlib.Path) -> None:
    cfg = UserConfig(base_dir=tmp_path).with_cluster(ClusterEntry("c", "x:1", insecure=True))
    cfg = cfg.with_user(UserEntry("u", token=SECRET)).with_context(ContextEntry("c", "c", "u"), use=True)
    with pytest.raises(ConfigError, match="needs TLS"):
        channel_credentials(cfg.settings())


def test_flags(tmp_path: pathlib.Path) -> None:
    (tmp_path / "ca").write_bytes(b"CA")
    (tmp_path / "tok").write_text(SECRET + "\n")
    p = argparse.ArgumentParser()
    add_tls_arguments(p, environ={})
    s = settings_from_args("unix:///x.sock", p.parse_args(["--ca-file", str(tmp_path / "ca"),
                                                           "--token-file", str(tmp_path / "tok")]))
    assert (s.ca_pem, s.token, s.insecure) == (b"CA", SECRET, False)
    assert settings_from_args("a:1", p.parse_args(["--insecure"])).insecure
    with pytest.raises(ConfigError, match="--ca-file is required"):
        settings_from_args("a:1", p.parse_args([]))
    with pytest.raises(ConfigError, match="go together"):
        ca = str(tmp_path / "ca")
        settings_from_args("a:1", p.parse_args(["--ca-file", ca, "--cert-file", ca]))
