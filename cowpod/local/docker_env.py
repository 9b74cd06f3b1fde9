"""The local Docker engine, as `cowpod up` and `down` need it: is it there, is the
VM image built, and (the safety net of `down`) remove whatever containers this
cluster left behind.

Blocking Docker SDK calls: callers run these with `asyncio.to_thread`.
"""

from __future__ import annotations

import os
from typing import Any

import docker
import docker.errors

from cowpod.images import VM_IMAGE

CLUSTER_LABEL = "cowpod.cluster"
MANAGED_LABEL = "cowpod.managed"


class DockerProblem(Exception):
    """Docker cannot do what the cluster needs; the message says how to fix it."""


def _engine_address() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def connect(timeout: int = 10) -> Any:
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as e:
        raise DockerProblem(
            f"the Docker engine is not answering at {_engine_address()} ({type(e).__name__}); "
            "start dockerd (scripts/bootstrap.sh does), or use --provider sim"
        ) from None
    return client


def check_engine_and_image(image: str = VM_IMAGE) -> None:
    client = connect()
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise DockerProblem(f"the VM image {image} is missing: run deploy/build-images.sh") from None
    finally:
        client.close()


def cluster_vm_ids(cluster_id: str) -> set[str]:
    """Ids of the cluster's VM containers (`cowpod.cluster=<id>`), remembered by `down`
    before it destroys the VMs, so their pods can still be found afterwards."""
    client = connect()
    try:
        vms = client.containers.list(
            all=True, sparse=True, filters={"label": [f"{MANAGED_LABEL}=1", f"{CLUSTER_LABEL}={cluster_id}"]}
        )
        return {str(c.id) for c in vms}
    finally:
        client.close()


def remove_cluster_containers(
    cluster_id: str, known_vm_ids: set[str] | frozenset[str] = frozenset()
) -> list[str]:
    """Remove the cluster's VM containers and the pod containers nested in them.

    VM containers carry `cowpod.cluster=<id>`; pod containers carry only
    `cowpod.managed=1` but live in a VM's cgroup (`--cgroup-parent`) or
    network (`--network container:<vm>`), which is how they are found, also
    after their VM is gone (`known_vm_ids`: the VMs seen before they were
    destroyed). Nothing else is touched. Returns the names removed.
    """
    client = connect()
    removed: list[str] = []
    try:
        # ignore_removed: another cluster's (or test session's) container may go between the
        # listing and its inspect; that is no reason to fail `cowpod down`.
        vms = client.containers.list(
            all=True, filters={"label": [f"{MANAGED_LABEL}=1", f"{CLUSTER_LABEL}={cluster_id}"]},
            ignore_removed=True,
        )
        vm_ids = {c.id for c in vms} | set(known_vm_ids)
        if not vm_ids:
            return removed
        nested = []
        managed = client.containers.list(all=True, filters={"label": [f"{MANAGED_LABEL}=1"]},
                                         ignore_removed=True)
        for c in managed:
            if c.id in vm_ids or c.labels.get(CLUSTER_LABEL):
                continue  # a VM: ours are removed below, other clusters' are not ours to touch
            host = c.attrs.get("HostConfig", {}) or {}
            if nested_in(str(host.get("NetworkMode", "")), str(host.get("CgroupParent", "")), vm_ids):
                nested.append(c)
        for c in [*nested, *vms]:  # pods first: they live inside their VM
            try:
                c.remove(force=True, v=True)
                removed.append(c.name)
            except docker.errors.NotFound:
                pass
    finally:
        client.close()
    return removed


def nested_in(network_mode: str, cgroup_parent: str, vm_ids: set[str]) -> bool:
    """Does a container with this network mode and cgroup parent run inside one of the VMs?"""
    return any(
        network_mode == f"container:{vid}" or (cgroup_parent and vid in cgroup_parent) for vid in vm_ids
    )
