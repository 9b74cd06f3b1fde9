"""The sim provider: the provider rules, latencies on the injected clock, and
one agent per VM started, paused and stopped with it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from cowpod.clock import FakeClock
from cowpod.errors import AlreadyExists, FailedPrecondition, NotFound
from hypervisor.provider import CloneKind, Provider, VMSpecInfo, VMState
from hypervisor.providers.sim import SimLatencies, SimProvider
from hypervisor.testing import full_clone, instant_clone


class RecordingAgents:
    def __init__(self) -> None:
        self.started: dict[str, dict[str, object]] = {}
        self.stopped: list[str] = []
        self.paused: dict[str, bool] = {}
        self.ran = asyncio.Event()

    async def start_node(
        self,
        name: str,
        *,
        cpu_millis: int,
        memory_bytes: int,
        labels: Mapping[str, str],
        template: bool,
        provider_id: str,
    ) -> None:
        self.started[name] = {
            "cpu": cpu_millis,
            "labels": dict(labels),
            "template": template,
            "pid": provider_id,
        }

    def stop_node(self, name: str) -> None:
        self.stopped.append(name)

    def pause_node(self, name: str, paused: bool) -> None:
        self.paused[name] = paused

    async def run(self) -> None:
        self.ran.set()
        await asyncio.Event().wait()


def spec(name: str, **kw: object) -> VMSpecInfo:
    return VMSpecInfo(name=name, class_name="small", cpu_millis=2000, memory_bytes=4 << 30, **kw)  # type: ignore[arg-type]


async def finish(clock: FakeClock, coro: object, seconds: float) -> object:
    task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
    for _ in range(5):
        await asyncio.sleep(0)
    await clock.advance(seconds)
    return await asyncio.wait_for(task, 1)


async def test_full_then_instant_clone_with_latencies_and_agents() -> None:
    clock = FakeClock()
    agents = RecordingAgents()
    p = SimProvider(clock=clock, agents=agents, latencies=SimLatencies(full_clone=3.0, instant_clone=0.25))
    assert isinstance(p, Provider)
    task = asyncio.ensure_future(full_clone(p, spec("parent", template=True, node_labels={"tier": "web"})))
    for _ in range(5):
        await asyncio.sleep(0)
    assert (await p.get("parent")).state == VMState.CREATING
    await clock.advance(2.9)
    assert not task.done()
    await clock.advance(0.2)
    parent = await asyncio.wait_for(task, 1)
    assert parent.state == VMState.RUNNING and parent.clone_kind == CloneKind.FULL and parent.snapped_free
    assert agents.started["parent"]["template"] is True
    assert agents.started["parent"]["labels"] == {
        "cowpod.io/vm": "parent",
        "cowpod.io/class": "small",
        "cowpod.io/template": "true",
        "tier": "web",
    }
    child = await finish(clock, instant_clone(p, "parent", spec("child")), 0.25)
    assert child.clone_kind == CloneKind.INSTANT and child.parent == "parent" and not child.snapped_free  # type: ignore[union-attr]
    assert child.machine_id != parent.machine_id and child.ip != parent.ip  # type: ignore[union-attr]
    assert (await p.get("parent")).children == ("child",)
    assert agents.ran.is_set()
    await p.close()


async def test_rules() -> None:
    clock = FakeClock()
    agents = RecordingAgents()
    p = SimProvider(clock=clock, agents=agents, latencies=SimLatencies(0, 0, 0, 0, 0, 0, 0))
    await full_clone(p, spec("a"))
    with pytest.raises(AlreadyExists):
        await full_clone(p, spec("a"))
    with pytest.raises(NotFound):
        await instant_clone(p, "nope", spec("x"))
    await instant_clone(p, "a", spec("b"))
    with pytest.raises(FailedPrecondition):
        await p.destroy("a")
    await p.pause("b")
    assert agents.paused == {"b": True}
    await p.resume("b")
    await p.snap_free("b")
    await p.destroy("a")  # b no longer depends on it
    assert (await p.get("b")).snapped_free
    await p.power_off("b")
    with pytest.raises(FailedPrecondition):
        await instant_clone(p, "b", spec("c"))
    await p.destroy("b")
    await p.destroy("b")  # idempotent
    assert await p.list() == []
    assert agents.stopped == ["a", "b", "b"]
    await p.close()


async def test_cascade_destroys_dependent_children() -> None:
    p = SimProvider(clock=FakeClock(), latencies=SimLatencies(0, 0, 0, 0, 0, 0, 0))
    await full_clone(p, spec("a"))
    await instant_clone(p, "a", spec("b"))
    await p.destroy("a", cascade=True)
    assert await p.list() == []
