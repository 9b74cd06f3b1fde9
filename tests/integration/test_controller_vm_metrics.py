"""The VM manager inside the controller (`--provider sim`) exports clone and destroy
durations by kind and outcome, and VMs by phase, on the controller's own /metrics."""

from __future__ import annotations

import asyncio
import pathlib

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.testing import ControllerRunner
from cowpod.client import Client
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import meta_pb2, vm_pb2
from tests.polling import eventually

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(port: int) -> Samples:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    raw = await reader.read()
    writer.close()
    _, _, body = raw.partition(b"\r\n\r\n")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples
    }


def value(m: Samples, name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def new_vm(name: str, parent: str = "") -> vm_pb2.VM:
    return vm_pb2.VM(
        metadata=meta_pb2.ObjectMeta(name=name),
        spec=vm_pb2.VMSpec(class_name="small", cpu_millis=500, memory_bytes=256 << 20, parent=parent),
    )


async def test_vm_manager_metrics_on_the_controller_registry(
    etcd: EtcdMember, etcd_prefix: str, tmp_path: pathlib.Path
) -> None:
    runner = ControllerRunner(
        etcd.endpoint, etcd_prefix, provider="sim", data_dir=tmp_path, metrics_listen="127.0.0.1:0"
    )
    async with runner, Client(runner.address) as c:
        port = runner.metrics_port
        before = await scrape(port)
        assert ("cowpod_vms", (("phase", "Running"),)) in before
        assert value(before, "cowpod_vm_clone_seconds_count", kind="full", outcome="ok") == 0

        async def phase(name: str) -> str:
            try:
                return str((await c.vms.Get(meta_pb2.ObjectKey(name=name))).status.phase)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    return "gone"
                raise

        await c.vms.Create(new_vm("parent"))
        await eventually(lambda: _is(phase("parent"), "Running"), what="parent Running", timeout=60.0)
        await c.vms.Create(new_vm("child", parent="parent"))
        await eventually(lambda: _is(phase("child"), "Running"), what="child Running", timeout=60.0)
        mid = await scrape(port)
        assert value(mid, "cowpod_vms", phase="Running") == 2

        await c.vms.Destroy(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="child")))
        await eventually(lambda: _is(phase("child"), "gone"), what="child destroyed", timeout=60.0)

        after = await scrape(port)
        assert value(after, "cowpod_vm_clone_seconds_count", kind="full", outcome="ok") == 1
        assert value(after, "cowpod_vm_clone_seconds_count", kind="instant", outcome="ok") == 1
        # The sim's full clone takes 2 s on the controller's clock.
        assert value(after, "cowpod_vm_clone_seconds_sum", kind="full", outcome="ok") >= 1.0
        assert value(after, "cowpod_vm_destroy_seconds_count", kind="instant", outcome="ok") == 1
        assert value(after, "cowpod_vms", phase="Running") == 1
        # The API's own series are still on the same registry.
        assert any(k[0] == "cowpod_controller_requests_total" for k in after)


async def _is(v: object, want: str) -> bool:
    return await v == want  # type: ignore[misc]
