"""Property-based fuzzing of the API (hypothesis) against a real, secure controller.

Hostile pods, arbitrary protobuf messages for every unary method, and corrupt
wire bytes. The controller must answer with a client error — never INTERNAL
or UNKNOWN, never crash — rule-breaking pods and undecodable bytes with
INVALID_ARGUMENT exactly, and the objects stored before the fuzzing must come
out byte-for-byte unchanged. Example counts are bounded so the suite stays
well under a minute.

The controller runs on its own event loop in a thread, so hypothesis drives
plain blocking gRPC calls.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.testing import ControllerRunner
from cowpod.auth.credentials import channel_credentials
from cowpod.local.etcd import EtcdMember
from cowpod.manifest import decode_object
from cowpod.v1 import (
    auth_pb2,
    event_pb2,
    lease_pb2,
    meta_pb2,
    node_pb2,
    pod_pb2,
    vm_pb2,
)
from tests.unit.security.strategies import (
    apply_edit,
    corrupt_bytes,
    invalid_pod_edits,
    messages,
    valid_pod_manifest,
)

pytestmark = pytest.mark.integration

# Server faults: what a client must never see, whatever it sends.
SERVER_FAULTS = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS,
                           grpc.StatusCode.UNIMPLEMENTED})
FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])

# Every unary method of the API (streams and the agent proxies are left out: they hold
# a connection open or need a live agent).
UNARY: list[tuple[str, type[Message]]] = []
for _file in (pod_pb2, node_pb2, vm_pb2, event_pb2, lease_pb2, auth_pb2):
    for _svc in _file.DESCRIPTOR.services_by_name.values():
        for _m in _svc.methods:
            if _m.server_streaming or _m.client_streaming or _m.name == "Exec":
                continue
            UNARY.append((f"/{_svc.full_name}/{_m.name}", message_factory.GetMessageClass(_m.input_type)))


class ThreadedController:
    """A secure controller on its own loop in a thread, and a blocking admin channel to it."""

    def __init__(self, runner: ControllerRunner) -> None:
        self.runner = runner
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-controller", daemon=True)
        self.channel: grpc.Channel | None = None

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def start(self) -> None:
        self.thread.start()
        self._run(self.runner.start())
        creds, _, opts = channel_credentials(self.runner.settings("admin"))
        assert creds is not None
        self.channel = grpc.secure_channel(self.runner.address, creds, options=opts)

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
        self._run(self.runner.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()

    def raw(self, method: str) -> Callable[..., bytes]:
        assert self.channel is not None
        return self.channel.unary_unary(method, request_serializer=None, response_deserializer=None)

    def call(self, method: str, body: bytes) -> tuple[grpc.StatusCode, str]:
        try:
            self.raw(method)(body, timeout=10)
        except grpc.RpcError as err:
            return err.code(), err.details() or ""  # type: ignore[attr-defined]
        return grpc.StatusCode.OK, ""


SEED_POD = "seed-web"
SEED_NODE = "seed-node"
SEED_VM = "seed-vm"


@pytest.fixture(scope="module")
def api(etcd: EtcdMember, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedController]:
    pki = tmp_path_factory.mktemp("fuzz") / "pki"
    # Node lifecycle must not touch the seed node while we compare it.
    runner = ControllerRunner.secure(etcd.endpoint, f"/fuzz-{uuid.uuid4().hex[:8]}", pki_dir=pki,
                                     node_monitor_grace=3600.0)
    tc = ThreadedController(runner)
    tc.start()
    try:
        _, pod = decode_object(valid_pod_manifest(SEED_POD))
        node = node_pb2.Node(metadata=meta_pb2.ObjectMeta(name=SEED_NODE))
        node.status.capacity.cpu_millis = 1000
        vm = vm_pb2.VM(metadata=meta_pb2.ObjectMeta(name=SEED_VM), spec=vm_pb2.VMSpec(class_name="small"))
        for method, msg in (("/cowpod.v1.PodService/Create", pod), ("/cowpod.v1.NodeService/Register", node),
                            ("/cowpod.v1.VMService/Create", vm)):
            code, details = tc.call(method, msg.SerializeToString())
            assert code == grpc.StatusCode.OK, (method, details)
        yield tc
    finally:
        tc.stop()


def snapshot(api: ThreadedController) -> dict[str, bytes]:
    keys = {
        "/cowpod.v1.PodService/Get": meta_pb2.ObjectKey(namespace="default", name=SEED_POD),
        "/cowpod.v1.NodeService/Get": meta_pb2.ObjectKey(name=SEED_NODE),
        "/cowpod.v1.VMService/Get": meta_pb2.ObjectKey(name=SEED_VM),
    }
    return {m: api.raw(m)(k.SerializeToString(), timeout=10) for m, k in keys.items()}


@pytest.fixture(scope="module")
def before(api: ThreadedController) -> dict[str, bytes]:
    return snapshot(api)


def valid_pod(name: str) -> pod_pb2.Pod:
    _, msg = decode_object(valid_pod_manifest(name))
    assert isinstance(msg, pod_pb2.Pod)
    return msg


def test_valid_pod_is_accepted(api: ThreadedController) -> None:
    """The baseline the fuzzed pods break: without the edits, the same pod is created."""
    code, details = api.call("/cowpod.v1.PodService/Create", valid_pod("fz-ok").SerializeToString())
    assert code == grpc.StatusCode.OK, details


@FUZZ
@given(data=st.data())
def test_rule_breaking_pods_are_invalid_argument(
    api: ThreadedController, before: dict[str, bytes], data: st.DataObject
) -> None:
    method = data.draw(st.sampled_from(["/cowpod.v1.PodService/Create", "/cowpod.v1.PodService/Update"]))
    update = method.endswith("Update")
    edits = data.draw(invalid_pod_edits(update=update), label="edits")
    pod = valid_pod(SEED_POD if update else data.draw(st.sampled_from(["fz-a", "fz-b", "fz-c"])))
    for edit, value in edits:
        apply_edit(pod, edit, value)
    code, details = api.call(method, pod.SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (edits, code, details[:300])
    assert details and "\n" not in details[:200]
    assert snapshot(api) == before


@FUZZ
@given(data=st.data())
def test_arbitrary_messages_never_fault_the_server(
    api: ThreadedController, before: dict[str, bytes], data: st.DataObject
) -> None:
    method, cls = data.draw(st.sampled_from(UNARY), label="method")
    msg = data.draw(messages(cls), label="request")
    code, details = api.call(method, msg.SerializeToString())
    assert code not in SERVER_FAULTS, (method, code, details)
    assert snapshot(api) == before


@FUZZ
@given(data=st.data())
def test_corrupt_wire_bytes_are_invalid_argument(
    api: ThreadedController, before: dict[str, bytes], data: st.DataObject
) -> None:
    method, cls = data.draw(st.sampled_from(UNARY), label="method")
    sample = valid_pod(SEED_POD) if cls is pod_pb2.Pod else data.draw(messages(cls))
    valid = sample.SerializeToString()
    body = data.draw(corrupt_bytes(valid), label="body")
    try:
        cls.FromString(body)
        decodable = True
    except DecodeError:
        decodable = False
    code, details = api.call(method, body)
    if decodable:
        assert code not in SERVER_FAULTS, (method, code, details)
    else:
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (method, code, details)
    if code == grpc.StatusCode.OK:
        # A corruption that still decodes can be an ordinary, allowed request (an
        # UpdateStatus of the seed pod with another phase): the server carried it
        # out, and that is the state refused requests must leave alone from now on.
        before.update(snapshot(api))
    assert snapshot(api) == before


def test_controller_still_serves_after_fuzzing(api: ThreadedController, before: dict[str, bytes]) -> None:
    assert snapshot(api) == before
    code, _ = api.call("/cowpod.v1.PodService/List", meta_pb2.ListOptions().SerializeToString())
    assert code == grpc.StatusCode.OK
