"""Checks that a decoded object makes sense, before anything is sent.

Decoding already rejects unknown fields and wrong types; these are the rules
across fields that a user gets wrong most (a pod without containers, two
containers with one name, a mount of a volume that is not declared, a name
that is not a DNS label). The controller checks again: this is for a fast,
precise answer, not for safety.
"""

from __future__ import annotations

from typing import Any

from cowpod.api import validation as rules
from cowpod.manifest.errors import FieldError
from cowpod.manifest.kinds import KindInfo
from cowpod.v1 import meta_pb2, pod_pb2, vm_pb2


def check_dns_subdomain(value: str, path: str) -> None:
    if not rules.is_dns_subdomain(value):
        raise FieldError(
            path,
            f'invalid name "{value}": use lowercase letters, digits, "-" and ".", '
            "starting and ending with a letter or digit",
        )


def check_dns_label(value: str, path: str) -> None:
    if not rules.is_dns_label(value):
        raise FieldError(
            path,
            f'invalid name "{value}": use at most 63 lowercase letters, digits and "-", '
            "starting and ending with a letter or digit",
        )


def _check_key(key: str, path: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if slash:
        check_dns_subdomain(prefix, path)
    if not rules.is_label_name(name):
        raise FieldError(path, f'invalid key "{key}": a name of at most 63 letters, digits, "-", "_" and "."')


def validate_meta(meta: meta_pb2.ObjectMeta, info: KindInfo, path: str = "metadata") -> None:
    if meta.name:
        check_dns_subdomain(meta.name, f"{path}.name")
    elif not meta.generate_name:
        raise FieldError(f"{path}.name", "required")
    if meta.namespace:
        if not info.namespaced:
            raise FieldError(f"{path}.namespace", f"must be empty: {info.kind} is not namespaced")
        check_dns_label(meta.namespace, f"{path}.namespace")
    for key, value in meta.labels.items():
        _check_key(key, f"{path}.labels[{key}]")
        if not rules.is_label_value(value):
            raise FieldError(
                f"{path}.labels[{key}]",
                f'invalid value "{value}": at most 63 letters, digits, "-", "_" and ".", '
                "starting and ending with a letter or digit",
            )
    for key in meta.annotations:
        _check_key(key, f"{path}.annotations[{key}]")


def _validate_containers(containers: list[pod_pb2.Container], path: str, volumes: set[str]) -> set[str]:
    names: set[str] = set()
    for i, c in enumerate(containers):
        cpath = f"{path}[{i}]"
        if not c.name:
            raise FieldError(f"{cpath}.name", "required")
        check_dns_label(c.name, f"{cpath}.name")
        if c.name in names:
            raise FieldError(f"{cpath}.name", f'duplicate container name "{c.name}"')
        names.add(c.name)
        if not c.image:
            raise FieldError(f"{cpath}.image", "required")
        for j, env in enumerate(c.env):
            if not env.name:
                raise FieldError(f"{cpath}.env[{j}].name", "required")
        for j, mount in enumerate(c.volume_mounts):
            mpath = f"{cpath}.volumeMounts[{j}]"
            if not mount.name:
                raise FieldError(f"{mpath}.name", "required")
            if mount.name not in volumes:
                raise FieldError(f"{mpath}.name", f'no volume named "{mount.name}" in spec.volumes')
            if not mount.mount_path.startswith("/"):
                raise FieldError(f"{mpath}.mountPath", "must be an absolute path")
        requests, limits = c.resources.requests, c.resources.limits
        for res, req, lim in (
            ("cpu", requests.cpu_millis, limits.cpu_millis),
            ("memory", requests.memory_bytes, limits.memory_bytes),
        ):
            if lim and req > lim:
                raise FieldError(f"{cpath}.resources.requests.{res}", f"must be at most the limit ({res})")
    return names


def validate_pod(pod: pod_pb2.Pod) -> None:
    spec = pod.spec
    volumes: set[str] = set()
    for i, vol in enumerate(spec.volumes):
        vpath = f"spec.volumes[{i}]"
        if not vol.name:
            raise FieldError(f"{vpath}.name", "required")
        check_dns_label(vol.name, f"{vpath}.name")
        if vol.name in volumes:
            raise FieldError(f"{vpath}.name", f'duplicate volume name "{vol.name}"')
        sources = [s for s in rules.VOLUME_SOURCES if vol.HasField(s)]
        if len(sources) != 1:
            raise FieldError(vpath, "set exactly one volume source "
                                    "(emptyDir, hostPath, configMap, secret or downwardAPI)")
        volumes.add(vol.name)
    if not spec.containers:
        raise FieldError("spec.containers", "required: a pod needs at least one container")
    names = _validate_containers(list(spec.containers), "spec.containers", volumes)
    _validate_containers(list(spec.init_containers), "spec.initContainers", volumes)
    for i, c in enumerate(spec.init_containers):
        if c.name in names:
            raise FieldError(f"spec.initContainers[{i}].name", f'"{c.name}" is also an app container name')


def validate_vm(vm: vm_pb2.VM) -> None:
    if vm.spec.parent:
        return  # a clone inherits its parent's size
    if vm.spec.cpu_millis <= 0:
        raise FieldError("spec.cpu", "required: how many CPUs the VM has (e.g. 1, 500m)")
    if vm.spec.memory_bytes <= 0:
        raise FieldError("spec.memory", "required: how much memory the VM has (e.g. 1Gi)")


def validate_object(info: KindInfo, msg: Any) -> None:
    """Raise FieldError for the first problem found in a decoded object."""
    validate_meta(msg.metadata, info)
    if isinstance(msg, pod_pb2.Pod):
        validate_pod(msg)
    elif isinstance(msg, vm_pb2.VM):
        validate_vm(msg)
