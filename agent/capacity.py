"""What this node can offer: the VM container's cgroup v1 limits when the
agent runs inside one, otherwise the host's CPUs and memory.

Inside a Docker container with cgroup v1 the container's own cgroup is
mounted at /sys/fs/cgroup/<controller>, so the files read here are the VM's
limits. On a host they hold "unlimited" sentinels and we fall back to
os.cpu_count() and /proc/meminfo. Pods are nested in the VM's cgroup, so the
kernel enforces what we advertise here.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass

# cgroup v1 prints "no limit" as a huge page-aligned number; anything at or
# above this is unlimited.
_UNLIMITED = 2**62


@dataclass(frozen=True)
class Resources:
    cpu_millis: int
    memory_bytes: int
    pods: int


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


def allocatable(capacity: Resources, reserve_cpu_millis: int, reserve_memory_bytes: int) -> Resources:
    return Resources(
        cpu_millis=max(0, capacity.cpu_millis - reserve_cpu_millis),
        memory_bytes=max(0, capacity.memory_bytes - reserve_memory_bytes),
        pods=capacity.pods,
    )
