"""Admission: the agent's last word on whether a bound pod fits this node.

The scheduler should never bind a pod that does not fit, but it works from a
cache and may be wrong (or a user may bind by hand). Like kubelet, the agent
checks requests against allocatable minus what admitted pods already hold,
and rejects with `OutOfcpu` / `OutOfmemory` / `OutOfephemeral-storage` /
`OutOfpods`; the pod becomes Failed with that reason and never starts. A node
that measured no disk (allocatable ephemeral-storage 0) does not check it, as
the scheduler and the controller's bind check do not.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.hostpath import HostPathPrefix, not_allowed
from cowpod.api.resources import Resources, pod_requests
from cowpod.v1 import pod_pb2


class Admission:
    def __init__(self, allocatable: Resources, *, host_path_prefixes: Sequence[HostPathPrefix] = ()) -> None:
        self.allocatable = allocatable
        self.host_path_prefixes = tuple(host_path_prefixes)
        self._held: dict[str, Resources] = {}

    def used(self) -> tuple[int, int, int]:
        cpu = sum(v.cpu_millis for v in self._held.values())
        mem = sum(v.memory_bytes for v in self._held.values())
        return cpu, mem, len(self._held)

    def used_disk(self) -> int:
        return sum(v.ephemeral_storage_bytes for v in self._held.values())

    def holds(self, uid: str) -> bool:
        return uid in self._held

    def admit(self, pod: pod_pb2.Pod, *, force: bool = False) -> tuple[str, str] | None:
        """None when admitted; else (reason, message)."""
        uid = pod.metadata.uid
        if uid in self._held:
            return None
        want = pod_requests(pod.spec)
        cpu, mem, disk = want.cpu_millis, want.memory_bytes, want.ephemeral_storage_bytes
        if force:
            self._held[uid] = want
            return None
        for v in pod.spec.volumes:
            if v.HasField("host_path"):
                path = v.host_path.path
                why = not_allowed(path, self.host_path_prefixes)
                if why is not None:
                    return "HostPathNotAllowed", f"Pod volume {v.name!r}: hostPath {path!r}: {why}"
        used_cpu, used_mem, used_pods = self.used()
        a = self.allocatable
        if used_pods + 1 > a.pods:
            return (
                "OutOfpods",
                f"Node didn't have enough resource: pods, used: {used_pods}, capacity: {a.pods}",
            )
        if cpu and used_cpu + cpu > a.cpu_millis:
            return (
                "OutOfcpu",
                f"Node didn't have enough resource: cpu, requested: {cpu}m, used: {used_cpu}m, "
                f"capacity: {a.cpu_millis}m",
            )
        if mem and used_mem + mem > a.memory_bytes:
            return (
                "OutOfmemory",
                f"Node didn't have enough resource: memory, requested: {mem}, used: {used_mem}, "
                f"capacity: {a.memory_bytes}",
            )
        used_disk = self.used_disk()
        if disk and a.ephemeral_storage_bytes and used_disk + disk > a.ephemeral_storage_bytes:
            return (
                "OutOfephemeral-storage",
                f"Node didn't have enough resource: ephemeral-storage, requested: {disk}, used: {used_disk}, "
                f"capacity: {a.ephemeral_storage_bytes}",
            )
        self._held[uid] = want
        return None

    def release(self, uid: str) -> None:
        self._held.pop(uid, None)
