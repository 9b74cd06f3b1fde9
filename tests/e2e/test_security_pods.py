"""A default (secure) `cowpod up` with one VM on the real Docker engine (the session's shared
cluster, tests/e2e/cli_cluster.py): the agent joined with a bootstrap token and holds a node
certificate, the pods it runs are unprivileged with Docker's default capabilities and
seccomp, and no pod can reach the Docker socket or the control-plane directory."""

from __future__ import annotations

import json
import pathlib
import subprocess
import tarfile

import pytest

from cowpod.pki import Subject, subject_of
from tests.e2e.cli_cluster import BIN, docker
from tests.e2e.cli_cluster import CliCluster as Cluster

pytestmark = pytest.mark.e2e

PROBE = """\
apiVersion: v1
kind: Pod
metadata: {name: probe}
spec:
  restartPolicy: Never
  containers:
  - name: probe
    image: cowpod/busybox:latest
    command: ["sleep", "600"]
    resources: {requests: {cpu: 10m, memory: 16Mi}}
"""


@pytest.fixture(scope="module")
def cluster(default_cluster: Cluster) -> Cluster:
    return default_cluster


def test_cluster_is_secure_by_default(cluster: Cluster) -> None:
    state = json.loads((cluster.data / "cluster.json").read_text())
    assert state["secure"] is True
    shown = cluster.run("config").stdout
    assert "identity: admin (role admin, by certificate)" in shown
    # Plaintext to the controller's port is refused.
    plain = subprocess.run(
        [str(BIN / "cowpod"), "--controller", state["controller"], "get", "pods"],
        env={**cluster.env, "COWPOD_DATA_DIR": str(cluster.data.parent / "nowhere")},
        capture_output=True, text=True, timeout=60,
    )
    assert plain.returncode != 0


def test_vm_agent_joined_with_its_own_node_certificate(cluster: Cluster) -> None:
    vm = cluster.json("get", "vm", "vm-1")
    container = vm["status"]["providerID"].removeprefix("docker://")
    pem = docker("exec", container, "cat", "/var/lib/cowpod/pki/vm-1.crt").stdout.encode()
    assert subject_of(pem) == Subject("system:node:vm-1", ("system:nodes",))
    # The CA key never reaches a VM.
    assert docker("exec", container, "ls", "/run/cowpod/").stdout.split().count("ca.key") == 0
    tokens = cluster.run("token", "list").stdout
    assert "bootstrap" in tokens and "VM join token" in tokens


def test_pod_is_unprivileged_and_cannot_reach_the_engine(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    manifest = tmp_path / "probe.yaml"
    manifest.write_text(PROBE)
    cluster.run("apply", "-f", str(manifest))
    cluster.run("wait", "pod", "probe", "--for", "phase=Running", "--timeout", "120")
    pod = cluster.json("get", "pod", "probe")
    uid = pod["metadata"]["uid"]
    ids = docker("ps", "-q", "--no-trunc", "--filter", f"label=cowpod.pod.uid={uid}").stdout.split()
    assert ids
    for cid in ids:
        info = json.loads(docker("inspect", cid).stdout)[0]
        hc = info["HostConfig"]
        assert hc["Privileged"] is False
        assert not hc.get("CapAdd")
        assert not any("unconfined" in o for o in hc.get("SecurityOpt") or [])
        sources = [m.get("Source", "") for m in info.get("Mounts", [])]
        assert not any("docker.sock" in s or s.endswith("/run") for s in sources), sources
    for path in ("/var/run/docker.sock", "/run/cowpod/controller.sock", "/run/cowpod/ca.crt"):
        out = cluster.run("exec", "probe", "--", "ls", path, check=False)
        assert out.returncode != 0, f"{path} is visible in the pod"
    # A pod asking for the socket as a hostPath is refused before it is stored.
    bad = tmp_path / "bad.yaml"
    bad.write_text(PROBE.replace("name: probe}", "name: sock}").replace(
        "  containers:", "  volumes: [{name: d, hostPath: {path: /var/run/docker.sock}}]\n  containers:"))
    proc = cluster.run("apply", "-f", str(bad), check=False)
    assert proc.returncode != 0 and "hostPath.path" in proc.stderr
    assert cluster.run("get", "pod", "sock", check=False).returncode != 0
    cluster.run("delete", "pod", "probe", "--grace-period", "0")


def _committed_files(image: str, base: str, tmp: pathlib.Path) -> dict[str, bytes]:
    """Every regular file in the layers `image` has on top of `base` (what `docker
    commit` took from a running VM), read from `docker save`, with its content."""
    base_layers = json.loads(docker("image", "inspect", base).stdout)[0]["RootFS"]["Layers"]
    archive = tmp / "image.tar"
    docker("save", "-o", str(archive), image)
    out: dict[str, bytes] = {}
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        layers = manifest[0]["Layers"]
        assert len(layers) > len(base_layers)
        for name in layers[len(base_layers):]:
            with tarfile.open(fileobj=outer.extractfile(name)) as layer:
                for member in layer:
                    f = layer.extractfile(member) if member.isfile() else None
                    if f is not None:
                        out[member.name] = f.read()
    archive.unlink()
    return out


def test_snapshot_images_hold_no_node_key_and_pods_cannot_run_internal_images(
    cluster: Cluster, tmp_path: pathlib.Path
) -> None:
    """Hole 2 of #15: a user who may create pods ran the parent's snapshot image
    and read the parent's node key from it."""
    parent = cluster.json("get", "vm", "vm-1")["status"]["providerID"].removeprefix("docker://")
    assert "PRIVATE KEY" in docker("exec", parent, "cat", "/var/lib/cowpod/pki/vm-1.key").stdout
    cluster.run("vm", "clone", "vm-1", "--name", "vm-2", "--wait", "--timeout", "180", timeout=240)
    child = cluster.json("get", "vm", "vm-2")["status"]["providerID"].removeprefix("docker://")
    snapshot = json.loads(docker("inspect", child).stdout)[0]["Config"]["Labels"]["cowpod.snapshot"]
    assert snapshot.startswith("cowpod/vm-snap:") and "-vm-1-" in snapshot  # <cluster>-vm-1-<n>
    # The attack, part 1: read the snapshot. No key file, no PEM key anywhere in what was committed.
    files = _committed_files(snapshot, "cowpod/vm:latest", tmp_path)
    assert files, "the snapshot layer is empty: the test reads the wrong layers"
    leaked = [n for n, data in files.items() if "cowpod/pki/" in n or b"PRIVATE KEY" in data]
    assert not leaked, leaked
    # The child made its own key (in its memory-backed key directory) and joined with it.
    pem = docker("exec", child, "cat", "/var/lib/cowpod/pki/vm-2.crt").stdout.encode()
    assert subject_of(pem) == Subject("system:node:vm-2", ("system:nodes",))
    # The attack, part 2: run the internal images as pods. Refused at create, by name...
    for i, image in enumerate((snapshot, "cowpod/vm:latest", "docker.io/cowpod/vm-own:vm-2")):
        bad = tmp_path / f"internal{i}.yaml"
        bad.write_text(PROBE.replace("name: probe}", f"name: internal{i}}}").replace(
            "cowpod/busybox:latest", image))
        proc = cluster.run("apply", "-f", str(bad), check=False)
        assert proc.returncode != 0 and "spec.containers[0].image" in proc.stderr, proc.stderr
        assert "internal images" in proc.stderr
        assert cluster.run("get", "pod", f"internal{i}", check=False).returncode != 0
    # ... and by the agent when the image is named by a short id (the engine resolves it).
    short_id = json.loads(docker("image", "inspect", snapshot).stdout)[0]["Id"].removeprefix("sha256:")[:12]
    by_id = tmp_path / "byid.yaml"
    by_id.write_text(PROBE.replace("name: probe}", "name: byid}").replace(
        "image: cowpod/busybox:latest", f"image: {short_id}\n    imagePullPolicy: Never"))
    cluster.run("apply", "-f", str(by_id))
    cluster.run("wait", "pod", "byid", "--timeout", "120",
                "--for=jsonpath={.status.containerStatuses[0].state.waiting.reason}=InvalidImageName")
    uid = cluster.json("get", "pod", "byid")["metadata"]["uid"]
    for cid in docker("ps", "-aq", "--no-trunc", "--filter", f"label=cowpod.pod.uid={uid}").stdout.split():
        labels = json.loads(docker("inspect", cid).stdout)[0]["Config"]["Labels"]
        assert "cowpod.vm" not in labels and "cowpod.internal" not in labels
    cluster.run("delete", "pod", "byid", "--grace-period", "0")
    cluster.run("vm", "destroy", "vm-2", "--wait", "--timeout", "180", timeout=240)


def test_pods_cannot_rewrite_the_vms_hosts_and_resolv_conf(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    """Also-verify item of #15: joining the VM's network, a pod got the VM's own
    /etc/hosts and resolv.conf read-write and could redirect the agent's and every
    other pod's name lookups."""
    manifest = tmp_path / "dns.yaml"
    manifest.write_text(PROBE.replace("name: probe}", "name: dns}"))
    cluster.run("apply", "-f", str(manifest))
    cluster.run("wait", "pod", "dns", "--for", "phase=Running", "--timeout", "120")
    node = cluster.json("get", "pod", "dns")["spec"]["nodeName"]
    vm = cluster.json("get", "vm", node)["status"]["providerID"].removeprefix("docker://")
    for path in ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname"):
        out = cluster.run("exec", "dns", "--", "sh", "-c", f"echo 6.6.6.6 evil >> {path}", check=False)
        assert out.returncode != 0, f"a pod wrote the VM's {path}"
        assert "6.6.6.6" not in docker("exec", vm, "cat", path).stdout
    # The pod still reads them: it resolves what its VM resolves.
    assert node in cluster.run("exec", "dns", "--", "cat", "/etc/hostname").stdout
    cluster.run("delete", "pod", "dns", "--grace-period", "0")
