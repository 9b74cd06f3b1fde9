"""The server's surroundings: health, reflection, metrics, unix socket."""

from __future__ import annotations

import asyncio
import pathlib
import re

import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from controller.testing import ControllerRunner, make_pod
from cowpod.client import Client
from cowpod.local.etcd import EtcdMember
from cowpod.v1 import meta_pb2

pytestmark = pytest.mark.integration


async def http_get(port: int, path: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data.decode()


async def test_health_reflection_metrics_and_unix_socket(etcd: EtcdMember, etcd_prefix: str,
                                                         tmp_path: pathlib.Path) -> None:
    sock = tmp_path / "controller.sock"
    async with ControllerRunner(etcd.endpoint, etcd_prefix, metrics_listen="127.0.0.1:0",
                                listen_unix=str(sock)) as runner:
        async with Client(f"unix://{sock}") as client:
            assert await client.healthy()
            await client.pods.Create(make_pod("a"))
            await client.pods.List(meta_pb2.ListOptions())
            watch = client.pods.Watch(meta_pb2.WatchOptions(send_initial=True))
            await watch.read()

            stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
            call = stub.ServerReflectionInfo()
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            resp = await call.read()
            await call.done_writing()
            names = {s.name for s in resp.list_services_response.service}
            assert {"cowpod.v1.PodService", "cowpod.v1.NodeService", "cowpod.v1.VMService",
                    "cowpod.v1.EventService", "cowpod.v1.LeaseService", "grpc.health.v1.Health"} <= names

            body = await http_get(runner.metrics_port, "/metrics")
            assert body.startswith("HTTP/1.1 200")
            assert 'cowpod_controller_requests_total{code="OK",method="PodService.Create"} 1.0' in body
            # Our stream, plus any the in-process controllers (ReplicaSets) hold.
            streams = re.search(r'cowpod_controller_watch_streams\{kind="pods"\} ([0-9.]+)', body)
            assert streams is not None and float(streams.group(1)) >= 1
            assert "cowpod_controller_request_seconds_bucket" in body
            watch.cancel()
        assert (await http_get(runner.metrics_port, "/nope")).startswith("HTTP/1.1 404")
    assert not sock.exists()
