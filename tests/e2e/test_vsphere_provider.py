"""The vsphere provider against VMware's own simulator (deploy/vcsim).

What cowpod says is checked against what the simulator itself recorded: its
task list (an instant clone must be an InstantClone_Task on the parent), its
inventory (destroy leaves no VM), the guest containers it started (the child's
identity really arrives through guestinfo).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from cowpod.errors import AlreadyExists, FailedPrecondition, NotFound
from hypervisor.guest import GuestBootstrap
from hypervisor.provider import CloneKind, VMSpecInfo, VMState
from hypervisor.providers.vsphere.client import TaskFault, connect, vim, vmodl
from hypervisor.providers.vsphere.plugin import PLUGIN
from hypervisor.providers.vsphere.provider import K_BOOTSTRAP, PARENT_SNAPSHOT
from hypervisor.providers.vsphere.testing import Vcsim, VSphereTestEnv, free_port
from hypervisor.testing import full_clone, instant_clone

pytestmark = pytest.mark.e2e



@pytest.fixture(scope="module")
def vcsim_without_instant_clone(vm_images: None) -> Iterator[Vcsim]:
    """A simulator whose VMs lack InstantClone_Task, as vSphere before 6.7."""
    sim = Vcsim.start(instant_clone=False)
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
async def vs_env(vcsim: Vcsim) -> AsyncIterator[VSphereTestEnv]:
    env = VSphereTestEnv(vcsim)
    try:
        yield env
    finally:
        await env.cleanup()


@pytest.fixture
async def vs_env_fallback(vcsim_without_instant_clone: Vcsim) -> AsyncIterator[VSphereTestEnv]:
    env = VSphereTestEnv(vcsim_without_instant_clone)
    try:
        yield env
    finally:
        await env.cleanup()


def vm(name: str, *, template: bool = False) -> VMSpecInfo:
    return VMSpecInfo(name=name, class_name="small", cpu_millis=1000, memory_bytes=512 << 20,
                      image="cowpod-template", template=template)


@dataclass(frozen=True)
class SimVM:
    extra: dict[str, str]
    snapshots: list[str]


def inventory(sim: Vcsim) -> dict[str, SimVM]:
    """Every VM in the simulator, by name, as its own session sees it."""
    si = sim.connect()
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        try:
            # RetrievePropertiesEx, not attribute reads: vcsim's one-property
            # fetch crashes on a property that is unset (a VM's `snapshot`).
            pc = vmodl.query.PropertyCollector
            spec = pc.FilterSpec(
                objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[
                    pc.TraversalSpec(name="v", path="view", skip=False, type=vim.view.ContainerView)])],
                propSet=[pc.PropertySpec(type=vim.VirtualMachine,
                                         pathSet=["name", "config.extraConfig", "snapshot"])])
            out = {}
            for obj in content.propertyCollector.RetrieveContents([spec]):
                props = {p.name: p.val for p in obj.propSet}
                snap = props.get("snapshot")
                out[props["name"]] = SimVM(
                    extra={o.key: o.value for o in props.get("config.extraConfig") or []},
                    snapshots=[n.name for n in snap.rootSnapshotList] if snap else [])
            return out
        finally:
            view.DestroyView()
    finally:
        connect.Disconnect(si)


def tasks(sim: Vcsim) -> list[tuple[str, str, str, str]]:
    """(descriptionId, entity moref, state, result moref) of the simulator's recent tasks."""
    si = sim.connect()
    try:
        out = []
        for t in si.RetrieveContent().taskManager.recentTask:
            info = t.info
            result = getattr(info.result, "_moId", "") if info.result is not None else ""
            entity = info.entity._moId if info.entity else ""
            out.append((info.descriptionId, entity, str(info.state), result))
        return out
    finally:
        connect.Disconnect(si)


def guest_env(sim: Vcsim, vm_name: str) -> dict[str, str]:
    """The environment of the guest container the simulator runs for `vm_name`."""
    names = [n for n in sim.guest_containers() if n.startswith(f"vcsim-{vm_name}-")]
    assert len(names) == 1, names
    out = subprocess.run(["docker", "inspect", "--format", "{{json .Config.Env}}", names[0]],
                         capture_output=True, text=True, check=True)
    return dict(e.split("=", 1) for e in json.loads(out.stdout))


async def test_instant_clone_is_an_InstantClone_Task_and_carries_the_childs_identity(
        vs_env: VSphereTestEnv) -> None:
    p = vs_env.provider()
    parent = await full_clone(p, vm(f"par-{vs_env.cluster_id}", template=True))
    assert parent.state == VMState.RUNNING and parent.clone_kind == CloneKind.FULL
    child = await instant_clone(p, parent.name, vm(f"kid-{vs_env.cluster_id}"))
    assert child.state == VMState.RUNNING and child.clone_kind == CloneKind.INSTANT
    assert child.parent == parent.name and not child.snapped_free and not child.message
    assert child.name in (await p.get(parent.name)).children
    for attr in ("ip", "machine_id", "provider_id"):
        assert getattr(child, attr) != getattr(parent, attr), attr

    # The simulator's own record: an instantClone task on the parent, succeeded, made the child.
    parent_ref = parent.provider_id.removeprefix("vsphere://")
    child_ref = child.provider_id.removeprefix("vsphere://")
    assert ("VirtualMachine.instantClone", parent_ref, "success", child_ref) in tasks(vs_env.sim)
    assert p.instant_clone_supported is True

    # The child's identity went in through guestinfo and reached its guest.
    boot = GuestBootstrap.from_b64(inventory(vs_env.sim)[child.name].extra[K_BOOTSTRAP])
    assert (boot.node_name, boot.machine_id) == (child.name, child.machine_id)
    env = guest_env(vs_env.sim, child.name)
    assert GuestBootstrap.from_b64(env["VMX_GUESTINFO_COWPOD_BOOTSTRAP"]).node_name == child.name
    assert GuestBootstrap.from_b64(guest_env(vs_env.sim, parent.name)["VMX_GUESTINFO_COWPOD_BOOTSTRAP"]
                                   ).node_name == parent.name
    with pytest.raises(AlreadyExists):
        await instant_clone(p, parent.name, vm(child.name))
    with pytest.raises(NotFound):
        await instant_clone(p, f"ghost-{vs_env.cluster_id}", vm(f"kid2-{vs_env.cluster_id}"))
    await p.close()


async def test_a_paused_parent_is_cloned_and_paused_again(vs_env: VSphereTestEnv) -> None:
    p = vs_env.provider()
    parent = await full_clone(p, vm(f"par-{vs_env.cluster_id}", template=True))
    assert (await p.pause(parent.name)).state == VMState.PAUSED
    child = await instant_clone(p, parent.name, vm(f"kid-{vs_env.cluster_id}"))
    assert child.state == VMState.RUNNING
    assert (await p.get(parent.name)).state == VMState.PAUSED
    assert (await p.resume(parent.name)).state == VMState.RUNNING
    assert (await p.power_off(child.name)).state == VMState.STOPPED
    with pytest.raises(FailedPrecondition):
        await instant_clone(p, child.name, vm(f"gkid-{vs_env.cluster_id}"))
    with pytest.raises(FailedPrecondition):
        await p.pause(child.name)
    await p.close()


async def test_without_InstantClone_Task_a_linked_clone_of_the_parent_is_made_and_said_once(
        vs_env_fallback: VSphereTestEnv, caplog: pytest.LogCaptureFixture) -> None:
    env = vs_env_fallback
    p = env.provider()
    parent = await full_clone(p, vm(f"par-{env.cluster_id}", template=True))
    with caplog.at_level(logging.WARNING, logger="hypervisor.providers.vsphere.provider"):
        kids = [await instant_clone(p, parent.name, vm(f"kid{i}-{env.cluster_id}")) for i in range(2)]
    for kid in kids:
        assert kid.state == VMState.RUNNING and kid.clone_kind == CloneKind.INSTANT
        assert kid.parent == parent.name
        assert "no InstantClone_Task" in kid.message
    said = [r for r in caplog.records if "InstantClone_Task" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert p.instant_clone_supported is False

    # The simulator made them with CloneVM_Task from the parent, off its snapshot, never instantClone.
    parent_ref = parent.provider_id.removeprefix("vsphere://")
    recorded = tasks(env.sim)
    assert not [t for t in recorded if t[0] == "VirtualMachine.instantClone"]
    for kid in kids:
        assert ("VirtualMachine.cloneVm", parent_ref, "success",
                kid.provider_id.removeprefix("vsphere://")) in recorded
    assert inventory(env.sim)[parent.name].snapshots == [PARENT_SNAPSHOT]
    # Identity still arrives by guestinfo.
    assert GuestBootstrap.from_b64(guest_env(env.sim, kids[0].name)["VMX_GUESTINFO_COWPOD_BOOTSTRAP"]
                                   ).node_name == kids[0].name
    await p.close()


async def test_destroy_leaves_no_vm_guest_or_pod_behind(vs_env: VSphereTestEnv) -> None:
    p = vs_env.provider()
    parent = await full_clone(p, vm(f"par-{vs_env.cluster_id}", template=True))
    kid = await instant_clone(p, parent.name, vm(f"kid-{vs_env.cluster_id}"))
    grandkid = await instant_clone(p, kid.name, vm(f"gkid-{vs_env.cluster_id}"))
    freed = await instant_clone(p, parent.name, vm(f"free-{vs_env.cluster_id}"))
    assert (await p.snap_free(freed.name)).snapped_free
    assert (await p.snap_free(freed.name)).snapped_free  # idempotent
    vs_env.run_pod_container(kid.name)
    assert len(vs_env.pod_containers(kid.name)) == 1

    with pytest.raises(FailedPrecondition, match="not snapped free"):
        await p.destroy(parent.name)
    await p.destroy(parent.name, cascade=True)

    gone = {parent.name, kid.name, grandkid.name}
    assert not gone & set(inventory(vs_env.sim))
    assert not [n for n in vs_env.sim.guest_containers() if any(n.startswith(f"vcsim-{g}-") for g in gone)]
    assert vs_env.pod_containers(kid.name) == []
    # The snapped-free child outlives its parent.
    assert (await p.get(freed.name)).state == VMState.RUNNING
    await p.destroy(freed.name)
    await p.destroy(freed.name)  # idempotent
    assert freed.name not in inventory(vs_env.sim)
    assert [v for v in await p.list() if v.name in gone | {freed.name}] == []
    await p.close()


async def test_a_task_fault_is_a_failed_precondition_with_the_faults_text(
        vs_env: VSphereTestEnv) -> None:
    p = vs_env.provider()
    info = await full_clone(p, vm(f"f-{vs_env.cluster_id}"))
    await p.power_off(info.name)
    ref = info.provider_id.removeprefix("vsphere://")
    with pytest.raises(TaskFault) as err:
        await p.session.start_task("power off again",
                                   lambda vc: vim.VirtualMachine(ref, vc.si._stub).PowerOffVM_Task())
    assert isinstance(err.value, FailedPrecondition)
    assert str(err.value) == ("power off again: InvalidPowerState"
                              " (requestedState=poweredOff, existingState=poweredOff)")
    with pytest.raises(FailedPrecondition, match="template VM 'no-such-template' not found"):
        await full_clone(p, VMSpecInfo(name=f"t-{vs_env.cluster_id}", class_name="small", cpu_millis=1000,
                                       memory_bytes=1 << 30, image="no-such-template"))
    await p.close()


@pytest.mark.parametrize(("override", "line"), [
    ({"datacenter": "DC9"}, "provider.datacenter: no datacenter 'DC9'"),
    ({"folder": "nope"}, "provider.folder: no VM folder 'nope'"),
    ({"cluster": "C9"}, "provider.cluster: no cluster 'C9'"),
    ({"datastore": "DS9"}, "provider.datastore: no datastore 'DS9'"),
    ({"network": "Net9"}, "provider.network: no network 'Net9'"),
    ({"template": "tmpl9"}, "provider.template: no VM 'tmpl9'"),
    ({"passwordFile": "/nonexistent/pw"}, "provider.passwordFile: cannot read /nonexistent/pw"),
])
async def test_bad_settings_are_refused_with_one_line(
        vs_env: VSphereTestEnv, override: dict[str, str], line: str) -> None:
    with pytest.raises(FailedPrecondition) as err:
        await PLUGIN.check(vs_env.settings(**override), vs_env.context())
    assert str(err.value).startswith(line)
    assert "\n" not in str(err.value)


async def test_the_simulators_own_settings_pass_the_check(vs_env: VSphereTestEnv) -> None:
    await PLUGIN.check(vs_env.settings(), vs_env.context())


async def test_an_unreachable_server_is_one_line(vs_env: VSphereTestEnv) -> None:
    settings = vs_env.settings(server=f"https://127.0.0.1:{free_port()}/sdk")
    with pytest.raises(FailedPrecondition) as err:
        await PLUGIN.check(settings, vs_env.context())
    assert str(err.value).startswith(f"provider.server: cannot reach {settings.server}")
    assert "\n" not in str(err.value)


async def test_a_wrong_password_is_one_line() -> None:
    sim = Vcsim.start(username="cowpod", password="right")
    env = VSphereTestEnv(sim)
    try:
        (env.data_dir / "pw").write_text("wrong\n")
        with pytest.raises(FailedPrecondition) as err:
            await PLUGIN.check(env.settings(username="cowpod", passwordFile=str(env.data_dir / "pw")),
                               env.context())
        assert str(err.value) == ("provider.passwordFile: 127.0.0.1 refused the login of 'cowpod'"
                                  " (wrong user name or password)")
        (env.data_dir / "pw").write_text("right\n")
        right = env.settings(username="cowpod", passwordFile=str(env.data_dir / "pw"))
        await PLUGIN.check(right, env.context())
    finally:
        sim.stop()
        shutil.rmtree(env.data_dir, ignore_errors=True)


async def test_verification_is_on_unless_insecure_and_a_pinned_thumbprint_is_checked(
        vs_env: VSphereTestEnv) -> None:
    with pytest.raises(FailedPrecondition) as err:
        await PLUGIN.check(vs_env.settings(insecure=False), vs_env.context())
    assert str(err.value).startswith("provider.server: 127.0.0.1's certificate is not trusted (")
    assert "\n" not in str(err.value)

    pem = ssl.get_server_certificate(("127.0.0.1", vs_env.sim.port))
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).digest()
    pinned = ":".join(f"{b:02X}" for b in digest)
    await PLUGIN.check(vs_env.settings(insecure=False, thumbprint=pinned), vs_env.context())
    wrong = ":".join(["AB"] * 32)
    with pytest.raises(FailedPrecondition) as err:
        await PLUGIN.check(vs_env.settings(insecure=False, thumbprint=wrong), vs_env.context())
    assert str(err.value).startswith("provider.thumbprint: 127.0.0.1's certificate does not match it")


def nic_backing(sim: Vcsim, vm_name: str) -> tuple[str, str]:
    """(kind, network) of the first NIC of `vm_name` in the simulator."""
    si = sim.connect()
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        try:
            vm = next(v for v in view.view if v.name == vm_name)
            pc = vmodl.query.PropertyCollector
            spec = pc.FilterSpec(objectSet=[pc.ObjectSpec(obj=vm)],
                                 propSet=[pc.PropertySpec(type=vim.VirtualMachine,
                                                          pathSet=["config.hardware.device"])])
            (obj,) = content.propertyCollector.RetrieveContents([spec])
            nic = next(d for d in obj.propSet[0].val if isinstance(d, vim.vm.device.VirtualEthernetCard))
            b = nic.backing
            if isinstance(b, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
                return "dvportgroup", str(b.port.portgroupKey)
            return "network", str(b.deviceName)
        finally:
            view.DestroyView()
    finally:
        connect.Disconnect(si)


async def test_full_clones_go_on_the_configured_network_and_children_stay_on_it(
        vs_env: VSphereTestEnv) -> None:
    default = vs_env.provider()
    plain = await full_clone(default, vm(f"vmnet-{vs_env.cluster_id}"))
    assert nic_backing(vs_env.sim, plain.name) == ("network", "VM Network")
    await default.close()

    p = vs_env.provider(network="DC0_DVPG0")
    parent = await full_clone(p, vm(f"dvpg-{vs_env.cluster_id}", template=True))
    kind, key = nic_backing(vs_env.sim, parent.name)
    assert kind == "dvportgroup" and key
    child = await instant_clone(p, parent.name, vm(f"dvkid-{vs_env.cluster_id}"))
    assert nic_backing(vs_env.sim, child.name) == (kind, key)
    await p.close()


async def test_an_expired_session_is_logged_in_again(vs_env: VSphereTestEnv) -> None:
    p = vs_env.provider()
    info = await full_clone(p, vm(f"s-{vs_env.cluster_id}"))
    vc = p.session.api_sync()
    await asyncio.to_thread(vc.content.sessionManager.Logout)  # the server forgets the session
    assert (await p.get(info.name)).state == VMState.RUNNING
    assert (await p.pause(info.name)).state == VMState.PAUSED  # a task, started and awaited
    assert p.session.api_sync() is not vc
    await p.close()
