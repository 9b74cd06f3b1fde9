"""list() of the docker provider: `docker ps` summaries, an inspect once per container and state.

An inspect waits for Docker's lock on a container being started or attached,
so a list must not inspect what it need not (see `DockerProvider._listed_sync`).
A fake of the engine's two calls is enough: what is checked is which calls are
made and what the VM info says, not the engine."""

from __future__ import annotations

import pathlib
import types
from typing import Any

from hypervisor.provider import VMState
from hypervisor.providers.docker.provider import DockerProvider, DockerProviderConfig, container_name

CFG = DockerProviderConfig(data_dir=pathlib.Path("/nonexistent"), cluster_id="c1")
LABELS = {"cowpod.managed": "1", "cowpod.cluster": "c1", "cowpod.vm": "vm-1", "cowpod.class": "small",
          "cowpod.cpu-millis": "1000", "cowpod.memory-bytes": "536870912", "cowpod.clone-kind": "instant",
          "cowpod.parent": "p", "cowpod.shell-of": ""}


class FakeAPI:
    def __init__(self) -> None:
        self.summaries: list[dict[str, Any]] = []
        self.inspected: list[str] = []
        # The engine's state when inspected, if it moved on since the summaries were taken.
        self.now: dict[str, str] = {}

    def containers(self, all: bool, filters: dict[str, Any]) -> list[dict[str, Any]]:
        return self.summaries

    def inspect_container(self, cid: str) -> dict[str, Any]:
        self.inspected.append(cid)
        s = next(x for x in self.summaries if x["Id"] == cid)
        state = self.now.get(cid, s["State"])
        return {"Id": cid, "Name": s["Names"][0], "Created": "2026-12-05T19:00:00Z",
                "State": {"Status": state, "Paused": state == "paused",
                          "StartedAt": "2026-12-05T19:00:01Z"},
                "Config": {"Labels": s["Labels"], "Hostname": "vm-1"},
                "NetworkSettings": {"Networks": {}}}


class FakeImages:
    def list(self, filters: dict[str, Any]) -> list[Any]:
        return []


class FakeDocker:
    def __init__(self) -> None:
        self.api = FakeAPI()
        self.images = FakeImages()


def summary(state: str, ip: str = "") -> dict[str, Any]:
    nets = {CFG.network: {"IPAddress": ip}} if ip else {}
    return {"Id": "abc", "Names": ["/" + container_name(CFG, "vm-1")], "State": state, "Labels": LABELS,
            "Created": 1796500000, "NetworkSettings": {"Networks": nets}}


def test_list_inspects_once_per_state_and_takes_the_address_from_the_summary() -> None:
    fake = FakeDocker()
    p = DockerProvider(CFG, client=fake)  # type: ignore[arg-type]
    # Being created: no inspect (it would wait for the start).
    fake.api.summaries = [summary("created")]
    (vm,) = p._list_sync()
    assert vm.state == VMState.CREATING and fake.api.inspected == []
    # Running, not attached yet; then attached: one inspect, the address follows the summary.
    fake.api.summaries = [summary("running")]
    assert p._list_sync()[0].ip == ""
    fake.api.summaries = [summary("running", ip="172.20.0.5")]
    (vm,) = p._list_sync()
    assert (vm.state, vm.ip, vm.name, vm.hostname) == (VMState.RUNNING, "172.20.0.5", "vm-1", "vm-1")
    assert vm.ready_at is not None and fake.api.inspected == ["abc"]
    # A new state is inspected again.
    fake.api.summaries = [summary("paused", ip="172.20.0.5")]
    assert p._list_sync()[0].state == VMState.PAUSED and fake.api.inspected == ["abc", "abc"]


def test_a_clone_in_the_making_is_never_inspected_by_a_list() -> None:
    fake = FakeDocker()
    p = DockerProvider(CFG, client=fake)  # type: ignore[arg-type]
    p._making.add("abc")
    fake.api.summaries = [summary("running")]
    assert p._list_sync()[0].state == VMState.RUNNING and fake.api.inspected == []
    p._making.discard("abc")
    p._list_sync()
    assert fake.api.inspected == ["abc"]


def test_an_inspect_that_saw_another_state_than_the_summary_is_not_kept() -> None:
    """`docker ps` said running, then a snapshot's `commit --pause` froze the container before
    the inspect: this list reports what the inspect saw, the next one inspects again."""
    fake = FakeDocker()
    p = DockerProvider(CFG, client=fake)  # type: ignore[arg-type]
    fake.api.summaries = [summary("running")]
    fake.api.now["abc"] = "paused"
    assert p._list_sync()[0].state == VMState.PAUSED
    del fake.api.now["abc"]  # the commit is over
    assert p._list_sync()[0].state == VMState.RUNNING
    assert p._list_sync()[0].state == VMState.RUNNING
    assert fake.api.inspected == ["abc", "abc"]  # inspected again once, then kept


def test_a_list_during_our_own_commit_pause_reports_the_vm_running() -> None:
    """A snapshot's `commit --pause` freezes the VM for a moment; a list meanwhile must not
    report it Paused (the VM manager would resume it mid-commit)."""
    fake = FakeDocker()
    p = DockerProvider(CFG, client=fake)  # type: ignore[arg-type]
    fake.api.summaries = [summary("running")]
    during: list[VMState] = []

    def commit(cid: str, pause: bool, **_: Any) -> None:
        assert pause  # the VM was running
        fake.api.summaries = [summary("paused")]  # the engine froze it for the commit
        during.append(p._list_sync()[0].state)
        fake.api.summaries = [summary("running")]

    fake.api.commit = commit  # type: ignore[attr-defined]
    p._commit_sync("vm-1", types.SimpleNamespace(id="abc"), "running",  # type: ignore[arg-type]
                   repository="snap", tag="1")
    assert during == [VMState.RUNNING]
    # A pause that is not ours is reported as it is.
    fake.api.summaries = [summary("paused")]
    assert p._list_sync()[0].state == VMState.PAUSED
