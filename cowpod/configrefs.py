"""Which ConfigMaps and Secrets a pod references, and whether a reference may be missing.

One reading of a pod spec shared by the agent (what to fetch before starting the
pod's containers) and the controller's node authorization (an agent may read a
ConfigMap or Secret only while a pod bound to its node references it, as
Kubernetes' node authorizer allows).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from cowpod.v1 import pod_pb2


class RefKind(enum.StrEnum):
    CONFIGMAP = "ConfigMap"
    SECRET = "Secret"


@dataclass(frozen=True)
class Ref:
    kind: RefKind
    name: str
    optional: bool


def _containers(spec: pod_pb2.PodSpec) -> Iterator[pod_pb2.Container]:
    yield from spec.init_containers
    yield from spec.containers


def refs_of(spec: pod_pb2.PodSpec) -> Iterator[Ref]:
    """Every reference in the spec (env, envFrom, volumes), in spec order, repeats included."""
    for c in _containers(spec):
        for e in c.env:
            vf = e.value_from
            if vf.HasField("config_map_key_ref"):
                yield Ref(RefKind.CONFIGMAP, vf.config_map_key_ref.name, vf.config_map_key_ref.optional)
            if vf.HasField("secret_key_ref"):
                yield Ref(RefKind.SECRET, vf.secret_key_ref.name, vf.secret_key_ref.optional)
        for ef in c.env_from:
            if ef.HasField("config_map_ref"):
                yield Ref(RefKind.CONFIGMAP, ef.config_map_ref.name, ef.config_map_ref.optional)
            if ef.HasField("secret_ref"):
                yield Ref(RefKind.SECRET, ef.secret_ref.name, ef.secret_ref.optional)
    for v in spec.volumes:
        if v.HasField("config_map"):
            yield Ref(RefKind.CONFIGMAP, v.config_map.name, v.config_map.optional)
        if v.HasField("secret"):
            yield Ref(RefKind.SECRET, v.secret.secret_name, v.secret.optional)


def names_of(spec: pod_pb2.PodSpec, kind: RefKind) -> frozenset[str]:
    return frozenset(r.name for r in refs_of(spec) if r.kind is kind)


def references(pod: pod_pb2.Pod, kind: RefKind, name: str) -> bool:
    return any(r.kind is kind and r.name == name for r in refs_of(pod.spec))
