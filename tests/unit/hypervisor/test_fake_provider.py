"""The in-memory provider keeps the provider contract (the e2e contract tests run it too)."""

from __future__ import annotations

import pytest

from cowpod.clock import FakeClock
from cowpod.errors import AlreadyExists, FailedPrecondition, NotFound
from hypervisor.provider import CloneKind, Provider, VMSpecInfo, VMState
from hypervisor.providers.fake import FakeProvider
from hypervisor.testing import full_clone, instant_clone


def spec(name: str) -> VMSpecInfo:
    return VMSpecInfo(name=name, class_name="small", cpu_millis=500, memory_bytes=256 << 20)


async def test_is_a_provider() -> None:
    assert isinstance(FakeProvider(), Provider)


async def test_clone_identity_lineage_and_destroy_rules() -> None:
    p = FakeProvider(FakeClock())
    parent = await full_clone(p, spec("p"))
    child = await instant_clone(p, "p", spec("c"))
    assert child.clone_kind == CloneKind.INSTANT and child.parent == "p" and not child.snapped_free
    for attr in ("name", "hostname", "ip", "machine_id", "node_name", "provider_id"):
        assert getattr(child, attr) != getattr(parent, attr), attr
    assert (await p.get("p")).children == ("c",)
    with pytest.raises(AlreadyExists):
        await full_clone(p, spec("c"))
    with pytest.raises(FailedPrecondition, match="not snapped free"):
        await p.destroy("p")
    await p.snap_free("c")
    await p.destroy("p")
    await p.destroy("p")  # idempotent
    assert [v.name for v in await p.list()] == ["c"]
    with pytest.raises(NotFound):
        await p.get("p")


async def test_cascade_destroys_unsnapped_children_and_nested_containers() -> None:
    p = FakeProvider()
    await full_clone(p, spec("p"))
    await instant_clone(p, "p", spec("c"))
    p.add_nested("c", "pod-1")
    await p.destroy("p", cascade=True)
    assert await p.list() == []
    assert await p.nested_containers("c") == []


async def test_clone_of_a_stopped_parent_is_refused() -> None:
    p = FakeProvider()
    await full_clone(p, spec("p"))
    await p.power_off("p")
    assert (await p.get("p")).state == VMState.STOPPED
    with pytest.raises(FailedPrecondition):
        await instant_clone(p, "p", spec("c"))
    with pytest.raises(NotFound):
        await instant_clone(p, "ghost", spec("c"))
