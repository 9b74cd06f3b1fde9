"""Issue 3, end to end through the CLI a user types: `cowpod up --detach` with
one VM on the real Docker engine and a real etcd (the session's shared cluster), pods
applied from examples/, their status, logs, nesting inside the VM, deletion, and
`cowpod down` leaving nothing behind (on a cluster of that test's own)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import pty
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.cli_cluster import BIN, ROOT
from tests.e2e.cli_cluster import CliCluster as Cli
from tests.polling import eventually_sync

pytestmark = pytest.mark.e2e


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def cluster(default_cluster: Cli) -> Cli:
    return default_cluster


@pytest.fixture
def own_cluster(vm_images: None) -> Iterator[Cli]:
    """A `cowpod up --detach --vms 1` of the test's own, for a test that stops it."""
    cli, up = Cli.up("walking-skeleton-down", "--vms", "1")
    try:
        assert "vm-1" in up.stdout + up.stderr
        yield cli
    finally:
        cli.down()


def wait_for(cli: Cli, name: str, phase: str) -> dict[str, Any]:
    cli.run("wait", "pod", name, "--for", f"phase={phase}", "--timeout", "120")
    pod: dict[str, Any] = cli.json("get", "pod", name)
    return pod


def test_status_lists_every_component(cluster: Cli) -> None:
    status = cluster.json("status")
    names = {c["name"]: c for c in status["components"]}
    for component in ("etcd", "controller", "scheduler"):
        assert names[component]["healthy"] is True, status
        assert names[component]["pid"] > 0
    nodes = cluster.json("get", "nodes")["items"]
    assert [n["metadata"]["name"] for n in nodes] == ["vm-1"]
    ready = [c for c in nodes[0]["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True"


def test_hello_pod_succeeds_with_exit_code_times_and_logs(cluster: Cli) -> None:
    applied = cluster.run("apply", "-f", str(ROOT / "examples" / "hello.yaml"))
    assert "pod/hello created" in applied.stdout
    pod = wait_for(cluster, "hello", "Succeeded")
    assert pod["spec"]["nodeName"] == "vm-1"
    (cs,) = pod["status"]["containerStatuses"]
    terminated = cs["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert terminated["reason"] == "Completed"
    assert terminated["startedAt"] <= terminated["finishedAt"]
    assert pod["status"]["startTime"]
    logs = cluster.run("logs", "hello")
    assert "hello from cowpod" in logs.stdout
    cluster.run("delete", "pod", "hello")


def test_long_running_pod_is_nested_in_its_vm_then_deleted(cluster: Cli) -> None:
    cluster.run("apply", "-f", str(ROOT / "examples" / "web.yaml"))
    pod = wait_for(cluster, "web", "Running")
    vm = cluster.json("get", "vm", "vm-1")
    vm_container = docker("inspect", "-f", "{{.Id}}", vm["status"]["providerID"].removeprefix("docker://"))
    ids = docker(
        "ps", "-q", "--no-trunc", "--filter", f"label=cowpod.pod.uid={pod['metadata']['uid']}"
    ).split()
    assert ids, "no Docker container carries the pod's uid"
    for cid in ids:
        info = json.loads(docker("inspect", cid))[0]
        assert vm_container in info["HostConfig"]["CgroupParent"], info["HostConfig"]["CgroupParent"]
    cluster.run("delete", "pod", "web", "--wait", "--grace-period", "1")
    left = docker("ps", "-aq", "--filter", f"label=cowpod.pod.uid={pod['metadata']['uid']}")
    assert left == ""
    gone = cluster.run("get", "pod", "web", check=False)
    assert gone.returncode != 0 and "not found" in gone.stderr.lower()


def test_bad_manifest_is_rejected_with_file_document_and_field(cluster: Cli, tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: ok-one}\nspec:\n"
        "  containers: [{name: a, image: cowpod/busybox:latest}]\n"
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: bad-one}\nspec:\n"
        "  containers: [{name: a, imagee: x}]\n"
    )
    proc = cluster.run("apply", "-f", str(bad), check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "bad.yaml" in lines[0] and "document 2" in lines[0] and "spec.containers[0].imagee" in lines[0]
    assert "Traceback" not in proc.stderr
    # The whole file is parsed before anything is sent: no document of it is applied.
    for name in ("ok-one", "bad-one"):
        assert cluster.run("get", "pod", name, check=False).returncode != 0


def test_missing_image_fails_the_pod_with_err_image_not_found(cluster: Cli, tmp_path: pathlib.Path) -> None:
    m = tmp_path / "noimage.yaml"
    m.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: noimage}\nspec:\n  restartPolicy: Never\n"
        "  containers: [{name: a, image: cowpod/does-not-exist:1}]\n"
    )
    cluster.run("apply", "-f", str(m))
    deadline = time.monotonic() + 120
    reason = ""
    while time.monotonic() < deadline:
        pod = cluster.json("get", "pod", "noimage")
        statuses = pod.get("status", {}).get("containerStatuses", [])
        reason = statuses[0].get("state", {}).get("waiting", {}).get("reason", "") if statuses else ""
        if reason or pod.get("status", {}).get("phase") == "Failed":
            break
        time.sleep(0.5)
    assert reason == "ErrImageNotFound" or pod["status"].get("reason") == "ErrImageNotFound", pod
    cluster.run("delete", "pod", "noimage", "--wait", "--grace-period", "0")


def test_an_instant_clone_gets_its_agent_forked_from_the_parents_zygote(cluster: Cli) -> None:
    cluster.run("vm", "clone", "vm-1", "--name", "vm-1-kid", "--wait", "--timeout", "120s")
    vm = cluster.json("get", "vm", "vm-1-kid")
    assert vm["spec"]["parent"] == "vm-1" and vm["status"]["cloneKind"] == "instant"
    node = cluster.json("get", "node", "vm-1-kid")
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
    # The controller's docker provider forks clones' agents from a zygote by default.
    logs = pathlib.Path(cluster.env["COWPOD_DATA_DIR"]) / "zygotes"
    forked = "".join(f.read_text() for f in logs.glob("*.log"))
    assert "--node-name vm-1-kid" in forked, forked[-2000:]
    cluster.run("vm", "destroy", "vm-1-kid", "--wait", "--timeout", "120s")


SERVICE_MANIFEST = """\
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: echo, labels: {app: echo}}
spec:
  containers:
  - name: httpd
    image: cowpod/busybox:latest
    command: ["sh", "-c", "mkdir -p /www && echo hello from echo > /www/index.html &&
              exec httpd -f -p 8080 -h /www"]
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {tcpSocket: {port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: asker}
spec:
  containers: [{name: sh, image: cowpod/busybox:latest, command: ["sleep", "1d"]}]
"""


def test_a_service_name_resolves_to_its_ready_pods(cluster: Cli, tmp_path: pathlib.Path) -> None:
    """#14: a pod resolves `<service>`, `<service>.<namespace>` and the full name to the ready
    endpoints (its VM's address), through the agent's DNS and the pod's own resolv.conf."""
    m = tmp_path / "svc.yaml"
    m.write_text(SERVICE_MANIFEST)
    cluster.run("apply", "-f", str(m))
    wait_for(cluster, "asker", "Running")
    echo = wait_for(cluster, "echo", "Running")

    def ready_ips() -> list[str]:
        ep = cluster.json("get", "endpoints", "echo")
        return [a["ip"] for s in ep.get("subsets", []) for a in s.get("addresses", [])]

    ips = eventually_sync(ready_ips, timeout=60, what="echo's endpoints")
    assert ips == [echo["status"]["podIP"]], ips

    resolv = cluster.run("exec", "asker", "--", "cat", "/etc/resolv.conf").stdout
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in resolv
    out = cluster.run("exec", "asker", "--", "nslookup", "echo.default.svc.cluster.local").stdout
    assert ips[0] in out, out
    for name in ("echo", "echo.default", "echo.default.svc.cluster.local"):
        page = cluster.run("exec", "asker", "--", "wget", "-qO-", f"http://{name}:8080/").stdout
        assert "hello from echo" in page, name
    assert cluster.run("exec", "asker", "--", "nslookup", "nope.default.svc.cluster.local",
                       check=False).returncode != 0

    cluster.run("delete", "pod", "echo", "--wait", "--grace-period", "1")
    eventually_sync(lambda: not ready_ips(), timeout=60, what="echo gone from its endpoints")
    cluster.run("delete", "pod", "asker", "--grace-period", "1")
    cluster.run("delete", "service", "echo")


def test_exec_it_is_an_interactive_shell_with_a_terminal(cluster: Cli, tmp_path: pathlib.Path) -> None:
    """#14: `cowpod exec -it POD -- sh` on a terminal: keys typed reach a shell with a TTY of
    the terminal's size, its output comes back, and its exit code is cowpod's."""
    m = tmp_path / "shell.yaml"
    m.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: shell}\nspec:\n"
                 "  containers: [{name: sh, image: cowpod/busybox:latest, command: [sleep, 1d]}]\n")
    cluster.run("apply", "-f", str(m))
    wait_for(cluster, "shell", "Running")
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    proc = subprocess.Popen([str(BIN / "cowpod"), "exec", "-it", "shell", "--", "sh"], env=cluster.env,
                            stdin=secondary, stdout=secondary, stderr=secondary, close_fds=True)
    os.close(secondary)
    os.write(primary, b"tty; stty size; echo answer=$((6*7)); exit 3\n")
    out = b""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 0.5)
        if ready:
            with contextlib.suppress(OSError):
                out += os.read(primary, 65536)
    with contextlib.suppress(OSError):
        while select.select([primary], [], [], 0.2)[0]:
            chunk = os.read(primary, 65536)
            if not chunk:
                break
            out += chunk
    os.close(primary)
    text = out.decode(errors="replace")
    assert proc.wait(timeout=10) == 3, text
    assert "answer=42" in text and "/dev/pts/" in text and "33 101" in text, text
    # Without a terminal, -t is dropped with kubectl's warning; stdin still streams.
    piped = cluster.run("exec", "-it", "shell", "--", "cat", stdin="through the pipe\n")
    assert piped.stdout == "through the pipe\n"
    assert "Unable to use a TTY" in piped.stderr
    cluster.run("delete", "pod", "shell", "--grace-period", "1")


def test_down_leaves_no_container_behind(own_cluster: Cli) -> None:
    cluster = own_cluster
    cluster.run("apply", "-f", str(ROOT / "examples" / "web.yaml"))
    pod = wait_for(cluster, "web", "Running")
    vm = cluster.json("get", "vm", "vm-1")
    vm_id = vm["status"]["providerID"].removeprefix("docker://")
    pod_ids = docker("ps", "-aq", "--filter", f"label=cowpod.pod.uid={pod['metadata']['uid']}").split()
    assert pod_ids
    status = cluster.json("status")
    cluster.run("down", timeout=180)
    remaining = set(docker("ps", "-aq", "--no-trunc").split()) | set(docker("ps", "-aq").split())
    assert vm_id not in remaining
    assert not set(pod_ids) & remaining
    for c in status["components"]:
        if c.get("pid"):
            with pytest.raises(ProcessLookupError):
                os.kill(c["pid"], 0)

