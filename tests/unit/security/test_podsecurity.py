"""Host paths no pod may mount, on any node."""

from __future__ import annotations

import pytest

from cowpod.auth.podsecurity import host_path_violation, pod_violations
from cowpod.images import internal_image_violation, internal_labels_violation
from cowpod.v1 import pod_pb2


@pytest.mark.parametrize(
    "path",
    ["/var/run/docker.sock", "/var/run/../run/docker.sock", "//var/run/docker.sock", "/", "/var", "/run",
     "/run/cowpod/controller.sock", "/proc/1/root", "/sys/fs/cgroup", "/var/lib/docker/overlay2", "relative",
     # #15 hole 4: what string checks let through
     "/home/u/.cowpod/pki", "/root/.ssh", "/home/u/.ssh/id_ed25519", "/srv/./data", "/srv/a/../b", "/srv//b"],
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


@pytest.mark.parametrize(
    "image",
    ["cowpod/vm:latest", "cowpod/vm", "cowpod/vm-snap:par-1", "docker.io/cowpod/vm-own:kid",
     "docker.io/library/cowpod/vm-base:bookworm", "COWPOD/VM:latest", "cowpod/vm@sha256:" + "a" * 64,
     "sha256:" + "b" * 64, "c" * 64],
)
def test_internal_images_are_refused(image: str) -> None:
    assert internal_image_violation(image) is not None


@pytest.mark.parametrize("image", ["cowpod/busybox:latest", "cowpod/pause:latest", "nginx:1.25",
                                   "registry.local:5000/cowpod/vm:latest", "cowpod/vmx"])
def test_other_images_are_allowed(image: str) -> None:
    assert internal_image_violation(image) is None


def test_internal_labels() -> None:
    assert internal_labels_violation({"cowpod.snapshot-of": "par", "cowpod.managed": "1"}) is not None
    assert internal_labels_violation({"cowpod.managed": "1"}) is None
    assert internal_labels_violation(None) is None


def test_pod_violations_name_the_image_field() -> None:
    pod = pod_pb2.Pod()
    pod.spec.init_containers.add(name="i", image="cowpod/busybox:latest")
    pod.spec.containers.add(name="a", image="cowpod/busybox:latest")
    pod.spec.containers.add(name="b", image="cowpod/vm-snap:vm-1-1")
    assert [f for f, _ in pod_violations(pod)] == ["spec.containers[1].image"]
