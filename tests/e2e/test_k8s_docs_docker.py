"""Kubernetes docs' example manifests (tests/fixtures/k8s-docs) run for real: the session's
shared `cowpod up --detach` cluster with a second VM of the module's own, on the real Docker
engine and a real etcd, the agents running the pods.

A cowpod cluster has no registry, so the docs' images (`registry.k8s.io/busybox`, `alpine`,
`nginx`, ...) are not on its nodes. Two ways of judging them, both here:

- as written: the manifest applies and its pod waits `ErrImageNotFound`, naming the image (the
  docs' DNS-debugging busybox pod);
- with the local stand-in: the test swaps each container's image for `cowpod/busybox` (the one
  change; a server image with no command of its own, nginx, also gets busybox's `httpd` on its
  containerPort) and checks that the manifest does what the docs page says: ConfigMap values in
  env and files, `$(VAR)` expansion in env and commands, a Deployment whose two replicas with
  `containerPort: 80` land on two VMs, and its Service's name resolving to both.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.e2e.cli_cluster import ROOT, CliCluster
from tests.polling import eventually_sync

pytestmark = pytest.mark.e2e

DOCS = ROOT / "tests" / "fixtures" / "k8s-docs"
STAND_IN = "cowpod/busybox:latest"


@dataclass(frozen=True)
class Cluster(CliCluster):
    vms: tuple[str, ...] = ()

    def apply(self, text: str) -> str:
        return self.run("apply", "-f", "-", stdin=text).stdout

    def pod(self, name: str) -> dict[str, Any]:
        pod: dict[str, Any] = self.json("get", "pod", name)
        return pod

    def wait_phase(self, name: str, phase: str) -> dict[str, Any]:
        self.run("wait", "pod", name, "--for", f"phase={phase}", "--timeout", "120")
        return self.pod(name)

    def delete_pod(self, name: str) -> None:
        self.run("delete", "pod", name, "--grace-period", "0", "--wait")


@pytest.fixture(scope="module")
def cluster(default_cluster: CliCluster) -> Iterator[Cluster]:
    """The shared cluster's `vm-1` and a second VM of the module's own (named for this run:
    VM containers are named after their VMs on the one Docker engine that other tests'
    clusters share), destroyed when the module ends."""
    c = Cluster(default_cluster.env, default_cluster.data, vms=("vm-1", f"docs-{uuid.uuid4().hex[:8]}"))
    vm = (f"apiVersion: cowpod.io/v1\nkind: VM\nmetadata: {{name: {c.vms[1]}}}\n"
          "spec: {className: default, cpu: '1', memory: 1Gi, provider: docker}\n")
    try:
        c.run("apply", "-f", "-", "--wait", "--timeout", "240s", stdin=vm, timeout=300)
        yield c
    finally:
        c.run("vm", "destroy", c.vms[1], "--wait", "--timeout", "180s", check=False, timeout=240)


def as_written(rel: str) -> str:
    return (DOCS / rel).read_text()


def with_stand_in(rel: str) -> str:
    """The manifest with each container's image swapped for the local busybox; a container with
    no command of its own (a server image) serves its first containerPort with busybox's httpd,
    or sleeps when it declares none."""
    docs = [d for d in yaml.safe_load_all(as_written(rel)) if d]
    for doc in docs:
        spec = doc["spec"]["template"]["spec"] if "template" in doc.get("spec", {}) else doc.get("spec", {})
        for c in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            c["image"] = STAND_IN
            if "command" not in c and "args" not in c:
                ports = c.get("ports", [])
                c["command"] = (["httpd", "-f", "-p", str(ports[0]["containerPort"])] if ports
                                else ["sleep", "3600"])
    return yaml.safe_dump_all(docs)


def logs(cluster: Cluster, pod: str) -> str:
    return cluster.run("logs", pod).stdout


def test_configmap_pages_env_files_and_var_expansion(cluster: Cluster) -> None:
    """"Configure a Pod to Use a ConfigMap", page order: values as env, `$(VAR)` in a command,
    a key as a file (`items`), and the concepts page's game-demo pod (env and a volume)."""
    cluster.apply(as_written("configmap/configmaps.yaml"))
    cluster.apply(with_stand_in("pods/configmap/pod-multiple-configmap-env-variable.yaml"))
    cluster.wait_phase("dapi-test-pod", "Succeeded")
    out = logs(cluster, "dapi-test-pod")
    assert "SPECIAL_LEVEL_KEY=very" in out and "LOG_LEVEL=INFO" in out, out
    cluster.delete_pod("dapi-test-pod")

    cluster.apply(as_written("configmap/configmap-multikeys.yaml"))
    cluster.apply(with_stand_in("pods/configmap/pod-configmap-env-var-valueFrom.yaml"))
    cluster.wait_phase("dapi-test-pod", "Succeeded")
    assert logs(cluster, "dapi-test-pod").strip() == "very charm"
    cluster.delete_pod("dapi-test-pod")

    cluster.apply(with_stand_in("pods/configmap/pod-configmap-volume-specific-key.yaml"))
    cluster.wait_phase("dapi-test-pod", "Succeeded")
    assert logs(cluster, "dapi-test-pod").strip() == "very"
    cluster.delete_pod("dapi-test-pod")

    cluster.apply(as_written("configmap/game-demo.yaml"))
    cluster.apply(with_stand_in("configmap/configure-pod.yaml"))
    cluster.wait_phase("configmap-demo-pod", "Running")

    def sh(cmd: str) -> str:
        return cluster.run("exec", "configmap-demo-pod", "--", "sh", "-c", cmd).stdout

    env = sh("echo $PLAYER_INITIAL_LIVES $UI_PROPERTIES_FILE_NAME").split()
    assert env == ["3", "user-interface.properties"]
    assert sh("ls /config").split() == ["game.properties", "user-interface.properties"]
    assert "enemy.types=aliens,monsters" in sh("cat /config/game.properties")
    cluster.delete_pod("configmap-demo-pod")
    for rel in ("configmaps.yaml", "configmap-multikeys.yaml", "game-demo.yaml"):
        cluster.run("delete", "-f", "-", "--ignore-not-found", stdin=as_written(f"configmap/{rel}"))


def test_dependent_environment_variables_expand_as_on_kubernetes(cluster: Cluster) -> None:
    """pods/inject/dependent-envars.yaml: `$(X)` expands to a variable defined before it, stays
    as written for one defined after it, and `$$` escapes."""
    cluster.apply(with_stand_in("pods/inject/dependent-envars.yaml"))
    cluster.wait_phase("dependent-envars-demo", "Running")
    want = ("UNCHANGED_REFERENCE=$(PROTOCOL)://172.17.0.1:80", "SERVICE_ADDRESS=https://172.17.0.1:80",
            "ESCAPED_REFERENCE=$(PROTOCOL)://172.17.0.1:80")

    def printed() -> str | None:
        out = logs(cluster, "dependent-envars-demo")
        return out if all(w in out for w in want) else None

    eventually_sync(printed, timeout=60, what=f"the pod's log holding {want}")
    cluster.delete_pod("dependent-envars-demo")


def test_secret_pages_env_and_files(cluster: Cluster) -> None:
    """"Distribute Credentials Securely Using Secrets": the Secret's keys as env (secretKeyRef)
    and as files of a read-only volume, decoded."""
    cluster.apply(as_written("pods/inject/secret.yaml"))
    cluster.apply(with_stand_in("pods/inject/secret-envars-pod.yaml"))
    cluster.apply(with_stand_in("pods/inject/secret-pod.yaml"))
    cluster.wait_phase("secret-envars-test-pod", "Running")
    cluster.wait_phase("secret-test-pod", "Running")
    env = cluster.run("exec", "secret-envars-test-pod", "--", "sh", "-c",
                      "echo $SECRET_USERNAME $SECRET_PASSWORD").stdout.split()
    assert env == ["my-app", "39528$vdg7Jb"]
    files = cluster.run("exec", "secret-test-pod", "--", "sh", "-c",
                        "cat /etc/secret-volume/username; echo; cat /etc/secret-volume/password").stdout
    assert files.split() == ["my-app", "39528$vdg7Jb"]
    touched = cluster.run("exec", "secret-test-pod", "--", "touch", "/etc/secret-volume/x", check=False)
    assert touched.returncode != 0, "the secret volume is read-only"
    cluster.delete_pod("secret-envars-test-pod")
    cluster.delete_pod("secret-test-pod")
    cluster.run("delete", "-f", "-", stdin=as_written("pods/inject/secret.yaml"))


def test_the_flow_style_logging_sidecar_pod_streams_its_files(cluster: Cluster) -> None:
    """admin/logging's counter pod, written in YAML flow style with escaped line breaks: three
    containers share an emptyDir; each sidecar's log is one of the files the first writes."""
    cluster.apply(with_stand_in("admin/logging/two-files-counter-pod-streaming-sidecar.yaml"))
    cluster.wait_phase("counter", "Running")

    def streamed() -> tuple[str, str] | None:
        one = cluster.run("logs", "counter", "-c", "count-log-1").stdout
        two = cluster.run("logs", "counter", "-c", "count-log-2").stdout
        return (one, two) if one.startswith("0: ") and " INFO 0" in two else None

    eventually_sync(streamed, timeout=60, what="both sidecars streaming their files")
    cluster.delete_pod("counter")


def test_deployment_and_service_from_the_services_page(cluster: Cluster) -> None:
    """"Connecting Applications with Services": run-my-nginx (2 replicas, containerPort 80) and
    its Service. Port 80 is a port of the VM here, so the replicas land on the two VMs; the
    Service's Endpoints list both and a pod resolves `my-nginx` to both addresses."""
    cluster.apply(with_stand_in("service/run-my-nginx.yaml"))
    cluster.apply(as_written("service/nginx-svc.yaml"))
    cluster.run("rollout", "status", "deploy/my-nginx", "--timeout", "120s")
    pods = [p for p in cluster.json("get", "pods", "-l", "run=my-nginx")["items"]
            if not p["metadata"].get("deletionTimestamp")]
    assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(cluster.vms), pods
    ips = sorted(p["status"]["podIP"] for p in pods)

    def endpoint_ips() -> list[str] | None:
        ep = cluster.json("get", "endpoints", "my-nginx")
        got = sorted(a["ip"] for s in ep.get("subsets", []) for a in s.get("addresses", []))
        return got if got == ips else None

    eventually_sync(endpoint_ips, timeout=60, what=f"my-nginx's endpoints = {ips}")
    asker = pods[0]["metadata"]["name"]
    answer = cluster.run("exec", asker, "--", "nslookup", "my-nginx.default.svc.cluster.local").stdout
    assert all(ip in answer for ip in ips), answer
    page = cluster.run("exec", asker, "--", "wget", "-qO-", "-S", "http://my-nginx:80/", check=False)
    assert "HTTP/1" in page.stderr, page.stderr  # busybox httpd answered through the Service's name
    cluster.run("delete", "-f", "-", stdin=as_written("service/nginx-svc.yaml"))
    cluster.run("delete", "deploy", "my-nginx")


def test_a_registry_image_waits_err_image_not_found_naming_it(cluster: Cluster) -> None:
    """admin/dns/busybox.yaml as written (busybox:1.28, not on the node, no registry): it applies,
    is bound, and waits with ErrImageNotFound naming the image, as kubelet reports a missing
    image; the pod stays Pending (retried with back-off)."""
    missing = subprocess.run(["docker", "image", "inspect", "busybox:1.28"], capture_output=True)
    assert missing.returncode != 0, "busybox:1.28 is on this Docker engine: the test needs it absent"
    cluster.apply(as_written("admin/busybox.yaml"))

    def waiting() -> dict[str, Any] | None:
        pod = cluster.pod("busybox")
        for cs in pod.get("status", {}).get("containerStatuses", []):
            w = cs.get("state", {}).get("waiting", {})
            if w.get("reason") == "ErrImageNotFound":
                return pod
        return None

    pod = eventually_sync(waiting, timeout=90, what="busybox waiting ErrImageNotFound")
    assert pod["spec"]["nodeName"] in cluster.vms and pod["status"]["phase"] == "Pending"
    (cs,) = pod["status"]["containerStatuses"]
    assert "busybox:1.28" in cs["state"]["waiting"]["message"], cs
    cluster.delete_pod("busybox")
