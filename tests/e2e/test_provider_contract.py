"""The provider contract: the same assertions against every registered provider.

The providers are `hypervisor.registry`'s, every one of them in every run:
`test_every_registered_provider_has_a_harness` fails when a provider is
registered without one here, so none can drop out silently. A `Harness` per
provider knows the few things the contract cannot ask through the Provider
interface: how to put a "pod container" on a VM's node and how to list them.
"""

from __future__ import annotations

import importlib
import pathlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Protocol

import pytest

from cowpod.clock import RealClock
from cowpod.errors import AlreadyExists, FailedPrecondition, NotFound
from hypervisor import registry
from hypervisor.provider import CloneKind, Provider, VMSpecInfo, VMState
from hypervisor.providers.fake import FakeProvider
from hypervisor.testing import DockerTestEnv, full_clone, instant_clone

pytestmark = pytest.mark.e2e


class Harness(Protocol):
    provider: Provider
    # False for providers whose pods are not containers (the sim's hollow pods).
    has_pod_containers: bool

    async def add_pod_container(self, vm: str) -> None: ...

    async def pod_containers(self, vm: str) -> list[str]: ...

    async def close(self) -> None: ...


class FakeHarness:
    has_pod_containers = True

    def __init__(self) -> None:
        self.fake = FakeProvider()
        self.provider: Provider = self.fake

    async def add_pod_container(self, vm: str) -> None:
        self.fake.add_nested(vm, f"pod-{uuid.uuid4().hex[:6]}")

    async def pod_containers(self, vm: str) -> list[str]:
        return await self.fake.nested_containers(vm)

    async def close(self) -> None:
        return None


class DockerHarness:
    has_pod_containers = True

    def __init__(self, env: DockerTestEnv) -> None:
        self.env = env
        self.docker = env.provider()
        self.provider: Provider = self.docker

    async def add_pod_container(self, vm: str) -> None:
        import asyncio

        pod = f"pod-{self.env.cluster_id}-{vm}"
        await asyncio.to_thread(self.env.run_nested, self.env.vm_container(vm), vm, pod)

    async def pod_containers(self, vm: str) -> list[str]:
        return await self.docker.nested_containers(vm)

    async def close(self) -> None:
        await self.docker.close()
        self.env.cleanup(network=False)


class SimHarness:
    def __init__(self) -> None:
        sim = importlib.import_module("hypervisor.providers.sim")
        self._dir = pathlib.Path(tempfile.mkdtemp(prefix="cp-sim-"))
        self.provider: Provider = sim.make_provider(
            data_dir=self._dir, cluster_id="t" + uuid.uuid4().hex[:8], clock=RealClock())
        self._nested = getattr(self.provider, "add_nested", None)
        self.has_pod_containers = self._nested is not None

    async def add_pod_container(self, vm: str) -> None:
        if self._nested is not None:
            self._nested(vm, f"pod-{uuid.uuid4().hex[:6]}")

    async def pod_containers(self, vm: str) -> list[str]:
        fn = getattr(self.provider, "nested_containers", None)
        return list(await fn(vm)) if fn is not None else []

    async def close(self) -> None:
        await self.provider.close()


# Every provider of the registry, and the harness that drives it here.
HARNESSES = ("fake", "docker", "sim", "qemu", "vsphere")
PROVIDERS = list(registry.names())


def test_every_registered_provider_has_a_harness() -> None:
    assert sorted(HARNESSES) == sorted(PROVIDERS)


@pytest.fixture(scope="session")
def docker_network(vm_images: None) -> Iterator[DockerTestEnv]:
    """Images built (cached) and one test network for the session."""
    env = DockerTestEnv.create()
    yield env
    env.cleanup()


@pytest.fixture(params=PROVIDERS)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    h: Harness
    if request.param == "fake":
        h = FakeHarness()
    elif request.param == "docker":
        net: DockerTestEnv = request.getfixturevalue("docker_network")
        h = DockerHarness(DockerTestEnv.create(network=net.network))
    elif request.param == "sim":
        h = SimHarness()
    elif request.param == "qemu":
        from hypervisor.providers.qemu.testing import QemuHarness

        h = QemuHarness()  # a tiny guest: a real kernel, no pods
    elif request.param == "vsphere":
        from hypervisor.providers.vsphere.testing import ContractHarness

        h = ContractHarness()  # its own vcsim, guests are cowpod/vm containers
    else:
        raise AssertionError(f"no harness for provider {request.param!r}")
    try:
        yield h
    finally:
        await h.close()


def vm(name: str) -> VMSpecInfo:
    return VMSpecInfo(name=name, class_name="small", cpu_millis=500, memory_bytes=256 << 20)


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def test_full_clone_is_running_with_an_identity(harness: Harness) -> None:
    p = harness.provider
    name = uniq("full")
    info = await full_clone(p, vm(name))
    assert info.name == name and info.node_name == name and info.hostname == name
    assert info.state == VMState.RUNNING
    assert info.clone_kind == CloneKind.FULL and info.snapped_free and not info.parent
    assert info.ip and info.provider_id and len(info.machine_id) >= 16
    assert (info.cpu_millis, info.memory_bytes, info.class_name) == (500, 256 << 20, "small")
    assert info.created_at > 0
    assert [v for v in await p.list() if v.name == name] == [await p.get(name)]
    with pytest.raises(AlreadyExists):
        await full_clone(p, vm(name))
    with pytest.raises(NotFound):
        await p.get(uniq("nope"))


async def test_instant_clone_has_a_new_identity_and_lineage(harness: Harness) -> None:
    p = harness.provider
    parent = await full_clone(p, vm(uniq("par")))
    child = await instant_clone(p, parent.name, vm(uniq("kid")))
    assert child.state == VMState.RUNNING
    assert child.clone_kind == CloneKind.INSTANT and child.parent == parent.name
    assert not child.snapped_free
    for attr in ("name", "node_name", "hostname", "ip", "machine_id", "provider_id"):
        assert getattr(child, attr) != getattr(parent, attr), attr
    assert child.node_name == child.name
    assert child.name in (await p.get(parent.name)).children
    with pytest.raises(NotFound):
        await instant_clone(p, uniq("ghost"), vm(uniq("kid")))
    with pytest.raises(AlreadyExists):
        await instant_clone(p, parent.name, vm(child.name))


async def test_parent_cannot_go_before_its_children_are_snapped_free(harness: Harness) -> None:
    p = harness.provider
    parent = await full_clone(p, vm(uniq("par")))
    child = await instant_clone(p, parent.name, vm(uniq("kid")))
    with pytest.raises(FailedPrecondition):
        await p.destroy(parent.name)
    freed = await p.snap_free(child.name)
    assert freed.snapped_free
    assert (await p.snap_free(child.name)).snapped_free  # idempotent
    await p.destroy(parent.name)
    with pytest.raises(NotFound):
        await p.get(parent.name)
    survivor = await p.get(child.name)
    assert survivor.state == VMState.RUNNING and survivor.parent == parent.name


async def test_cascade_destroys_unsnapped_children(harness: Harness) -> None:
    p = harness.provider
    parent = await full_clone(p, vm(uniq("par")))
    kid = await instant_clone(p, parent.name, vm(uniq("kid")))
    grandkid = await instant_clone(p, kid.name, vm(uniq("gkid")))
    await p.destroy(parent.name, cascade=True)
    names = {v.name for v in await p.list()}
    assert not names & {parent.name, kid.name, grandkid.name}


async def test_destroy_removes_the_vms_pod_containers(harness: Harness) -> None:
    p = harness.provider
    info = await full_clone(p, vm(uniq("pods")))
    if harness.has_pod_containers:
        await harness.add_pod_container(info.name)
        assert len(await harness.pod_containers(info.name)) == 1
    await p.destroy(info.name)
    assert await harness.pod_containers(info.name) == []
    assert info.name not in {v.name for v in await p.list()}
    await p.destroy(info.name)  # idempotent


async def test_pause_resume_and_power_off(harness: Harness) -> None:
    p = harness.provider
    info = await full_clone(p, vm(uniq("pz")))
    assert (await p.pause(info.name)).state == VMState.PAUSED
    # A paused parent can still be cloned (its disk is frozen anyway).
    kid = await instant_clone(p, info.name, vm(uniq("kid")))
    assert kid.state == VMState.RUNNING
    assert (await p.resume(info.name)).state == VMState.RUNNING
    off = await p.power_off(kid.name)
    assert off.state == VMState.STOPPED, off.message
    with pytest.raises(FailedPrecondition):
        await instant_clone(p, kid.name, vm(uniq("kid")))
    with pytest.raises(FailedPrecondition):
        await p.pause(kid.name)
