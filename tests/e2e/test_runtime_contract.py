"""The runtime contract: `FakeRuntime` (what the agent's unit tests run on) against
`DockerRuntime` on the real engine, the same tests on both (#16), so the fake
cannot drift from what Docker does without a test failing here.

A test describes a container's process once (`Program`: what it prints, how it
exits, whether it ignores SIGTERM); each harness makes it real its own way: a
busybox shell script on Docker, a scripted `Behaviour` on the fake (whose time
is a FakeClock the harness advances while it waits).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

import pytest

from agent import labels as L
from agent.runtime import ContainerInfo, CreateSpec, EngineError, ImageError, Kind, RunState, Runtime
from agent.runtime_docker import DockerRuntime
from agent.runtime_fake import Behaviour, FakeRuntime
from agent.testing import BUSYBOX, cleanup_docker, ensure_images
from cowpod.clock import FakeClock
from tests.polling import eventually

pytestmark = pytest.mark.e2e

# Docker's log timestamps: RFC 3339 with nanoseconds, in UTC.
STAMPED = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z (.*)$")


@dataclass(frozen=True)
class Program:
    lines: tuple[str, ...] = ()
    exit_code: int | None = 0  # None: runs until signalled
    ignores_sigterm: bool = False


class Harness(Protocol):
    rt: Runtime
    node: str

    def image_for(self, program: Program) -> tuple[str, list[str]]: ...

    def exec_exits(self, container: str, command: list[str], code: int) -> list[str]: ...

    async def until(self, cid: str, pred: Callable[[ContainerInfo], bool], what: str) -> ContainerInfo: ...


async def info_of(rt: Runtime, cid: str) -> ContainerInfo | None:
    return next((c for c in await rt.list_containers() if c.id == cid), None)


class DockerHarness:
    def __init__(self) -> None:
        self.node = f"contract-{uuid.uuid4().hex[:8]}"
        self.rt: Runtime = DockerRuntime(self.node)

    def image_for(self, program: Program) -> tuple[str, list[str]]:
        script = "".join(f"echo {line!r}; " for line in program.lines)
        if program.exit_code is not None:
            script += f"exit {program.exit_code}"
        else:
            script = ("trap '' TERM; " if program.ignores_sigterm else "trap 'exit 143' TERM; ") + script
            script += "while :; do sleep 0.05; done"
        return BUSYBOX, ["sh", "-c", script]

    def exec_exits(self, container: str, command: list[str], code: int) -> list[str]:
        return ["sh", "-c", f"exit {code}"]

    async def until(self, cid: str, pred: Callable[[ContainerInfo], bool], what: str) -> ContainerInfo:
        async def check() -> ContainerInfo | None:
            info = await info_of(self.rt, cid)
            return info if info is not None and pred(info) else None

        got = await eventually(check, timeout=30, what=what)
        assert got is not None
        return got

    async def close(self) -> None:
        await self.rt.close()
        cleanup_docker(self.node)


class FakeHarness:
    def __init__(self) -> None:
        self.node = "node-1"
        self.clock = FakeClock()
        self.fake = FakeRuntime(self.clock, self.node)
        self.rt: Runtime = self.fake
        self._n = 0

    def image_for(self, program: Program) -> tuple[str, list[str]]:
        self._n += 1
        image = f"program-{self._n}"
        self.fake.images.add(image)
        self.fake.behaviour[image] = Behaviour(
            exit_code=program.exit_code or 0,
            runs_for=None if program.exit_code is None else 0.1,
            ignores_sigterm=program.ignores_sigterm,
            logs="".join(f"{line}\n" for line in program.lines).encode(),
        )
        return image, []

    def exec_exits(self, container: str, command: list[str], code: int) -> list[str]:
        self.fake.exec_results[(container, tuple(command))] = code
        return command

    async def until(self, cid: str, pred: Callable[[ContainerInfo], bool], what: str) -> ContainerInfo:
        for _ in range(1000):  # 100 s of fake time
            info = await info_of(self.rt, cid)
            if info is not None and pred(info):
                return info
            await self.clock.advance(0.1)
        raise AssertionError(f"not reached in 100 s of fake time: {what}")

    async def close(self) -> None:
        await self.rt.close()


@pytest.fixture(params=["fake", "docker"])
async def h(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    harness: DockerHarness | FakeHarness
    if request.param == "docker":
        ensure_images()
        harness = DockerHarness()
    else:
        harness = FakeHarness()
    try:
        yield harness
    finally:
        await harness.close()


def labels(h: Harness, pod_uid: str, name: str, **extra: str) -> dict[str, str]:
    return {
        L.MANAGED: "1",
        L.NODE: h.node,
        L.TEST: "1",
        L.POD_UID: pod_uid,
        L.POD_NAME: "web",
        L.POD_NAMESPACE: "default",
        L.CONTAINER_NAME: name,
        L.CONTAINER_KIND: "app",
        L.ATTEMPT: "2",
        L.BACKOFF_STREAK: "1",
        L.SPEC_HASH: "h1",
        L.GRACE: "7",
        **extra,
    }


async def create(h: Harness, program: Program, *, uid: str = "", name: str = "app", **extra: str) -> str:
    image, cmd = h.image_for(program)
    uid = uid or uuid.uuid4().hex
    spec = CreateSpec(
        name=f"{h.node}-{uuid.uuid4().hex[:8]}",
        image=image,
        labels=labels(h, uid, name, **extra),
        cmd=cmd or None,
    )
    return await h.rt.create_container(spec)


async def read_logs(rt: Runtime, cid: str, **kw: object) -> bytes:
    return b"".join([chunk async for chunk in rt.logs(cid, **kw)])  # type: ignore[arg-type]


# -- lifecycle ------------------------------------------------------------------------------------


async def test_a_container_is_created_runs_and_exits_with_its_code(h: Harness) -> None:
    uid = uuid.uuid4().hex
    cid = await create(h, Program(lines=("hello", "world"), exit_code=3), uid=uid)
    made = await h.until(cid, lambda c: True, "the container listed")
    assert made.state == RunState.CREATED and made.started_at is None
    assert (made.pod_uid, made.pod_name, made.pod_namespace, made.name) == (uid, "web", "default", "app")
    assert (made.kind, made.attempt, made.streak, made.spec_hash, made.grace_seconds) == (
        Kind.APP,
        2,
        1,
        "h1",
        7,
    )
    assert made.labels[L.NODE] == h.node and made.created_at > 0
    await h.rt.start_container(cid)
    done = await h.until(cid, lambda c: c.state == RunState.EXITED, "the container exited")
    assert (done.exit_code, done.oom_killed) == (3, False)
    # (Docker may stamp a quick exit's finish a millisecond before its start: no order here.)
    assert done.started_at is not None and done.finished_at is not None
    assert not done.running and done.dead and not done.succeeded
    assert not await h.rt.is_running(cid)
    assert await read_logs(h.rt, cid) == b"hello\nworld\n"
    assert await read_logs(h.rt, cid, tail=1) == b"world\n"


async def test_logs_with_timestamps_prefix_every_line(h: Harness) -> None:
    cid = await create(h, Program(lines=("a", "b"), exit_code=0))
    await h.rt.start_container(cid)
    await h.until(cid, lambda c: c.state == RunState.EXITED, "the container exited")
    stamped = (await read_logs(h.rt, cid, timestamps=True)).splitlines()
    assert len(stamped) == 2
    matches = [STAMPED.match(line) for line in stamped]
    assert all(matches), stamped
    assert [m.group(1) for m in matches if m] == [b"a", b"b"]


async def test_following_the_logs_of_a_running_container_ends_when_it_exits(h: Harness) -> None:
    cid = await create(h, Program(lines=("up",), exit_code=None))
    await h.rt.start_container(cid)
    await h.until(cid, lambda c: c.state == RunState.RUNNING, "the container running")
    stream = h.rt.logs(cid, follow=True)
    got = b""
    while not got.endswith(b"up\n"):
        got += await anext(stream)
    rest = asyncio.ensure_future(anext(stream, None))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not rest.done()  # open while the container runs
    await h.rt.signal_container(cid, "SIGKILL")
    await h.until(cid, lambda c: c.state == RunState.EXITED, "the container killed")
    assert await asyncio.wait_for(rest, 30) is None  # and ends when it exits


async def test_sigterm_stops_a_process_that_exits_on_it_and_sigkill_one_that_does_not(h: Harness) -> None:
    polite = await create(h, Program(lines=("up",), exit_code=None))
    stubborn = await create(h, Program(exit_code=None, ignores_sigterm=True), name="other")
    for cid in (polite, stubborn):
        await h.rt.start_container(cid)
        await h.until(cid, lambda c: c.state == RunState.RUNNING, "the container running")
        assert await h.rt.is_running(cid)
    await h.rt.signal_container(polite, "SIGTERM")
    stopped = await h.until(polite, lambda c: c.state == RunState.EXITED, "SIGTERM stopped it")
    assert stopped.exit_code == 143
    await h.rt.signal_container(stubborn, "SIGKILL")
    killed = await h.until(stubborn, lambda c: c.state == RunState.EXITED, "SIGKILL stopped it")
    assert killed.exit_code == 137
    await h.rt.signal_container(killed.id, "SIGTERM")  # not running any more: not an error


async def test_exec_passes_the_exit_code_back_and_needs_a_running_container(h: Harness) -> None:
    cid = await create(h, Program(exit_code=None))
    await h.rt.start_container(cid)
    await h.until(cid, lambda c: c.state == RunState.RUNNING, "the container running")
    command = h.exec_exits("app", ["check"], 4)
    assert (await h.rt.exec(cid, command)).exit_code == 4
    await h.rt.signal_container(cid, "SIGKILL")
    await h.until(cid, lambda c: c.state == RunState.EXITED, "the container killed")
    with pytest.raises(EngineError):
        await h.rt.exec(cid, command)


# -- listing and removal --------------------------------------------------------------------------


async def test_list_is_this_nodes_managed_pod_containers_only(h: Harness) -> None:
    uid = uuid.uuid4().hex
    mine = await create(h, Program(), uid=uid)
    other_pod = await create(h, Program())
    other_node = await create(h, Program(), **{L.NODE: f"{h.node}-x"})
    unmanaged = await create(h, Program(), **{L.MANAGED: "0"})
    ids = {c.id for c in await h.rt.list_containers()}
    assert {mine, other_pod} <= ids and not {other_node, unmanaged} & ids
    assert [c.id for c in await h.rt.list_containers(pod_uid=uid)] == [mine]
    for cid in (other_node, unmanaged):
        await h.rt.remove_container(cid)


async def test_remove_is_forced_and_idempotent(h: Harness) -> None:
    cid = await create(h, Program(exit_code=None))
    await h.rt.start_container(cid)
    await h.until(cid, lambda c: c.state == RunState.RUNNING, "the container running")
    await h.rt.remove_container(cid)
    assert await info_of(h.rt, cid) is None and not await h.rt.is_running(cid)
    await h.rt.remove_container(cid)  # gone already: not an error
    with pytest.raises(EngineError):
        await read_logs(h.rt, cid)


async def test_what_the_engine_refuses(h: Harness) -> None:
    image, cmd = h.image_for(Program())
    spec = CreateSpec(name=f"{h.node}-dup", image=image, labels=labels(h, "u", "app"), cmd=cmd or None)
    first = await h.rt.create_container(spec)
    # The name is taken: by a container of an earlier attempt whose create the agent did not
    # see through (it crashed in between). It is replaced, not refused.
    second = await h.rt.create_container(spec)
    assert second != first
    assert [c.id for c in await h.rt.list_containers(pod_uid="u")] == [second]
    missing = CreateSpec(name=f"{h.node}-missing", image="cowpod/no-such-image:1", labels=labels(h, "u", "b"))
    with pytest.raises(ImageError) as err:
        await h.rt.create_container(missing)
    assert err.value.reason == "ErrImageNotFound"
    assert not await h.rt.image_present("cowpod/no-such-image:1")
    assert await h.rt.image_present(image)
    with pytest.raises(EngineError):
        await h.rt.start_container("0" * 64)


# -- volumes --------------------------------------------------------------------------------------


async def test_volumes_are_listed_by_node_and_removed_idempotently(h: Harness) -> None:
    mine = f"{h.node}-vol"
    other = f"{h.node}-other"
    lab = {L.MANAGED: "1", L.NODE: h.node, L.TEST: "1", L.VOLUME_NAME: "data"}
    await h.rt.ensure_volume(mine, lab, tmpfs=False, size=0)
    await h.rt.ensure_volume(mine, lab, tmpfs=False, size=0)  # again: nothing changes
    await h.rt.ensure_volume(other, {**lab, L.NODE: f"{h.node}-x"}, tmpfs=False, size=0)
    try:
        listed = dict(await h.rt.list_volumes())
        assert mine in listed and other not in listed
        assert listed[mine][L.VOLUME_NAME] == "data"
        await h.rt.remove_volume(mine)
        assert mine not in dict(await h.rt.list_volumes())
        await h.rt.remove_volume(mine)  # gone already: not an error
    finally:
        await h.rt.remove_volume(other)
