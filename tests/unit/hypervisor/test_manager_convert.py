"""Protobuf <-> domain conversion at the VM manager's edge."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from cowpod.api.labels import SNAP_FREE_ANNOTATION
from cowpod.v1 import meta_pb2, vm_pb2
from hypervisor.manager import apply_status, desired_of
from hypervisor.plan import StatusFields


def test_desired_of_reads_spec_status_and_requests() -> None:
    vm = vm_pb2.VM(
        metadata=meta_pb2.ObjectMeta(name="c", annotations={SNAP_FREE_ANNOTATION: "true"},
                                     deletion_timestamp=timestamp_pb2.Timestamp(seconds=5)),
        spec=vm_pb2.VMSpec(class_name="small", cpu_millis=500, memory_bytes=1 << 28, parent="p",
                           paused=True, node_labels={"zone": "a"}),
        status=vm_pb2.VMStatus(phase="Running", ip="10.0.0.3", children=["k"],
                               created_at=timestamp_pb2.Timestamp(seconds=10)),
    )
    d = desired_of(vm)
    assert d.name == "c" and d.spec.parent == "p" and d.spec.node_labels == {"zone": "a"}
    assert d.deleting and d.paused and d.snap_free_requested
    assert d.status.phase == "Running" and d.status.children == ("k",)
    assert d.status.created_at == 10.0 and d.status.ready_at is None


def test_snap_free_annotation_false_is_no_request() -> None:
    vm = vm_pb2.VM(metadata=meta_pb2.ObjectMeta(name="c", annotations={SNAP_FREE_ANNOTATION: "false"}))
    assert not desired_of(vm).snap_free_requested


def test_apply_status_round_trips_and_keeps_other_fields() -> None:
    vm = vm_pb2.VM(metadata=meta_pb2.ObjectMeta(name="a", resource_version=7),
                   status=vm_pb2.VMStatus(requested_at=timestamp_pb2.Timestamp(seconds=3), children=["old"]))
    st = StatusFields(phase="Running", ip="10.0.0.9", provider_id="docker://x", node_name="a", hostname="a",
                      machine_id="m", clone_kind="full", created_at=12.5, ready_at=None,
                      snapped_free=True, children=("b",), message="")
    out = apply_status(vm, st)
    assert out.metadata.resource_version == 7
    assert out.status.requested_at.seconds == 3
    assert not out.status.HasField("ready_at")
    assert desired_of(out).status == st
    assert list(vm.status.children) == ["old"]  # the input is not modified
