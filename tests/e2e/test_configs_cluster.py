"""The examples of #14 through the CLI a user types, on a default (secure) `cowpod up` with
one VM on the real Docker engine (the session's shared cluster): the VM's agent reads the
ConfigMap and Secret its pods use with its own node certificate, a ConfigMap applied again
with a new value reaches the running pod's files, and `cowpod delete namespace` takes the
namespace's pod with it."""

from __future__ import annotations

import pathlib
import time

import pytest

from tests.e2e.cli_cluster import ROOT, docker
from tests.e2e.cli_cluster import CliCluster as Cluster

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(default_cluster: Cluster) -> Cluster:
    return default_cluster


def sh(cluster: Cluster, pod: str, script: str, namespace: str = "default") -> str:
    return cluster.run("exec", pod, "-n", namespace, "--", "/bin/sh", "-c", script).stdout


def test_configmap_and_secret_examples_in_a_vm(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    cluster.run("apply", "-f", str(ROOT / "examples" / "configmap.yaml"))
    cluster.run("apply", "-f", str(ROOT / "examples" / "secret.yaml"))
    for pod in ("configmap-demo-pod", "secret-demo-pod"):
        cluster.run("wait", "pod", pod, "--for", "phase=Running", "--timeout", "120s")
    lives = sh(cluster, "configmap-demo-pod", "echo $PLAYER_INITIAL_LIVES $GAME_player_initial_lives")
    assert lives == "3 3\n"
    assert "player.maximum-lives=5" in sh(cluster, "configmap-demo-pod", "cat /config/game.properties")
    assert sh(cluster, "secret-demo-pod", "echo $SECRET_USERNAME; cat /etc/secret-volume/password") == (
        "admin\n1f2d1e2e67df")
    assert sh(cluster, "secret-demo-pod", "stat -L -c %a /etc/secret-volume/username") == "400\n"
    # Secrets stay out of tables and describe.
    described = cluster.run("describe", "secret", "mysecret").stdout
    assert "1f2d1e2e67df" not in described and "12 bytes" in described

    changed = tmp_path / "cm.yaml"
    changed.write_text((ROOT / "examples" / "configmap.yaml").read_text().split("---")[0]
                       .replace("player.maximum-lives=5", "player.maximum-lives=9"))
    assert cluster.run("apply", "-f", str(changed)).stdout == "configmap/game-demo configured\n"
    deadline = time.monotonic() + 90
    while "player.maximum-lives=9" not in sh(cluster, "configmap-demo-pod", "cat /config/game.properties"):
        assert time.monotonic() < deadline, "the updated ConfigMap never reached the pod's file"
        time.sleep(0.5)
    assert sh(cluster, "configmap-demo-pod", "echo $PLAYER_INITIAL_LIVES") == "3\n"
    cluster.run("delete", "-f", str(ROOT / "examples" / "configmap.yaml"), "--grace-period", "1")
    cluster.run("delete", "-f", str(ROOT / "examples" / "secret.yaml"), "--grace-period", "1")


def test_namespace_example_and_its_deletion(cluster: Cluster) -> None:
    out = cluster.run("apply", "-f", str(ROOT / "examples" / "namespace.yaml")).stdout
    assert out == "namespace/team-a created\npod/team-a-hello created\n"
    cluster.run("wait", "pod", "team-a-hello", "-n", "team-a", "--for", "phase=Succeeded",
                "--timeout", "120s")
    assert "hello from team-a" in cluster.run("logs", "team-a-hello", "-n", "team-a").stdout
    uid = cluster.json("get", "pod", "team-a-hello", "-n", "team-a")["metadata"]["uid"]
    cluster.run("delete", "namespace", "team-a")
    cluster.run("wait", "namespace", "team-a", "--for", "delete", "--timeout", "90s")
    assert docker("ps", "-aq", "--filter", f"label=cowpod.pod.uid={uid}").stdout.strip() == ""
    proc = cluster.run("apply", "-f", str(ROOT / "examples" / "hello.yaml"), "-n", "team-a", check=False)
    assert proc.returncode != 0 and 'namespaces "team-a" not found' in proc.stderr
