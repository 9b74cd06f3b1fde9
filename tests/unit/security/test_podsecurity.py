"""Host paths no pod may mount, on any node."""

from __future__ import annotations

import pytest

from cowpod.auth.podsecurity import host_path_violation, pod_violations
from cowpod.v1 import pod_pb2


@pytest.mark.parametrize(
    "path",
    ["/var/run/docker.sock", "/var/run/../run/docker.sock", "//var/run/docker.sock", "/", "/var", "/run",
     "/run/cowpod/controller.sock", "/proc/1/root", "/sys/fs/cgroup", "/var/lib/docker/overlay2", "relative"],
)
def test_forbidden(path: str) -> None:
    assert host_path_violation(path) is not None


@pytest.mark.parametrize("path", ["/srv/data", "/tmp/x", "/var/log/app", "/home/u/share"])
def test_allowed(path: str) -> None:
    assert host_path_violation(path) is None


def test_pod_violations_name_the_field() -> None:
    pod = pod_pb2.Pod()
    pod.spec.volumes.add(name="ok", host_path=pod_pb2.HostPathVolumeSource(path="/srv"))
    pod.spec.volumes.add(name="sock", host_path=pod_pb2.HostPathVolumeSource(path="/var/run/docker.sock"))
    pod.spec.volumes.add(name="tmp", empty_dir=pod_pb2.EmptyDirVolumeSource())
    assert [f for f, _ in pod_violations(pod)] == ["spec.volumes[1].hostPath.path"]
