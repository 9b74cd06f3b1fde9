"""Hole 5 of #15 at the VM level, on the real engine: pods nest in their VM's cgroup,
so the VM's PID limit bounds all of them together — many containers, each under its
own limit, still cannot take the host's pid space (32768 on many hosts)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import docker
import pytest

from hypervisor.provider import VMSpecInfo
from hypervisor.providers.docker.provider import DockerProvider
from hypervisor.testing import TEST_LABELS, DockerTestEnv, full_clone

pytestmark = pytest.mark.e2e

VM_LIMIT = 120
# Each "pod" forks up to 100 sleeps (its own limit would allow that); three of them want 300.
BOMB = ("(n=0; while [ $n -lt 100 ]; do sleep 300 & n=$((n+1)); done) 2>/dev/null; "
        "echo forked; exec sleep 300")


@pytest.fixture
async def provider(env: DockerTestEnv) -> AsyncIterator[DockerProvider]:
    p = env.provider(pids_limit=VM_LIMIT)
    try:
        yield p
    finally:
        await p.close()


async def test_a_vms_pods_together_stay_within_its_pid_limit(
    env: DockerTestEnv, provider: DockerProvider
) -> None:
    name = f"pids-{env.cluster_id}"
    vm_spec = VMSpecInfo(name=name, class_name="small", cpu_millis=500, memory_bytes=512 << 20)
    await full_clone(provider, vm_spec)
    client = docker.from_env()
    vm = client.containers.get(env.vm_container(name))
    assert vm.attrs["HostConfig"]["PidsLimit"] == VM_LIMIT
    bombs = []
    for i in range(3):
        try:
            bombs.append(client.containers.run(
                "cowpod/busybox:latest", ["sh", "-c", BOMB], detach=True, name=f"{name}-bomb{i}",
                cgroup_parent=f"/docker/{vm.id}", network_mode=f"container:{vm.id}", pids_limit=1024,
                labels={**TEST_LABELS, "cowpod.node": name, "cowpod.cluster": env.cluster_id},
            ))
        except docker.errors.APIError as err:
            # The VM is full: not even runc's own process fits in its cgroup any more.
            # (runc's init dies before it can say why when it cannot fork: "read init-p").
            why = str(err).lower()
            assert any(w in why for w in ("pid", "fork", "resource", "init-p")), err
    assert bombs
    for b in bombs:
        for line in b.logs(stream=True, follow=True):
            if b"forked" in line:
                break
    total = sum(len(b.top()["Processes"]) for b in bombs)
    assert total <= VM_LIMIT, total  # 300 wanted; the VM's cgroup (its init too) holds them all
