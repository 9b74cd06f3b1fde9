"""`cowpod apply/get/describe/delete` of Namespaces, ConfigMaps and Secrets against a real
controller on a real etcd (#14): a multi-document file applies its Namespace first, Secret
values stay out of tables and describe, apply updates a ConfigMap's data, deleting a namespace
takes what is in it."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from tests.integration.test_cli import ROOT, Cli, cli  # noqa: F401  (a fixture)

pytestmark = pytest.mark.integration


async def test_namespace_file_applies_namespace_first_and_delete_takes_its_pods(cli: Cli) -> None:  # noqa: F811
    r = await cli("apply", "-f", str(ROOT / "examples" / "namespace.yaml"))
    assert r.code == 0, r.err
    assert r.out == "namespace/team-a created\npod/team-a-hello created\n"
    r = await cli("get", "namespaces")
    assert r.code == 0 and any(line.split()[:2] == ["team-a", "Active"] for line in r.out.splitlines())
    r = await cli("get", "pods", "-n", "team-a", "-o", "name")
    assert r.out == "pod/team-a-hello\n"
    r = await cli("apply", "-f", str(ROOT / "examples" / "namespace.yaml"))
    assert r.out == "namespace/team-a unchanged\npod/team-a-hello unchanged\n", r.err
    r = await cli("describe", "namespace", "team-a")
    assert "team=a" in r.out and "Active" in r.out
    r = await cli("delete", "namespace", "team-a")
    assert r.code == 0, r.err
    r = await cli("get", "namespace", "team-a", "-o", "jsonpath={.status.phase}")
    assert r.out.strip() in ("Terminating", "")  # "" if the controller was quicker than us
    r = await cli("wait", "namespace", "team-a", "--for", "delete", "--timeout", "30s")
    assert (r.code, r.out) == (0, "namespace/team-a deleted\n"), r.err
    r = await cli("get", "namespace", "team-a")
    assert "not found" in r.err
    r = await cli("get", "pods", "-n", "team-a")
    assert "No resources found" in r.err


async def test_secret_values_only_with_yaml(cli: Cli) -> None:  # noqa: F811
    r = await cli("apply", "-f", str(ROOT / "examples" / "secret.yaml"))
    assert r.code == 0, r.err
    table = await cli("get", "secrets")
    assert table.out.split("\n")[1].split() == ["mysecret", "Opaque", "3", table.out.split()[-1]]
    described = await cli("describe", "secret", "mysecret")
    assert described.code == 0, described.err
    assert [ln.split() for ln in described.out.splitlines() if ln.startswith(("username", "password"))] == [
        ["password:", "12", "bytes"], ["username:", "5", "bytes"]]
    for value in ("admin", "1f2d1e2e67df", "YWRtaW4=", "my.api.com"):
        assert value not in table.out + described.out
    assert "12 bytes" in described.out  # password
    as_yaml = await cli("get", "secret", "mysecret", "-o", "yaml")
    obj = yaml.safe_load(as_yaml.out)
    assert obj["data"]["username"] == "YWRtaW4=" and "stringData" not in obj
    # The last-applied annotation keeps digests of the values, not the values.
    stamp = obj["metadata"]["annotations"]["cowpod.io/last-applied-configuration"]
    assert "sha256:" in stamp and "YWRtaW4=" not in stamp and "my.api.com" not in stamp


async def test_apply_updates_configmap_data(cli: Cli, tmp_path: pathlib.Path) -> None:  # noqa: F811
    src = (ROOT / "examples" / "configmap.yaml").read_text()
    cm_only = src.split("---")[0]
    f = tmp_path / "cm.yaml"
    f.write_text(cm_only)
    assert (await cli("apply", "-f", str(f))).out == "configmap/game-demo created\n"
    assert (await cli("apply", "-f", str(f))).out == "configmap/game-demo unchanged\n"
    f.write_text(cm_only.replace('player_initial_lives: "3"', 'player_initial_lives: "7"'))
    assert (await cli("apply", "-f", str(f))).out == "configmap/game-demo configured\n"
    r = await cli("wait", "configmap", "game-demo", "--for=jsonpath={.data.player_initial_lives}=7",
                  "--timeout", "10s")
    assert r.code == 0, r.err
    r = await cli("describe", "configmap", "game-demo")
    assert "player.maximum-lives=5" in r.out
    r = await cli("get", "cm")
    assert r.out.split("\n")[1].split()[:2] == ["game-demo", "4"]


async def test_pod_in_missing_namespace_is_refused_with_the_field(cli: Cli, tmp_path: pathlib.Path) -> None:  # noqa: F811
    f = tmp_path / "p.yaml"
    f.write_text((ROOT / "examples" / "namespace.yaml").read_text().split("---")[0])
    r = await cli("apply", "-f", str(f))
    assert r.code == 1
    assert 'metadata.namespace: namespaces "team-a" not found' in r.err
