"""VM objects (the VM-manager protocol), events folding and expiry, leases CAS."""

from __future__ import annotations

import grpc
import pytest

from controller.kinds import EVENTS
from controller.testing import ControllerRunner
from cowpod.api.labels import SNAP_FREE_ANNOTATION
from cowpod.client import Client
from cowpod.v1 import event_pb2, lease_pb2, meta_pb2, vm_pb2

pytestmark = pytest.mark.integration


def key(name: str, ns: str = "") -> meta_pb2.ObjectKey:
    return meta_pb2.ObjectKey(namespace=ns, name=name)


async def running_vm(client: Client, name: str) -> vm_pb2.VM:
    vm = vm_pb2.VM()
    vm.metadata.name = name
    vm.spec.class_name = "small"
    vm.spec.cpu_millis = 1000
    vm.spec.memory_bytes = 1 << 30
    vm.spec.provider = "sim"
    created = await client.vms.Create(vm)
    assert created.status.phase == "Pending" and created.status.clone_kind == "full"
    created.status.phase = "Running"
    out: vm_pb2.VM = await client.vms.UpdateStatus(created)
    return out


async def test_clone_protocol(client: Client) -> None:
    pending = vm_pb2.VM()
    pending.metadata.name = "cold"
    await client.vms.Create(pending)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.vms.Clone(vm_pb2.CloneRequest(parent="cold"))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "is Pending, not Running or Paused" in (e.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.vms.Clone(vm_pb2.CloneRequest(parent="ghost"))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    await running_vm(client, "parent")
    resp = await client.vms.Clone(vm_pb2.CloneRequest(parent="parent", names=["c1", "c2"],
                                                      node_labels={"pool": "burst"}))
    assert [v.metadata.name for v in resp.items] == ["c1", "c2"]
    for child in resp.items:
        assert child.spec.parent == "parent"
        assert child.status.phase == "Pending" and child.status.clone_kind == "instant"
        assert child.spec.node_labels["pool"] == "burst"
        assert child.spec.cpu_millis == 1000
    parent = await client.vms.Get(key("parent"))
    assert list(parent.status.children) == ["c1", "c2"]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.vms.Clone(vm_pb2.CloneRequest(parent="parent", names=["c1"]))
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS

    # The VM manager's status updates never erase the lineage record.
    parent.status.ClearField("children")
    parent.status.message = "warm"
    parent = await client.vms.UpdateStatus(parent)
    assert list(parent.status.children) == ["c1", "c2"]

    # A parent with clones that are not snapped free cannot go, unless cascade.
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.vms.Destroy(meta_pb2.DeleteOptions(key=key("parent")))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "c1" in (e.value.details() or "")

    # Snap free: the controller records the request; the VM manager reports the result.
    c1 = await client.vms.SnapFree(key("c1"))
    assert c1.metadata.annotations[SNAP_FREE_ANNOTATION] == "requested"
    c1.status.snapped_free = True
    c1.status.phase = "Running"
    c1 = await client.vms.UpdateStatus(c1)
    assert SNAP_FREE_ANNOTATION not in c1.metadata.annotations

    # Cascade marks the remaining clone and the parent; the manager finalizes with grace 0.
    marked = await client.vms.Destroy(meta_pb2.DeleteOptions(key=key("parent"), cascade=True))
    assert marked.metadata.HasField("deletion_timestamp")
    c2 = await client.vms.Get(key("c2"))
    assert c2.metadata.HasField("deletion_timestamp")
    c1 = await client.vms.Get(key("c1"))
    assert not c1.metadata.HasField("deletion_timestamp")  # snapped free: independent now
    await client.vms.Destroy(meta_pb2.DeleteOptions(key=key("c2"), grace_period_seconds=0))
    await client.vms.Destroy(meta_pb2.DeleteOptions(key=key("parent"), grace_period_seconds=0))
    names = [v.metadata.name for v in (await client.vms.List(meta_pb2.ListOptions())).items]
    assert sorted(names) == ["c1", "cold"]


async def test_pause_and_clone_a_paused_parent(client: Client) -> None:
    parent = await running_vm(client, "quiet")
    paused = await client.vms.SetPaused(vm_pb2.SetPausedRequest(key=key("quiet"), paused=True))
    assert paused.spec.paused and paused.metadata.resource_version > parent.metadata.resource_version
    # Asking again changes nothing.
    again = await client.vms.SetPaused(vm_pb2.SetPausedRequest(key=key("quiet"), paused=True))
    assert again.metadata.resource_version == paused.metadata.resource_version
    # The VM manager reports it frozen; it is still a clone source (Fargo forks quiesced parents).
    paused.status.phase = "Paused"
    await client.vms.UpdateStatus(paused)
    resp = await client.vms.Clone(vm_pb2.CloneRequest(parent="quiet", names=["q1"]))
    child = resp.items[0]
    assert child.spec.parent == "quiet" and not child.spec.paused and child.status.phase == "Pending"
    stored = await client.vms.Get(key("quiet"))
    assert stored.spec.paused and stored.status.phase == "Paused"
    assert list(stored.status.children) == ["q1"]
    resumed = await client.vms.SetPaused(vm_pb2.SetPausedRequest(key=key("quiet"), paused=False))
    assert not resumed.spec.paused

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.vms.SetPaused(vm_pb2.SetPausedRequest(key=key("ghost"), paused=True))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.vms.SetPaused(vm_pb2.SetPausedRequest(paused=True))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "key.name: required" in (e.value.details() or "")
    failed = await client.vms.Get(key("q1"))
    failed.status.phase = "Failed"
    await client.vms.UpdateStatus(failed)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.vms.SetPaused(vm_pb2.SetPausedRequest(key=key("q1"), paused=True))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "is Failed" in (e.value.details() or "")


async def test_snap_free_of_full_clone_refused(client: Client) -> None:
    await running_vm(client, "full")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.vms.SnapFree(key("full"))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def event(reason: str, message: str, pod: str = "web") -> event_pb2.Event:
    return event_pb2.Event(
        involved_object=event_pb2.ObjectReference(kind="Pod", namespace="default", name=pod, uid="u1"),
        reason=reason, message=message, type="Normal",
        source=event_pb2.EventSource(component="agent", host="n1"),
    )


async def test_events_fold_filter_and_expire(controller: ControllerRunner, client: Client) -> None:
    first = await client.events.Create(event("BackOff", "Back-off restarting failed container"))
    assert first.count == 1
    again = await client.events.Create(event("BackOff", "Back-off restarting failed container"))
    assert again.metadata.name == first.metadata.name
    assert again.count == 2
    assert again.first_timestamp == first.first_timestamp
    await client.events.Create(event("Started", "Started container main"))
    await client.events.Create(event("Started", "Started container main", pod="db"))

    about_web = await client.events.List(event_pb2.ListEventsRequest(
        involved_object=event_pb2.ObjectReference(kind="Pod", name="web")))
    assert sorted((e.reason, e.count) for e in about_web.items) == [("BackOff", 2), ("Started", 1)]
    everything = await client.events.List(event_pb2.ListEventsRequest())
    assert len(everything.items) == 3

    # Each event is attached to an etcd lease, so etcd removes it after about an hour.
    assert controller.controller is not None
    kv = await controller.controller.store.get_raw(EVENTS.key("default", first.metadata.name))
    assert kv is not None and kv.lease != 0


async def test_leases_cas(client: Client) -> None:
    lz = lease_pb2.Lease()
    lz.metadata.name = "scheduler"
    lz.metadata.namespace = "kube-system"
    lz.spec.holder_identity = "a"
    lz.spec.lease_duration_seconds = 15
    created = await client.leases.Create(lz)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.leases.Create(lz)
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS

    created.spec.holder_identity = "b"
    won = await client.leases.Update(created)
    assert won.spec.holder_identity == "b"
    created.spec.holder_identity = "c"  # still carries the old resource_version
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.leases.Update(created)
    assert e.value.code() == grpc.StatusCode.ABORTED
    no_rv = lease_pb2.Lease()
    no_rv.CopyFrom(won)
    no_rv.metadata.resource_version = 0
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.leases.Update(no_rv)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    listed = await client.leases.List(meta_pb2.ListOptions(namespace="kube-system"))
    assert [x.spec.holder_identity for x in listed.items] == ["b"]
    await client.leases.Delete(meta_pb2.DeleteOptions(key=key("scheduler", "kube-system")))
    assert list((await client.leases.List(meta_pb2.ListOptions(namespace="kube-system"))).items) == []
