"""The controller's own loops wired as `cowpod-controller --provider sim --autoscale` runs
them: on the reconcile driver, watching the controller's hubs in process. A class with
`min: 1` gets its warm parent and a clone made and Running with nothing else asked, and
every loop reports its passes on the controller's /metrics."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Awaitable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.testing import ControllerRunner
from cowpod.client import Client
from cowpod.clusterconfig import ClusterConfig, VMClass
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import meta_pb2
from tests.polling import eventually

pytestmark = pytest.mark.integration


async def passes(port: int) -> dict[str, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    raw = await reader.read()
    writer.close()
    body = raw.partition(b"\r\n\r\n")[2].decode()
    return {s.labels["controller"]: s.value for fam in text_string_to_metric_families(body)
            for s in fam.samples if s.name == "cowpod_reconcile_passes_total"}


async def test_in_process_loops_scale_a_class_to_its_minimum(
    etcd: EtcdMember, etcd_prefix: str, tmp_path: pathlib.Path
) -> None:
    cluster = ClusterConfig(vm_classes=(VMClass("small", 1000, 1 << 30, min=1),))
    runner = ControllerRunner(etcd.endpoint, etcd_prefix, provider="sim", data_dir=tmp_path,
                              metrics_listen="127.0.0.1:0", autoscaler=cluster)
    async with runner, Client(runner.address) as c:

        async def running_small() -> list[str]:
            vms = (await c.vms.List(meta_pb2.ListOptions())).items
            return sorted(v.metadata.name for v in vms
                          if v.spec.class_name == "small" and v.status.phase == "Running")

        # A warm parent and one clone (the class minimum), both made Running by the VM manager.
        names = await eventually(lambda: _at_least(running_small(), 2), timeout=90.0,
                                 what="the small class's parent and one clone Running")
        assert len(names) == 2
        counted = await eventually(lambda: _all_counted(passes(runner.metrics_port)), timeout=30.0,
                                   what="passes of every loop on /metrics")
        assert set(counted) >= {"autoscaler", "vm-manager", "replicaset-controller"}


async def _at_least(names: Awaitable[list[str]], n: int) -> list[str] | None:
    got = await names
    return got if len(got) >= n else None


async def _all_counted(samples: Awaitable[dict[str, float]]) -> dict[str, float] | None:
    got = await samples
    want = ("autoscaler", "vm-manager", "replicaset-controller")
    return got if all(got.get(k, 0) > 0 for k in want) else None
