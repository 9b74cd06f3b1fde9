"""Pod isolation rules that hold on every node, whatever it allows.

Shared by the controller (refuses such pods at admission, INVALID_ARGUMENT)
and the agent (refuses to start them: defence in depth for pods that were
stored before a rule existed).

- A hostPath volume needs a node whose agent allows a prefix it lies under
  (`--allow-host-path PREFIX[:rw]`, agent/hostpath.py), is a clean absolute
  path (no `.`, `..`, `//`: what is checked is what is mounted), and even
  then never reaches the container engine's socket, cowpod's own state, a
  user's cowpod or ssh keys, or the host's kernel interfaces. On the docker provider a "host" path is a
  path on the machine running Docker (bind sources are resolved by dockerd,
  not inside the VM), so these paths are the keys to the whole host.
- No container runs one of cowpod's internal images (a VM disk or snapshot;
  cowpod/images.py).
- No container is `privileged` or adds capabilities (`capabilities.add`): pods
  on one VM share its kernel, and on the docker provider the host's, so either
  would let one pod reach the others and the host (Kubernetes' "restricted" pod
  security standard refuses both too). Dropping capabilities is always allowed.
"""

from __future__ import annotations

import posixpath
from typing import Any

from cowpod.images import internal_image_violation

# A hostPath equal to, inside, or containing (e.g. "/", "/var") one of these is refused.
FORBIDDEN_HOST_PATHS = (
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/run/docker",
    "/run/docker",
    "/run/containerd",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/run/cowpod",
    "/var/lib/cowpod",
    "/etc/cowpod",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/root/.cowpod",
)
# A hostPath with one of these as a component is refused wherever it is (keys in home directories).
FORBIDDEN_COMPONENTS = (".cowpod", ".ssh", ".docker", ".kube", ".gnupg")


def host_path_violation(path: str, extra: tuple[str, ...] = ()) -> str | None:
    """Why `path` may never be a hostPath, or None."""
    if not path.startswith("/"):
        return "must be an absolute path"
    norm = posixpath.normpath(path)
    if "//" in path or (path != "/" and norm != path.rstrip("/")):
        return f"must be a clean path (no '.', '..' or '//'; {norm!r}?)"
    bad_parts = [c for c in norm.split("/") if c in FORBIDDEN_COMPONENTS]
    if bad_parts:
        return f"{bad_parts[0]} directories (credentials) are never mounted into pods"
    for bad in (*FORBIDDEN_HOST_PATHS, *extra):
        if norm == bad or norm.startswith(bad + "/"):
            return f"{bad} is never mounted into pods (container engine, cowpod state or kernel interfaces)"
        if bad.startswith(norm.rstrip("/") + "/") or norm == "/":
            return f"would expose {bad}, which is never mounted into pods"
    return None


def pod_violations(pod: Any, extra: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(field path, reason) for every hostPath volume, container image and securityContext of
    `pod` that breaks the rules. `pod` is a Pod, or a workload whose `spec.template.spec` is
    the pods' spec (a ReplicaSet, Deployment, Job or DaemonSet: refused before it makes pods)."""
    spec, where = pod.spec, "spec"
    if spec.DESCRIPTOR.full_name != "cowpod.v1.PodSpec":
        spec, where = spec.template.spec, "spec.template.spec"
    out = []
    for i, v in enumerate(spec.volumes):
        if v.HasField("host_path"):
            why = host_path_violation(v.host_path.path, extra)
            if why is not None:
                out.append((f"{where}.volumes[{i}].hostPath.path", why))
    for kind, containers in (("initContainers", spec.init_containers), ("containers", spec.containers)):
        for i, c in enumerate(containers):
            cpath = f"{where}.{kind}[{i}]"
            why = internal_image_violation(c.image)
            if why is not None:
                out.append((f"{cpath}.image", why))
            sc = c.security_context
            if sc.privileged:
                out.append((f"{cpath}.securityContext.privileged",
                            "privileged containers are refused: pods share their VM's kernel"))
            if sc.capabilities.add:
                out.append((f"{cpath}.securityContext.capabilities.add",
                            f"adding capabilities ({', '.join(sc.capabilities.add)}) is refused: "
                            "pods share their VM's kernel; only drop is allowed"))
    return out
