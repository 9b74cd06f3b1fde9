"""What this node can offer: the VM container's cgroup v1 limits when the
agent runs inside one, otherwise the host's CPUs and memory; and the size of
the disk that holds the container engine's data (ephemeral-storage).

Inside a Docker container with cgroup v1 the container's own cgroup is
mounted at /sys/fs/cgroup/<controller>, so the files read here are the VM's
limits. On a host they hold "unlimited" sentinels and we fall back to
os.cpu_count() and /proc/meminfo. Pods are nested in the VM's cgroup, so the
kernel enforces what we advertise here.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from dataclasses import replace

from cowpod.api.resources import Resources

# cgroup v1 prints "no limit" as a huge page-aligned number; anything at or
# above this is unlimited.
_UNLIMITED = 2**62


def disk_bytes(paths: Sequence[str]) -> int:
    """Size of the filesystem holding the first of `paths` that exists here; 0 if none.

    Pods' writable layers, logs and disk emptyDirs all live in the engine's data
    root, so that disk is what `ephemeral-storage` requests share. An agent in a
    VM container does not see the host's data root, but its own "/" is an
    overlay whose upper layer lives there, so statfs("/") measures that disk."""
    for p in paths:
        if not p:
            continue
        try:
            st = os.statvfs(p)
        except OSError:
            continue
        return st.f_blocks * st.f_frsize
    return 0


def _read_int(path: pathlib.Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def host_memory_bytes(proc_root: pathlib.Path) -> int:
    try:
        for line in (proc_root / "meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def detect_capacity(cgroup_root: str, proc_root: str, max_pods: int) -> Resources:
    cg = pathlib.Path(cgroup_root)
    host_mem = host_memory_bytes(pathlib.Path(proc_root))
    mem = host_mem
    limit = _read_int(cg / "memory" / "memory.limit_in_bytes")
    if limit is not None and 0 < limit < _UNLIMITED and (host_mem == 0 or limit < host_mem):
        mem = limit

    cpus = (os.cpu_count() or 1) * 1000
    quota = _read_int(cg / "cpu" / "cpu.cfs_quota_us")
    if quota is None:
        quota = _read_int(cg / "cpu,cpuacct" / "cpu.cfs_quota_us")
    period = _read_int(cg / "cpu" / "cpu.cfs_period_us") or _read_int(
        cg / "cpu,cpuacct" / "cpu.cfs_period_us"
    )
    if quota is not None and quota > 0 and period:
        cpus = min(cpus, quota * 1000 // period)
    return Resources(cpu_millis=cpus, memory_bytes=mem, pods=max_pods)


def with_disk(capacity: Resources, disk: int) -> Resources:
    return replace(capacity, ephemeral_storage_bytes=disk)


def allocatable(
    capacity: Resources, reserve_cpu_millis: int, reserve_memory_bytes: int, reserve_disk_bytes: int = 0
) -> Resources:
    """Capacity minus what the agent keeps back for the VM itself (its processes, images)."""
    disk = capacity.ephemeral_storage_bytes
    return Resources(
        cpu_millis=max(0, capacity.cpu_millis - reserve_cpu_millis),
        memory_bytes=max(0, capacity.memory_bytes - reserve_memory_bytes),
        pods=capacity.pods,
        # A disk not measured (0) stays 0 = "not reported", not "full".
        ephemeral_storage_bytes=max(1, disk - reserve_disk_bytes) if disk else 0,
    )
