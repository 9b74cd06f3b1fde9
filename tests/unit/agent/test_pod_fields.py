"""Issue #14's Pod fields on the node, pure parts: securityContext -> the runtime's
CreateSpec, fieldRef/resourceFieldRef values, lifecycle handlers (real loopback sockets,
fake clock) and activeDeadlineSeconds in the plan."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from agent.config import DROPPED_CAPABILITIES, AgentConfig
from agent.desired import from_proto
from agent.plan import (
    DEADLINE_EXCEEDED,
    KillContainer,
    PlanConfig,
    PodMemory,
    Requeue,
    deadline_exceeded,
    plan_pod,
    pod_phase,
)
from agent.podspec import ConfigError, PodContext, container_spec, field_value, resource_value
from agent.probes import Prober, Target
from agent.runtime import Kind
from agent.runtime_fake import FakeRuntime
from cowpod.clock import FakeClock
from cowpod.v1 import pod_pb2
from tests.unit.agent.fakes import container, ctr, desired, pod, sandbox

CFG = AgentConfig(controller="x", node_name="node-1")
CTX = PodContext("node-1", "10.1.2.3", "192.168.0.1", "sandbox-id")


def test_security_context_reaches_the_container_spec_container_over_pod() -> None:
    c = container("app")
    c.security_context.run_as_user = 2000
    c.security_context.allow_privilege_escalation = False
    c.security_context.read_only_root_filesystem = True
    c.security_context.capabilities.drop.extend(["all"])
    p = pod("p", c)
    psc = p.spec.security_context
    psc.run_as_user, psc.run_as_group, psc.fs_group = 1000, 3000, 2000
    psc.supplemental_groups.append(4000)
    psc.run_as_non_root = True
    spec = container_spec(p, c, Kind.APP, 0, 0, CFG, CTX)
    assert (spec.run_as_user, spec.run_as_group) == (2000, 3000)  # the container's uid wins
    assert spec.group_add == (2000, 4000)
    assert spec.read_only_rootfs and spec.no_new_privileges and spec.run_as_non_root
    assert spec.cap_drop == (*DROPPED_CAPABILITIES, "ALL")


def test_no_security_context_changes_nothing() -> None:
    c = container("app")
    spec = container_spec(pod("p", c), c, Kind.APP, 0, 0, CFG, CTX)
    assert (spec.run_as_user, spec.run_as_group, spec.group_add) == (None, None, ())
    assert not (spec.read_only_rootfs or spec.no_new_privileges or spec.run_as_non_root)
    assert spec.cap_drop == DROPPED_CAPABILITIES


def test_allow_privilege_escalation_true_is_dockers_default() -> None:
    c = container("app")
    c.security_context.allow_privilege_escalation = True
    assert not container_spec(pod("p", c), c, Kind.APP, 0, 0, CFG, CTX).no_new_privileges


@pytest.mark.parametrize("field", ["privileged", "add"])
def test_a_stored_privileged_pod_is_refused_on_the_node_too(field: str) -> None:
    c = container("app")
    if field == "privileged":
        c.security_context.privileged = True
    else:
        c.security_context.capabilities.add.append("SYS_ADMIN")
    with pytest.raises(ConfigError, match="pod security rules"):
        container_spec(pod("p", c), c, Kind.APP, 0, 0, CFG, CTX)


def test_service_account_field_ref() -> None:
    p = pod("p", container("app"))
    assert field_value(p, "spec.serviceAccountName", CTX) == "default"
    p.spec.service_account_name = "builder"
    assert field_value(p, "spec.serviceAccountName", CTX) == "builder"
    assert field_value(p, "status.hostIP", CTX) == "192.168.0.1"


@pytest.mark.parametrize(
    ("resource", "divisor", "want"),
    [("limits.cpu", "", "1"), ("limits.cpu", "1m", "250"), ("requests.cpu", "1m", "125"),
     ("limits.memory", "1Mi", "64"), ("limits.memory", "", str(64 * 2**20)), ("requests.memory", "", "0")],
)
def test_resource_field_ref_rounds_up_like_kubernetes(resource: str, divisor: str, want: str) -> None:
    c = container("app")
    c.resources.limits.cpu_millis, c.resources.requests.cpu_millis = 250, 125
    c.resources.limits.memory_bytes = 64 * 2**20
    other = container("other")
    p = pod("p", other, c)
    ref = pod_pb2.ResourceFieldSelector(container_name="app", resource=resource, divisor=divisor)
    assert resource_value(p, other, ref) == want  # containerName picks whose resources


def test_resource_field_ref_in_env() -> None:
    c = container("app")
    c.resources.limits.memory_bytes = 32 * 2**20
    c.env.add(name="MEM").value_from.resource_field_ref.CopyFrom(
        pod_pb2.ResourceFieldSelector(resource="limits.memory", divisor="1Mi"))
    assert container_spec(pod("p", c), c, Kind.APP, 0, 0, CFG, CTX).env == {"MEM": "32"}


async def test_lifecycle_handlers_http_tcp_and_sleep() -> None:
    paths: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        if line:  # a tcpSocket handler connects and says nothing
            paths.append(line.split()[1])
            writer.write(b"HTTP/1.1 " + (b"200 OK" if b"/ok" in line else b"503 No") + b"\r\n\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clock = FakeClock()
    prober = Prober(FakeRuntime(clock))
    target = Target("cid", "127.0.0.1")
    try:
        ok = pod_pb2.LifecycleHandler(http_get=pod_pb2.HTTPGetAction(path="/ok", port=port))
        bad = pod_pb2.LifecycleHandler(http_get=pod_pb2.HTTPGetAction(path="/bad", port=port))
        tcp = pod_pb2.LifecycleHandler(tcp_socket=pod_pb2.TCPSocketAction(port=port))
        assert await prober.run_handler(ok, target, 5, clock) == (True, "")
        res = await prober.run_handler(bad, target, 5, clock)
        assert not res[0] and "503" in res[1]
        assert (await prober.run_handler(tcp, target, 5, clock))[0]
        assert paths == [b"/ok", b"/bad"]
    finally:
        server.close()
        await server.wait_closed()
    assert not (await prober.run_handler(tcp, target, 5, clock))[0]  # nothing listens now

    sleep = asyncio.create_task(prober.run_handler(
        pod_pb2.LifecycleHandler(sleep=pod_pb2.SleepAction(seconds=20)), target, 8, clock))
    for _ in range(5):
        await asyncio.sleep(0)  # let the handler start sleeping on the clock
    await clock.advance(7)
    assert not sleep.done()
    await clock.advance(1)  # the timeout (a preStop's grace period) bounds the sleep
    assert await sleep == (True, "")


def test_active_deadline_counts_from_start_time() -> None:
    p = pod("p", container("app"), active_deadline_seconds=30)
    assert from_proto(p).active_deadline is None  # not started yet: no deadline
    p.status.start_time.FromSeconds(1000)
    d = from_proto(p)
    assert d.active_deadline == 1030
    assert deadline_exceeded(d, 1029.9) is None
    reason = deadline_exceeded(d, 1030)
    assert reason is not None and reason[0] == DEADLINE_EXCEEDED == "DeadlineExceeded"
    assert deadline_exceeded(dataclasses.replace(d, terminal_phase="Failed"), 2000) is None


def test_plan_wakes_at_the_deadline_then_stops_the_pod_as_failed() -> None:
    d = dataclasses.replace(desired(), active_deadline=1030.0)
    running = [sandbox(uid="u1"), ctr("app", uid="u1")]
    actions = plan_pod(d, running, PodMemory(), 1000.0, PlanConfig())
    assert Requeue(1030.0) in actions and not any(isinstance(a, KillContainer) for a in actions)
    expired = deadline_exceeded(d, 1030.0)
    assert expired is not None
    memory = PodMemory(rejected=expired)  # what the worker records
    actions = plan_pod(d, running, memory, 1030.0, PlanConfig())
    assert [a.reason for a in actions if isinstance(a, KillContainer)] == ["PodTerminated"]
    phase = pod_phase(d, running, memory)
    assert (phase.phase, phase.reason) == ("Failed", "DeadlineExceeded")


def test_a_non_root_pods_disk_empty_dirs_are_opened_through_its_sandbox() -> None:
    from agent.desired import needs_sandbox
    from agent.podspec import OPEN_DIR, sandbox_spec, volume_name
    from cowpod.api.podfields import open_volumes

    c = container("app")
    memory = pod_pb2.EmptyDirVolumeSource(medium="Memory")
    p = pod("p", c, volumes=[pod_pb2.Volume(name="data", empty_dir=pod_pb2.EmptyDirVolumeSource()),
                             pod_pb2.Volume(name="mem", empty_dir=memory)])
    p.metadata.uid = "u-1"
    assert open_volumes(p.spec) == [] and not needs_sandbox(p, vm_network=True)  # root: nothing to open
    c.security_context.run_as_user = 1000
    p.spec.containers[0].CopyFrom(c)
    assert open_volumes(p.spec) == ["data"]  # tmpfs is world-writable already
    assert needs_sandbox(p, vm_network=True)
    mounts = [(m.source, m.target) for m in sandbox_spec(p, CFG, 0, "vm", "").mounts]
    assert mounts == [(volume_name("u-1", "data"), f"{OPEN_DIR}/data")]


def test_downward_api_volume_files() -> None:
    from agent.configvolumes import downward_payload

    c = container("app")
    c.resources.limits.memory_bytes = 64 * 2**20
    p = pod("p", c)
    p.metadata.labels.update({"zone": "us-est-coast", "rack": "rack-22"})
    p.metadata.annotations["builder"] = 'john "jd" doe'
    v = pod_pb2.Volume(name="info")
    for path, field in (("labels", "metadata.labels"), ("annotations", "metadata.annotations"),
                        ("name", "metadata.name"), ("zone", "metadata.labels['zone']")):
        v.downward_api.items.add(path=path).field_ref.field_path = field
    v.downward_api.items.add(path="mem", mode=0o600).resource_field_ref.CopyFrom(
        pod_pb2.ResourceFieldSelector(container_name="app", resource="limits.memory", divisor="1Mi"))
    files = downward_payload(p, v).files
    assert files["labels"] == (b'rack="rack-22"\nzone="us-est-coast"', 0o644)
    assert files["annotations"][0] == b'builder="john \\"jd\\" doe"'
    assert (files["name"][0], files["zone"][0], files["mem"]) == (b"p", b"us-est-coast", (b"64", 0o600))
