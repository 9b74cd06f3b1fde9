"""The qemu provider against real QEMU processes (TCG) running the tiny busybox guest.

The tiny guest (hypervisor/providers/qemu/tinyguest.py) speaks the real guest
channel protocol and answers on the agent's forwarded port with the node name
it was given, so these tests see the whole mechanism — cold boot, snapshot,
restore, instant clones with their own identity, NAT and disk overlay — in
seconds, without the Debian guest image.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import shutil
import signal
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from cowpod.errors import AlreadyExists, FailedPrecondition, NotFound
from hypervisor.provider import CloneKind, VMInfo, VMSpecInfo, VMState
from hypervisor.providers.qemu.machine import read_pid
from hypervisor.providers.qemu.provider import QemuProvider
from hypervisor.providers.qemu.qmp import wait_exit
from hypervisor.providers.qemu.store import read_record
from hypervisor.providers.qemu.testing import QemuTestEnv, bootstrap, tiny_image

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def image() -> pathlib.Path:
    for binary, package in (("qemu-system-x86_64", "qemu-system-x86"), ("qemu-img", "qemu-utils"),
                            ("busybox", "busybox-static"), ("cpio", "cpio")):
        if shutil.which(binary) is None:
            msg = f"{binary} not found: apt-get install {package}"
            pytest.fail(msg) if os.environ.get("CI") else pytest.skip(msg)
    return tiny_image()


@pytest.fixture
def env(image: pathlib.Path) -> Iterator[QemuTestEnv]:
    e = QemuTestEnv.create(image)
    yield e
    e.cleanup()


@pytest.fixture
async def provider(env: QemuTestEnv) -> AsyncIterator[QemuProvider]:
    p = env.provider()
    yield p
    await p.close()


def vm(name: str, *, template: bool = False) -> VMSpecInfo:
    return VMSpecInfo(name=name, class_name="small", cpu_millis=1000, memory_bytes=256 << 20,
                      template=template)


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def full(p: QemuProvider, spec: VMSpecInfo) -> VMInfo:
    return await p.full_clone(spec, bootstrap(p, spec))


async def clone(p: QemuProvider, parent: str, spec: VMSpecInfo) -> VMInfo:
    return await p.instant_clone(parent, spec, bootstrap(p, spec))


async def agent_answer(info: VMInfo) -> str:
    """What the guest behind the VM's forwarded agent port says: its node name."""
    host, port = info.ip.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        return (await reader.readline()).decode().strip()
    finally:
        writer.close()


async def test_template_parent_and_two_instant_clones_have_their_own_identities(
        env: QemuTestEnv, provider: QemuProvider) -> None:
    parent = await full(provider, vm(uniq("tpl"), template=True))
    assert parent.state == VMState.RUNNING and parent.clone_kind == CloneKind.FULL
    # Quiesced while warm: the parent now runs as a restore of its own snapshot.
    rec = read_record(provider.vm_dir(parent.name))
    assert rec is not None and rec.snapshot and not rec.ram_shared
    kids = [await clone(provider, parent.name, vm(uniq("kid"))) for _ in range(2)]
    for kid in kids:
        assert kid.state == VMState.RUNNING and kid.parent == parent.name and not kid.snapped_free
        assert kid.clone_kind == CloneKind.INSTANT
        assert await agent_answer(kid) == kid.name
    assert await agent_answer(await provider.get(parent.name)) == parent.name
    ids = {v.machine_id for v in [parent, *kids]}
    ports = {v.ip for v in [parent, *kids]}
    assert len(ids) == len(ports) == 3
    guests = [read_record(provider.vm_dir(k.name)) for k in kids]
    assert [g.guest["node"] for g in guests if g] == [k.name for k in kids]
    assert sorted((await provider.get(parent.name)).children) == sorted(k.name for k in kids)
    # Every clone maps the one frozen RAM file privately.
    snap_ram = [f for f in env.ram_files() if f.name.startswith(f"cowpod.{env.cluster_id}.{parent.name}.")]
    assert len(snap_ram) == 1
    for kid in kids:
        maps = await asyncio.to_thread(pathlib.Path(f"/proc/{provider.pid(kid.name)}/maps").read_text)
        assert str(snap_ram[0]) in maps

    await provider.destroy(parent.name, cascade=True)
    assert await provider.list() == []
    assert env.processes() == [] and env.ram_files() == []
    assert list(provider.root.iterdir()) == []


async def test_errors_match_the_contract(provider: QemuProvider) -> None:
    parent = await full(provider, vm(uniq("par")))
    with pytest.raises(AlreadyExists):
        await full(provider, vm(parent.name))
    with pytest.raises(NotFound):
        await clone(provider, uniq("ghost"), vm(uniq("kid")))
    with pytest.raises(NotFound):
        await provider.get(uniq("nope"))
    with pytest.raises(FailedPrecondition, match="not enough memory"):
        await full(provider, VMSpecInfo(name=uniq("huge"), class_name="x", cpu_millis=1000,
                                        memory_bytes=1 << 50))
    await provider.destroy(uniq("never"))  # idempotent


async def test_a_full_clone_parent_is_quiesced_on_first_clone_and_children_snap_free(
        env: QemuTestEnv, provider: QemuProvider) -> None:
    parent = await full(provider, vm(uniq("par")))
    kid = await clone(provider, parent.name, vm(uniq("kid")))
    # The parent took the child's identity request without losing its own.
    assert await agent_answer(kid) == kid.name
    assert await agent_answer(await provider.get(parent.name)) == parent.name
    with pytest.raises(FailedPrecondition, match="not snapped free"):
        await provider.destroy(parent.name)
    assert (await provider.snap_free(kid.name)).snapped_free
    assert (await provider.snap_free(kid.name)).snapped_free
    rec = read_record(provider.vm_dir(kid.name))
    assert rec is not None
    info = await asyncio.create_subprocess_exec("qemu-img", "info", "--force-share", rec.disk,
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await info.communicate()
    assert b"backing file" not in out
    await provider.destroy(parent.name)
    survivor = await provider.get(kid.name)
    assert survivor.state == VMState.RUNNING and survivor.parent == parent.name
    # Still alive on the unlinked snapshot's pages.
    assert await agent_answer(survivor) == kid.name


async def test_pause_resume_power_off_and_a_grandchild(env: QemuTestEnv, provider: QemuProvider) -> None:
    parent = await full(provider, vm(uniq("pz"), template=True))
    assert (await provider.pause(parent.name)).state == VMState.PAUSED
    kid = await clone(provider, parent.name, vm(uniq("kid")))
    assert kid.state == VMState.RUNNING
    assert (await provider.get(parent.name)).state == VMState.PAUSED
    assert (await provider.resume(parent.name)).state == VMState.RUNNING
    # A clone of a clone: its snapshot carries RAM in the state file.
    grandkid = await clone(provider, kid.name, vm(uniq("gkid")))
    assert await agent_answer(grandkid) == grandkid.name
    assert await agent_answer(await provider.get(kid.name)) == kid.name
    off = await provider.power_off(kid.name)
    assert off.state == VMState.STOPPED, off.message
    assert (await provider.power_off(kid.name)).state == VMState.STOPPED
    with pytest.raises(FailedPrecondition):
        await clone(provider, kid.name, vm(uniq("kid")))
    with pytest.raises(FailedPrecondition):
        await provider.pause(kid.name)
    await provider.destroy(parent.name, cascade=True)
    assert await provider.list() == []
    assert env.processes() == [] and env.ram_files() == []


async def test_a_restarted_provider_reattaches_and_sees_a_killed_vm_as_failed(env: QemuTestEnv) -> None:
    first = env.provider()
    parent = await full(first, vm(uniq("par"), template=True))
    kid = await clone(first, parent.name, vm(uniq("kid")))
    await first.close()

    second = env.provider()
    try:
        assert [v.name for v in await second.list()] == sorted([parent.name, kid.name])
        assert (await second.pause(kid.name)).state == VMState.PAUSED  # a new QMP connection
        assert (await second.resume(kid.name)).state == VMState.RUNNING
        os.kill(second.pid(kid.name), signal.SIGKILL)
        failed = await wait_state(second, kid.name, VMState.FAILED)
        assert failed.message
        assert (await second.get(parent.name)).state == VMState.RUNNING
        await second.destroy(parent.name, cascade=True)
        assert env.processes() == [] and env.ram_files() == []
    finally:
        await second.close()


async def wait_state(p: QemuProvider, name: str, state: VMState) -> VMInfo:
    """SIGKILL is asynchronous: wait for the exit on a pidfd, then ask the provider."""
    await wait_exit(read_pid(p.vm_dir(name)), timeout=10)
    info = await p.get(name)
    assert info.state == state, info
    return info


async def test_collect_garbage_removes_what_has_no_record(env: QemuTestEnv, provider: QemuProvider) -> None:
    info = await full(provider, vm(uniq("orphan")))
    keep = await full(provider, vm(uniq("keep")))
    (provider.vm_dir(info.name) / "vm.json").unlink()  # as if its record were lost mid-create
    stray = env.settings.ram_dir / f"cowpod.{env.cluster_id}.ghost.0.ram"
    stray.write_bytes(b"")
    removed = await provider.collect_garbage()
    assert any(info.name in r for r in removed) and str(stray) in removed
    assert not stray.exists() and not provider.vm_dir(info.name).exists()
    assert [v.name for v in await provider.list()] == [keep.name]
    assert (await provider.get(keep.name)).state == VMState.RUNNING
    assert len(env.processes()) == 1


async def test_auto_accel_probes_kvm_once_and_warns_once_when_it_falls_back(
        image: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    from hypervisor.providers.qemu import accel
    from hypervisor.providers.qemu.settings import GuestImage

    kernel = GuestImage.load(image).kernel
    accel._cache.clear()
    with caplog.at_level(logging.WARNING, logger=accel.__name__):
        first = await accel.resolve("auto", "qemu-system-x86_64", kernel)
        assert await accel.resolve("auto", "qemu-system-x86_64", kernel) == first
    warnings = [r for r in caplog.records if r.name == accel.__name__]
    assert first in ("kvm", "tcg")
    # Here (nested virtualization) KVM never prints a line: TCG, said once.
    assert len(warnings) == (1 if first == "tcg" else 0)
    assert await accel.resolve("tcg", "qemu-system-x86_64", kernel) == "tcg"
