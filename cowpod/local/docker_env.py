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

VM_IMAGE = "cowpod/vm:latest"
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


def remove_cluster_containers(cluster_id: str) -> list[str]:
    """Remove the cluster's VM containers and the pod containers nested in them.

    VM containers carry `cowpod.cluster=<id>`; pod containers carry only
    `cowpod.managed=1` but run in a VM's network namespace or cgroup, which is
    how they are found. Nothing else is touched. Returns the names removed.
    """
    client = connect()
    removed: list[str] = []
    try:
        vms = client.containers.list(
            all=True, filters={"label": [f"{MANAGED_LABEL}=1", f"{CLUSTER_LABEL}={cluster_id}"]}
        )
        vm_ids = {c.id for c in vms}
        if not vm_ids:
            return removed
        nested = []
        for c in client.containers.list(all=True, filters={"label": [f"{MANAGED_LABEL}=1"]}):
            if c.id in vm_ids:
                continue
            host = c.attrs.get("HostConfig", {}) or {}
            network = str(host.get("NetworkMode", ""))
            cgroup = str(host.get("CgroupParent", ""))
            if any(network == f"container:{vid}" or (cgroup and vid in cgroup) for vid in vm_ids):
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
