"""Issue #14's honoured Pod fields on the real Docker engine: securityContext (uid, gid,
groups, read-only root filesystem, no new privileges, dropped capabilities,
runAsNonRoot), lifecycle httpGet/tcpSocket/sleep handlers, and activeDeadlineSeconds.
Pods are written as Kubernetes manifests and decoded as `apply` decodes them."""

from __future__ import annotations

import asyncio
import io
import pathlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent.hostpath import HostPathPrefix
from agent.testing import (
    BUSYBOX,
    AgentRunner,
    cleanup_docker,
    create_and_bind,
    ensure_images,
    gone,
    phase_is,
    wait_pod,
)
from cowpod.client import Client
from cowpod.manifest import load_paths, load_text
from cowpod.v1 import meta_pb2, pod_pb2

pytestmark = pytest.mark.e2e

ROOT = pathlib.Path(__file__).resolve().parents[2]


def manifest(text: str) -> pod_pb2.Pod:
    (doc,) = load_text(text.replace("IMAGE", BUSYBOX), "test.yaml")
    assert isinstance(doc.obj, pod_pb2.Pod)
    doc.obj.spec.termination_grace_period_seconds = 5
    return doc.obj


def exit_code(pod: Any, container: str) -> int | None:
    for cs in pod.status.container_statuses if pod is not None else ():
        if cs.name == container and cs.state.HasField("terminated"):
            return int(cs.state.terminated.exit_code)
    return None


def waiting(pod: Any) -> tuple[str, str]:
    for cs in pod.status.container_statuses if pod is not None else ():
        if cs.state.HasField("waiting"):
            return cs.state.waiting.reason, cs.state.waiting.message
    return "", ""


@pytest.fixture
async def node(controller: Any, tmp_path: pathlib.Path) -> AsyncIterator[AgentRunner]:
    ensure_images()
    (tmp_path / "hooks").mkdir()
    name = f"agent-{uuid.uuid4().hex[:8]}"
    cleanup_docker(name)
    runner = AgentRunner(controller.address, name, listen=f"unix://{tmp_path}/agent.sock",
                         host_path_prefixes=(HostPathPrefix(str(tmp_path / "hooks"), writable=True),))
    try:
        await runner.start()
        yield runner
    finally:
        await runner.stop()
        cleanup_docker(name)


async def test_security_context_is_what_the_process_gets(node: AgentRunner, client: Client) -> None:
    me = node.config.node_name
    # As in the Kubernetes docs' security-context.yaml and -2.yaml: the pod's user and
    # groups, the container's user winning; exit codes carry what the process saw.
    pod = manifest("""
apiVersion: v1
kind: Pod
metadata: {name: ids}
spec:
  restartPolicy: Never
  securityContext: {runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000, supplementalGroups: [4000]}
  containers:
  - name: pod-user
    image: IMAGE
    command: [sh, -c, 'id -G | grep -qw 2000 && id -G | grep -qw 4000 || exit 99; exit $(( $(id -u) - 990 ))']
  - name: own-user
    image: IMAGE
    command: [sh, -c, '[ "$(id -g)" = 3000 ] || exit 98; exit $(( $(id -u) - 1990 ))']
    securityContext: {runAsUser: 2000}
""")
    await create_and_bind(client, pod, me)
    done = await wait_pod(client, "ids", phase_is("Failed", "Succeeded"), timeout=90)
    assert (exit_code(done, "pod-user"), exit_code(done, "own-user")) == (10, 10), done.status

    locked = manifest("""
apiVersion: v1
kind: Pod
metadata: {name: locked}
spec:
  restartPolicy: Never
  volumes: [{name: scratch, emptyDir: {}}]
  containers:
  - name: c
    image: IMAGE
    command: [sh, -c, 'touch /rootfs-file 2>/dev/null && exit 11; touch /scratch/ok || exit 12;
              grep -q "NoNewPrivs:.*1" /proc/self/status || exit 13;
              grep -q "CapEff:.*0000000000000000" /proc/self/status || exit 14']
    volumeMounts: [{name: scratch, mountPath: /scratch}]
    securityContext:
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
""")
    await create_and_bind(client, locked, me)
    done = await wait_pod(client, "locked", phase_is("Failed", "Succeeded"), timeout=90)
    assert exit_code(done, "c") == 0 and done.status.phase == "Succeeded", done.status

    # The same commands with no securityContext: root, a writable root, capabilities kept.
    free = manifest("""
apiVersion: v1
kind: Pod
metadata: {name: free}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: IMAGE
    command: [sh, -c, 'touch /rootfs-file || exit 11;
              grep -q "CapEff:.*0000000000000000" /proc/self/status && exit 14; exit $(id -u)']
""")
    await create_and_bind(client, free, me)
    done = await wait_pod(client, "free", phase_is("Failed", "Succeeded"), timeout=90)
    assert exit_code(done, "c") == 0, done.status


async def test_run_as_non_root_refuses_a_root_image(node: AgentRunner, client: Client) -> None:
    pod = manifest("""
apiVersion: v1
kind: Pod
metadata: {name: nonroot}
spec:
  securityContext: {runAsNonRoot: true}
  containers: [{name: c, image: IMAGE, command: [sleep, "600"]}]
""")
    await create_and_bind(client, pod, node.config.node_name)
    got = await wait_pod(client, "nonroot", lambda p: waiting(p)[0] == "CreateContainerError", timeout=60)
    assert "runAsNonRoot" in waiting(got)[1] and got.status.phase == "Pending"


async def test_lifecycle_http_handlers_reach_the_pod(
    node: AgentRunner, client: Client, tmp_path: pathlib.Path
) -> None:
    hooks = tmp_path / "hooks" / "log"
    # The server's CGI appends each hook's query to a file on the host; postStart comes
    # from the second container (started after the server), preStop from the server's own.
    serve = ("mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\n"
             "echo $QUERY_STRING >> /h/log\\n' > /www/cgi-bin/hook && chmod +x /www/cgi-bin/hook && "
             "exec httpd -f -p 8080 -h /www")
    pod = manifest(f"""
apiVersion: v1
kind: Pod
metadata: {{name: hooks}}
spec:
  volumes: [{{name: h, hostPath: {{path: "{tmp_path / 'hooks'}"}}}}]
  containers:
  - name: server
    image: IMAGE
    ports: [{{name: http, containerPort: 8080}}]
    volumeMounts: [{{name: h, mountPath: /h}}]
    readinessProbe: {{tcpSocket: {{port: http}}, periodSeconds: 1}}
    lifecycle:
      preStop:
        httpGet: {{path: "/cgi-bin/hook?pre", port: http}}
  - name: app
    image: IMAGE
    command: [sleep, "600"]
    lifecycle:
      postStart:
        httpGet: {{path: "/cgi-bin/hook?post", port: 8080}}
      preStop:
        sleep: {{seconds: 1}}
""")
    pod.spec.containers[0].command.extend(["sh", "-c", serve])
    created = await create_and_bind(client, pod, node.config.node_name)
    assert created.spec.containers[0].lifecycle.pre_stop.http_get.port == 8080  # `port: http` resolved
    await wait_pod(client, "hooks", lambda p: phase_is("Running")(p) and hooks.exists()
                   and "post" in hooks.read_text(), timeout=90)
    assert "pre" not in hooks.read_text().split()
    await client.pods.Delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="hooks")))
    await wait_pod(client, "hooks", gone, timeout=90)
    assert "pre" in hooks.read_text().split()


async def test_active_deadline_fails_the_pod(node: AgentRunner, client: Client) -> None:
    pod = manifest("""
apiVersion: v1
kind: Pod
metadata: {name: deadline}
spec:
  activeDeadlineSeconds: 3
  containers: [{name: c, image: IMAGE, command: [sleep, "600"]}]
""")
    await create_and_bind(client, pod, node.config.node_name)
    await wait_pod(client, "deadline", phase_is("Running"), timeout=60)
    failed = await wait_pod(client, "deadline", phase_is("Failed"), timeout=60)
    assert failed.status.reason == "DeadlineExceeded", failed.status
    stopped = await wait_pod(client, "deadline", lambda p: p is not None and all(
        cs.state.HasField("terminated") for cs in p.status.container_statuses), timeout=60)
    assert stopped.status.phase == "Failed"


async def test_the_security_context_example_serves_as_uid_1000(node: AgentRunner, client: Client) -> None:
    (doc,) = load_paths([str(ROOT / "examples" / "security-context.yaml")], io.StringIO())
    await create_and_bind(client, doc.obj, node.config.node_name)
    ready = await wait_pod(client, "secure-web", lambda p: p is not None and any(
        c.type == "Ready" and c.status == "True" for c in p.status.conditions), timeout=90)
    assert ready.spec.containers[0].readiness_probe.http_get.port == 8080
    out = await client.pods.Exec(pod_pb2.ExecRequest(pod=meta_pb2.ObjectKey(name="secure-web"),
                                                     command=["sh", "-c", "id -u; cat /www/index.html"]))
    assert (out.exit_code, out.stdout.decode().split()) == (0, ["1000", "hello", "from", "1000"])


async def test_a_non_root_pod_writes_its_disk_empty_dir(node: AgentRunner, client: Client) -> None:
    # The Kubernetes docs' security-context.yaml exercise: uid 1000 writes to /data/demo.
    pod = manifest("""
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  restartPolicy: Never
  securityContext: {runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000}
  volumes: [{name: sec-ctx-vol, emptyDir: {}}]
  containers:
  - name: c
    image: IMAGE
    command: [sh, -c, 'echo hello > /data/demo/testfile && [ "$(stat -c %u /data/demo/testfile)" = 1000 ]']
    volumeMounts: [{name: sec-ctx-vol, mountPath: /data/demo}]
""")
    await create_and_bind(client, pod, node.config.node_name)
    done = await wait_pod(client, "writer", phase_is("Failed", "Succeeded"), timeout=90)
    assert exit_code(done, "c") == 0 and done.status.phase == "Succeeded", done.status


async def test_downward_api_volume_follows_the_labels(node: AgentRunner, client: Client) -> None:
    # The Kubernetes docs' dapi-volume.yaml, with the local image and a shell that only sleeps.
    text = (ROOT / "tests" / "fixtures" / "k8s-docs" / "pods" / "dapi-volume.yaml").read_text()
    (doc,) = load_text(text, "dapi-volume.yaml")
    pod = doc.obj
    c = pod.spec.containers[0]
    c.image, c.image_pull_policy = BUSYBOX, "IfNotPresent"
    del c.command[:], c.args[:]
    c.command.extend(["sleep", "600"])
    pod.spec.termination_grace_period_seconds = 2
    name = pod.metadata.name
    await create_and_bind(client, pod, node.config.node_name)
    await wait_pod(client, name, phase_is("Running"), timeout=90)
    key = meta_pb2.ObjectKey(name=name)

    async def cat(path: str) -> str:
        out = await client.pods.Exec(pod_pb2.ExecRequest(pod=key, command=["cat", path]))
        return out.stdout.decode()

    assert (await cat("/etc/podinfo/labels")).splitlines() == [
        'cluster="test-cluster1"', 'rack="rack-22"', 'zone="us-est-coast"']
    assert 'builder="john-doe"' in (await cat("/etc/podinfo/annotations")).splitlines()

    live = await client.pods.Get(key)
    live.metadata.labels["rack"] = "rack-23"
    await client.pods.Update(live)
    deadline = asyncio.get_running_loop().time() + 60
    while 'rack="rack-23"' not in (await cat("/etc/podinfo/labels")).splitlines():
        assert asyncio.get_running_loop().time() < deadline, await cat("/etc/podinfo/labels")
        await asyncio.sleep(0.5)


async def test_share_process_namespace(node: AgentRunner, client: Client) -> None:
    pod = manifest("""
apiVersion: v1
kind: Pod
metadata: {name: shared-pids}
spec:
  shareProcessNamespace: true
  restartPolicy: Never
  containers:
  - {name: app, image: IMAGE, command: [sleep, "600"]}
  - name: look
    image: IMAGE
    command: [sh, -c, 'for i in $(seq 60); do ps | grep -q "[s]leep 600" && exit 0; sleep 1; done; exit 1']
""")
    await create_and_bind(client, pod, node.config.node_name)
    done = await wait_pod(client, "shared-pids", lambda p: exit_code(p, "look") is not None, timeout=120)
    assert exit_code(done, "look") == 0, done.status
    alone = manifest("""
apiVersion: v1
kind: Pod
metadata: {name: own-pids}
spec:
  restartPolicy: Never
  containers:
  - {name: app, image: IMAGE, command: [sleep, "600"]}
  - name: look
    image: IMAGE
    command: [sh, -c, 'sleep 2; ps | grep -q "[s]leep 600" && exit 1; exit 0']
""")
    await create_and_bind(client, alone, node.config.node_name)
    done = await wait_pod(client, "own-pids", lambda p: exit_code(p, "look") is not None, timeout=120)
    assert exit_code(done, "look") == 0, done.status


async def test_host_aliases_reach_etc_hosts(node: AgentRunner, client: Client) -> None:
    # The Kubernetes docs' hostaliases-pod.yaml, with the local image.
    text = (ROOT / "tests" / "fixtures" / "k8s-docs" / "pods" / "hostaliases-pod.yaml").read_text()
    pod = manifest(text.replace("busybox:1.28", "IMAGE"))
    pod.spec.containers[0].image_pull_policy = "IfNotPresent"
    del pod.spec.containers[0].command[:], pod.spec.containers[0].args[:]
    check = 'grep -q "^127.0.0.1\tfoo.local\tbar.local$" /etc/hosts && grep -q localhost /etc/hosts'
    pod.spec.containers[0].command.extend(["sh", "-c", check])
    await create_and_bind(client, pod, node.config.node_name)
    done = await wait_pod(client, "hostaliases-pod", phase_is("Failed", "Succeeded"), timeout=90)
    assert done.status.phase == "Succeeded", done.status
