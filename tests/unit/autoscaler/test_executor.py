"""The executor against a recording fake of the API: what it calls, in what
order, and how it reacts when a call fails or the cluster moved meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from controller.autoscaler.actions import Cordon, CreateParent, Drain, Event, ScaleDown, ScaleUp, TaintParent
from controller.autoscaler.executor import EVENT_REPEAT_S, Executor
from controller.autoscaler.model import PodRef
from controller.autoscaler.testing import make_node, make_pod
from cowpod.api.ids import ClassName, NodeName, VMName
from cowpod.clock import FakeClock
from cowpod.clusterconfig import ClusterConfig, VMClass
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2, vm_pb2

SMALL = VMClass("small", 1000, 1024**3, labels={"tier": "small"})
CONFIG = ClusterConfig(vm_classes=(SMALL,))


class RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        self._code, self._details = code, details or code.name

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class Stub:
    """Records every call as (service.method, request); `fail` makes a method raise."""

    def __init__(self, api: FakeApi, service: str) -> None:
        self._api, self._service = api, service

    def __getattr__(self, method: str) -> Callable[..., Any]:
        async def call(request: Any, timeout: float | None = None) -> Any:
            name = f"{self._service}.{method}"
            self._api.calls.append((name, request))
            err = self._api.fail.get(name)
            if err is not None:
                if callable(err):
                    err = err(request)
                if err is not None:
                    raise err
            return self._api.answer(name, request)

        return call


class FakeApi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail: dict[str, Any] = {}
        self.nodes_by_name: dict[str, node_pb2.Node] = {}
        self.pods_on: dict[str, list[pod_pb2.Pod]] = {}
        self.vms_by_name: dict[str, vm_pb2.VM] = {}
        self.vms = Stub(self, "vms")
        self.nodes = Stub(self, "nodes")
        self.pods = Stub(self, "pods")
        self.events = Stub(self, "events")
        self.leases = Stub(self, "leases")

    def answer(self, name: str, req: Any) -> Any:
        if name == "vms.Create":
            out = vm_pb2.VM()
            out.CopyFrom(req)
            out.metadata.resource_version = 7
            return out
        if name == "vms.Clone":
            return vm_pb2.CloneResponse(
                items=[vm_pb2.VM(metadata=meta_pb2.ObjectMeta(name=n, resource_version=7)) for n in req.names]
            )
        if name == "vms.Get":
            if req.name not in self.vms_by_name:
                raise RpcError(grpc.StatusCode.NOT_FOUND)
            return self.vms_by_name[req.name]
        if name == "nodes.Get":
            n = node_pb2.Node()
            n.CopyFrom(self.nodes_by_name[req.name])
            return n
        if name == "nodes.Update":
            self.nodes_by_name[req.metadata.name] = req
            return req
        if name == "pods.List":
            node = req.field_selector.removeprefix("spec.nodeName=")
            return pod_pb2.PodList(items=self.pods_on.get(node, []))
        return req

    def called(self, prefix: str = "") -> list[str]:
        return [n for n, _ in self.calls if n.startswith(prefix)]

    def requests(self, name: str) -> list[Any]:
        return [r for n, r in self.calls if n == name]


def names() -> Callable[[str], str]:
    counter = iter(range(1000))
    return lambda prefix: f"{prefix}-{next(counter)}"


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ex(api: FakeApi, clock: FakeClock) -> Executor:
    return Executor(api, CONFIG, clock, names=names())


PODS = (PodRef("default", "web-1"), PodRef("default", "web-2"))


async def test_instant_clone_from_the_parent_with_the_class_labels(api: FakeApi, ex: Executor) -> None:
    out = await ex.execute([ScaleUp(ClassName("small"), 2, VMName("small-parent"), PODS)])
    [req] = api.requests("vms.Clone")
    assert (req.parent, req.count, list(req.names)) == ("small-parent", 2, ["small-0", "small-1"])
    assert dict(req.node_labels) == {"tier": "small", "cowpod.io/class": "small"}
    assert [v.metadata.name for v in out.created] == ["small-0", "small-1"]
    assert out.failed_classes == []
    events = api.requests("events.Create")
    assert {(e.involved_object.name, e.reason) for e in events} == {
        ("web-1", "TriggeredScaleUp"), ("web-2", "TriggeredScaleUp")
    }
    assert events[0].message == "cloned 2 \u00d7 small from small-parent for 2 pods (small-0, small-1)"


async def test_full_clones_carry_the_class_size_and_labels(api: FakeApi, ex: Executor) -> None:
    out = await ex.execute([ScaleUp(ClassName("small"), 2, None, PODS)])
    reqs = api.requests("vms.Create")
    assert [r.metadata.name for r in reqs] == ["small-0", "small-1"]
    assert all(
        (r.spec.class_name, r.spec.cpu_millis, r.spec.memory_bytes, r.spec.template, r.spec.parent)
        == ("small", 1000, 1024**3, False, "")
        for r in reqs
    )
    assert dict(reqs[0].spec.node_labels) == {"tier": "small", "cowpod.io/class": "small"}
    assert len(out.created) == 2
    assert "created 2 \u00d7 small by full clone for 2 pods" in api.requests("events.Create")[0].message


async def test_a_parent_that_stopped_being_clonable_falls_back_to_full_clones(
    api: FakeApi, ex: Executor
) -> None:
    api.fail["vms.Clone"] = RpcError(grpc.StatusCode.FAILED_PRECONDITION, "parent is being destroyed")
    out = await ex.execute([ScaleUp(ClassName("small"), 2, VMName("small-parent"), PODS)])
    assert api.called("vms.") == ["vms.Clone", "vms.Create", "vms.Create"]
    assert len(out.created) == 2 and out.failed_classes == []


async def test_a_failed_clone_is_reported_for_cooldown_and_to_the_pods(api: FakeApi, ex: Executor) -> None:
    api.fail["vms.Clone"] = RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "host full")
    out = await ex.execute([ScaleUp(ClassName("small"), 2, VMName("small-parent"), PODS)])
    assert out.failed_classes == ["small"] and out.created == []
    events = api.requests("events.Create")
    assert {e.reason for e in events} == {"FailedScaleUp"}
    assert events[0].type == "Warning"
    assert events[0].message == "could not make 2 of 2 \u00d7 small: host full"


async def test_parent_gets_the_plain_name_or_a_suffixed_one(api: FakeApi, ex: Executor) -> None:
    api.fail["vms.Create"] = lambda req: (
        RpcError(grpc.StatusCode.ALREADY_EXISTS) if req.metadata.name == "small-parent" else None
    )
    out = await ex.execute([CreateParent(ClassName("small"))])
    reqs = api.requests("vms.Create")
    assert [r.metadata.name for r in reqs] == ["small-parent", "small-parent-0"]
    assert reqs[1].spec.template is True
    assert [v.metadata.name for v in out.created] == ["small-parent-0"]
    # Its node is registered, tainted, before its agent boots (the agent adopts it).
    [node] = api.requests("nodes.Register")
    assert node.metadata.name == "small-parent-0"
    taints = [(t.key, t.value, t.effect) for t in node.spec.taints]
    assert taints == [("cowpod.io/parent", "true", "NoSchedule")]
    assert not node.status.conditions


async def test_parent_whose_create_already_landed_is_not_made_twice(api: FakeApi, ex: Executor) -> None:
    # The informer had not shown the parent yet (or an earlier answer was lost).
    api.vms_by_name["small-parent"] = vm_pb2.VM(
        metadata=meta_pb2.ObjectMeta(name="small-parent"),
        spec=vm_pb2.VMSpec(class_name="small", template=True),
        status=vm_pb2.VMStatus(phase="Creating"),
    )
    api.fail["vms.Create"] = RpcError(grpc.StatusCode.ALREADY_EXISTS)
    out = await ex.execute([CreateParent(ClassName("small"))])
    assert [r.metadata.name for r in api.requests("vms.Create")] == ["small-parent"]
    assert out.created == [] and out.failed_classes == []


async def test_taint_parent_adds_the_taint_once(api: FakeApi, ex: Executor) -> None:
    api.nodes_by_name["p"] = make_node("p").ready().obj()
    await ex.execute([TaintParent(NodeName("p"))])
    await ex.execute([TaintParent(NodeName("p"))])
    assert api.called("nodes.Update") == ["nodes.Update"]
    [t] = api.nodes_by_name["p"].spec.taints
    assert (t.key, t.value, t.effect) == ("cowpod.io/parent", "true", "NoSchedule")


async def test_taint_retries_a_lost_compare_and_swap(api: FakeApi, ex: Executor) -> None:
    api.nodes_by_name["p"] = make_node("p").ready().obj()
    tries = iter([RpcError(grpc.StatusCode.ABORTED), None])
    api.fail["nodes.Update"] = lambda req: next(tries)
    await ex.execute([TaintParent(NodeName("p"))])
    assert api.called("nodes.Update") == ["nodes.Update", "nodes.Update"]


SCALE_DOWN = [
    Cordon(NodeName("n1")),
    Drain(NodeName("n1")),
    ScaleDown(VMName("n1"), "unneeded", NodeName("n1")),
]


async def test_scale_down_cordons_drains_system_pods_and_destroys(api: FakeApi, ex: Executor) -> None:
    api.nodes_by_name["n1"] = make_node("n1").ready().obj()
    api.pods_on["n1"] = [make_pod("exporter").system().node("n1").obj()]
    out = await ex.execute(SCALE_DOWN)
    assert out.aborted_nodes == set()
    assert api.nodes_by_name["n1"].spec.unschedulable is True
    [deleted] = api.requests("pods.Delete")
    assert deleted.key.name == "exporter"
    [destroyed] = api.requests("vms.Destroy")
    assert destroyed.key.name == "n1"


async def test_a_pod_that_slipped_on_aborts_the_scale_down_and_uncordons(api: FakeApi, ex: Executor) -> None:
    api.nodes_by_name["n1"] = make_node("n1").ready().obj()
    api.pods_on["n1"] = [make_pod("late").node("n1").obj()]
    out = await ex.execute(SCALE_DOWN)
    assert out.aborted_nodes == {"n1"}
    assert api.nodes_by_name["n1"].spec.unschedulable is False
    assert api.called("pods.Delete") == [] and api.called("vms.Destroy") == []


async def test_a_node_that_cannot_be_cordoned_is_not_destroyed(api: FakeApi, ex: Executor) -> None:
    api.fail["nodes.Get"] = RpcError(grpc.StatusCode.NOT_FOUND)
    out = await ex.execute(SCALE_DOWN)
    assert out.aborted_nodes == {"n1"}
    assert api.called("vms.Destroy") == []


async def test_the_same_event_is_not_repeated_within_the_interval(
    api: FakeApi, ex: Executor, clock: FakeClock
) -> None:
    e = Event("Pod", "default", "huge", "NotTriggerScaleUp", "pod bigger than any VM class", "Warning")
    await ex.execute([e, e])
    await clock.advance(EVENT_REPEAT_S - 1)
    await ex.execute([e])
    assert len(api.requests("events.Create")) == 1
    await clock.advance(2)
    await ex.execute([e])
    sent = api.requests("events.Create")
    assert len(sent) == 2
    assert (sent[0].involved_object.kind, sent[0].reason, sent[0].type, sent[0].source.component) == (
        "Pod", "NotTriggerScaleUp", "Warning", "cowpod-autoscaler"
    )


async def test_a_parent_paused_for_a_snapshot_is_retried_not_abandoned(
    api: FakeApi, ex: Executor, clock: FakeClock
) -> None:
    tries = iter([RpcError(grpc.StatusCode.FAILED_PRECONDITION, 'parent vms "small-parent" is Paused'), None])
    api.fail["vms.Clone"] = lambda req: next(tries)
    task = asyncio.ensure_future(ex.execute([ScaleUp(ClassName("small"), 1, VMName("small-parent"), PODS)]))
    while not task.done():
        await clock.advance(0.05)
    out = task.result()
    assert api.called("vms.") == ["vms.Clone", "vms.Clone"]
    assert len(out.created) == 1 and out.failed_classes == []


async def test_a_parent_paused_for_good_falls_back_to_full_clones(
    api: FakeApi, ex: Executor, clock: FakeClock
) -> None:
    paused = 'parent vms "small-parent" is Paused'
    api.fail["vms.Clone"] = RpcError(grpc.StatusCode.FAILED_PRECONDITION, paused)
    task = asyncio.ensure_future(ex.execute([ScaleUp(ClassName("small"), 1, VMName("small-parent"), PODS)]))
    while not task.done():
        await clock.advance(0.05)
    out = task.result()
    assert api.called("vms.") == ["vms.Clone"] * 6 + ["vms.Create"]
    assert len(out.created) == 1
