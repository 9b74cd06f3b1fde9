"""The reconcile driver on a fake clock: dirty keys, one worker per key, back-off,
resync, stale passes, readiness. Nothing sleeps for real."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import pytest
from prometheus_client import CollectorRegistry

from cowpod.backoff import Backoff
from cowpod.clock import FakeClock
from cowpod.errors import Unavailable
from cowpod.reconcile import Dirty, Driver, Requeue


class Loop:
    """A reconciler over a dict `want` (key -> action): plans the dirty keys' actions,
    records what it executes; execution can be held or made to fail per key."""

    def __init__(self) -> None:
        self.want: dict[str, str] = {}
        self.executed: list[tuple[str, tuple[str, ...]]] = []
        self.planned: list[Dirty[str]] = []
        self.hold: dict[str, asyncio.Event] = {}
        self.fail: dict[str, int] = {}  # key -> failures still to raise
        self.leading = True
        self.running: set[str] = set()
        self.max_running = 0
        self.during_observe: Callable[[], object] | None = None
        self.plan_raises = 0

    def ready(self) -> bool:
        return self.leading

    async def observe(self) -> dict[str, str]:
        if self.during_observe is not None:
            await asyncio.sleep(0)
            self.during_observe()
            for _ in range(5):
                await asyncio.sleep(0)
        return dict(self.want)

    def plan(self, state: dict[str, str], dirty: Dirty[str]) -> Mapping[str, Sequence[str | Requeue]]:
        self.planned.append(dirty)
        if self.plan_raises:
            self.plan_raises -= 1
            raise RuntimeError("a bug in plan")
        return {k: [v] for k, v in state.items()}  # the whole world; the driver keeps the dirty keys

    async def execute(self, key: str, actions: Sequence[str]) -> None:
        self.running.add(key)
        self.max_running = max(self.max_running, len(self.running))
        try:
            self.executed.append((key, tuple(actions)))
            if key in self.hold:
                await self.hold[key].wait()
            if self.fail.get(key, 0) > 0:
                self.fail[key] -= 1
                raise Unavailable(f"{key}: not now")
        finally:
            self.running.discard(key)


class Source:
    def __init__(self, synced: bool = True) -> None:
        self.synced = synced
        self._ev = asyncio.Event()
        if synced:
            self._ev.set()

    def sync(self) -> None:
        self.synced = True
        self._ev.set()

    async def wait_synced(self) -> None:
        await self._ev.wait()

    async def run(self) -> None:
        await asyncio.Event().wait()


async def settle() -> None:
    """Let every runnable task run (no time passes on the fake clock)."""
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Driver[str, dict[str, str], str]], None]]:
    tasks: list[asyncio.Task[None]] = []

    def start(d: Driver[str, dict[str, str], str]) -> None:
        tasks.append(asyncio.ensure_future(d.run()))

    yield start
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def driver(loop: Loop, clock: FakeClock, **kw: object) -> Driver[str, dict[str, str], str]:
    return Driver(loop, clock, name="test", registry=CollectorRegistry(), **kw)  # type: ignore[arg-type]


async def test_sync_runs_only_the_dirty_keys_actions() -> None:
    loop, clock = Loop(), FakeClock()
    loop.want = {"a": "make-a", "b": "make-b"}
    d = driver(loop, clock)
    d.mark("a")
    assert await d.sync() == {"a": ["make-a"]}
    assert loop.executed == [("a", ("make-a",))]
    assert await d.sync() == {}  # nothing dirty any more
    d.mark_all()
    assert set(await d.sync()) == {"a", "b"}
    assert loop.planned[-1].everything


async def test_the_first_pass_waits_for_every_source_and_sees_everything(running) -> None:  # type: ignore[no-untyped-def]
    loop, clock = Loop(), FakeClock()
    loop.want = {"a": "x"}
    src = Source(synced=False)
    d = driver(loop, clock, sources=[src])
    running(d)
    await settle()
    assert loop.planned == []
    src.sync()
    await settle()
    assert loop.planned and loop.planned[0].everything
    assert loop.executed == [("a", ("x",))]


async def test_a_key_is_never_worked_twice_at_once(running) -> None:  # type: ignore[no-untyped-def]
    loop, clock = Loop(), FakeClock()
    loop.want = {"a": "x", "b": "y"}
    loop.hold["a"] = asyncio.Event()
    d = driver(loop, clock, sources=[Source()])
    running(d)
    await settle()
    assert d.in_flight == {"a"}
    # Marked again and again while its first work runs: planned, not started twice.
    for _ in range(3):
        d.mark("a")
        d.mark("b")
        await settle()
    assert [k for k, _ in loop.executed].count("a") == 1
    assert [k for k, _ in loop.executed].count("b") == 4
    assert "a" in d.dirty
    loop.hold["a"].set()
    await settle()
    # Once done, the key that was marked meanwhile is planned and worked again.
    assert [k for k, _ in loop.executed].count("a") == 2
    assert d.in_flight == frozenset() and d.dirty == frozenset()


async def test_a_failing_key_backs_off_on_the_clock_and_others_go_on(running) -> None:  # type: ignore[no-untyped-def]
    loop, clock = Loop(), FakeClock()
    loop.want = {"a": "x", "b": "y"}
    loop.fail["a"] = 2
    d = driver(loop, clock, sources=[Source()], backoff=Backoff(initial=1.0, cap=10.0))
    running(d)
    await settle()
    assert [k for k, _ in loop.executed] == ["a", "b"]
    d.mark("a")  # a change does not cut the back-off short
    await settle()
    await clock.advance(0.9)
    assert [k for k, _ in loop.executed].count("a") == 1
    await clock.advance(0.1)
    assert [k for k, _ in loop.executed].count("a") == 2  # failed again: now 2 s
    await clock.advance(1.9)
    assert [k for k, _ in loop.executed].count("a") == 2
    await clock.advance(0.1)
    assert [k for k, _ in loop.executed].count("a") == 3  # succeeded
    assert d.backoff.failures("a") == 0
    await clock.advance(100)
    assert [k for k, _ in loop.executed].count("a") == 3  # no resync set: nothing more
    assert d.metrics.work.labels("test", "error")._value.get() == 2


async def test_resync_plans_everything_every_period(running) -> None:  # type: ignore[no-untyped-def]
    loop, clock = Loop(), FakeClock()
    d = driver(loop, clock, sources=[Source()], resync_seconds=30.0)
    running(d)
    await settle()
    first = len(loop.planned)
    loop.want = {"orphan": "destroy"}  # something no watch reported
    await clock.advance(29)
    assert loop.executed == []
    await clock.advance(1)
    assert loop.executed == [("orphan", ("destroy",))]
    assert len(loop.planned) == first + 1 and loop.planned[-1].everything


async def test_a_key_finishing_while_observe_runs_is_left_to_the_next_pass() -> None:
    loop, clock = Loop(), FakeClock()
    loop.want = {"a": "x"}
    d = driver(loop, clock)
    d.mark("a")
    loop.hold["a"] = asyncio.Event()
    first = asyncio.ensure_future(d.sync())
    await settle()
    assert d.in_flight == {"a"}
    # The next pass's observe straddles the end of a's work: what it saw of a is stale.
    d.mark_all()
    loop.during_observe = loop.hold["a"].set
    await d.sync()
    await first
    assert [k for k, _ in loop.executed] == ["a"]
    assert "a" in d.dirty
    loop.during_observe = None
    await d.sync()
    assert [k for k, _ in loop.executed] == ["a", "a"]


async def test_a_pass_that_raises_is_retried_after_a_back_off(running) -> None:  # type: ignore[no-untyped-def]
    loop, clock = Loop(), FakeClock()
    loop.want = {"a": "x"}
    loop.plan_raises = 1
    d = driver(loop, clock, sources=[Source()], pass_backoff=Backoff(initial=5.0, cap=5.0))
    running(d)
    await settle()
    assert loop.executed == [] and len(loop.planned) == 1
    await clock.advance(4.9)
    assert loop.executed == []
    await clock.advance(0.1)
    assert loop.executed == [("a", ("x",))]
    assert d.metrics.pass_errors.labels("test")._value.get() == 1


async def test_no_pass_while_not_ready_and_no_spinning(running) -> None:  # type: ignore[no-untyped-def]
    loop, clock = Loop(), FakeClock()
    loop.want = {"a": "x"}
    loop.leading = False
    d = driver(loop, clock, sources=[Source()], resync_seconds=10.0)
    running(d)
    await settle()
    assert loop.planned == []
    loop.leading = True
    d.wake()
    await settle()
    assert loop.executed == [("a", ("x",))]


async def test_requeue_after_success_confirms_from_fresh_state(running) -> None:  # type: ignore[no-untyped-def]
    loop, clock = Loop(), FakeClock()
    loop.want = {"a": "x"}
    loop.hold["a"] = asyncio.Event()
    d = driver(loop, clock, sources=[Source()], requeue_after_success=True)
    running(d)
    await settle()
    loop.want = {}  # the effect is now visible: the confirming pass has nothing to do
    loop.hold["a"].set()
    await settle()
    assert loop.executed == [("a", ("x",))]
    assert loop.planned[-1] == Dirty(frozenset({"a"}))


async def test_max_in_flight_caps_keys_executing_at_once() -> None:
    loop, clock = Loop(), FakeClock()
    loop.want = {k: k for k in "abcdef"}
    gate = asyncio.Event()
    for k in "abcdef":
        loop.hold[k] = gate
    d = driver(loop, clock, max_in_flight=2)
    d.mark_all()
    done = asyncio.ensure_future(d.sync())
    await settle()
    assert loop.max_running == 2
    gate.set()
    await done
    assert len(loop.executed) == 6 and loop.max_running == 2


class TimedLoop(Loop):
    """A loop whose keys turn due at a time (like a pod Ready for minReadySeconds): until
    then the plan of a key is only a `Requeue` for the moment it turns due."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.due_at: dict[str, float] = {}  # key -> monotonic time its action becomes due

    def plan(self, state: dict[str, str], dirty: Dirty[str]) -> Mapping[str, Sequence[str | Requeue]]:
        self.planned.append(dirty)
        now = self.clock.monotonic()
        out: dict[str, list[str | Requeue]] = {}
        for k, v in state.items():
            due = self.due_at.get(k, 0.0)
            out[k] = [Requeue(due - now)] if due > now else [v]
        return out


async def test_a_requeue_plans_the_key_again_at_its_time_without_a_resync(running) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    loop = TimedLoop(clock)
    loop.want = {"a": "available", "b": "other"}
    loop.due_at = {"a": 2.0}
    d = driver(loop, clock, sources=[Source()], resync_seconds=3600.0)
    running(d)
    await settle()
    assert loop.executed == [("b", ("other",))]  # a's only "action" is a note: no work started
    assert d.requeued == {"a": 2.0}
    passes = len(loop.planned)
    await clock.advance(1.9)
    assert len(loop.planned) == passes and loop.executed == [("b", ("other",))]
    await clock.advance(0.1)
    assert loop.planned[-1] == Dirty(frozenset({"a"}))  # only a, not a resync
    assert loop.executed == [("b", ("other",)), ("a", ("available",))]
    assert d.requeued == {}
    await clock.advance(100)
    assert len(loop.planned) == passes + 1  # nothing else is planned until the resync


async def test_the_earliest_requeue_wins_and_a_new_plan_replaces_it(running) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    loop = TimedLoop(clock)
    loop.want = {"a": "x"}
    loop.due_at = {"a": 10.0}
    d = driver(loop, clock, sources=[Source()])
    running(d)
    await settle()
    assert d.requeued == {"a": 10.0}
    d.requeue_after("a", 20.0)  # later than pending: ignored
    assert d.requeued == {"a": 10.0}
    d.requeue_after("a", 3.0)  # earlier: wins, and the key is planned then
    await settle()
    assert d.requeued == {"a": 3.0}
    await clock.advance(3.0)
    # That pass's plan restated the key's own time; nothing ran yet.
    assert loop.planned[-1] == Dirty(frozenset({"a"})) and d.requeued == {"a": 10.0}
    # A change moves the due time earlier; the pass it causes replaces the pending requeue.
    loop.due_at["a"] = 5.0
    d.mark("a")
    await settle()
    assert d.requeued == {"a": 5.0}
    await clock.advance(2.0)
    assert loop.executed == [("a", ("x",))] and d.requeued == {}
    assert d.metrics.requeued.labels("test")._value.get() == 0


async def test_forget_drops_a_pending_requeue(running) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    loop = TimedLoop(clock)
    loop.want = {"a": "x"}
    loop.due_at = {"a": 5.0}
    d = driver(loop, clock, sources=[Source()])
    running(d)
    await settle()
    assert d.requeued == {"a": 5.0}
    loop.want = {}
    d.forget("a")
    passes = len(loop.planned)
    await clock.advance(10.0)
    assert d.requeued == {} and len(loop.planned) == passes


async def test_sync_keeps_requeues_out_of_what_it_executes() -> None:
    clock = FakeClock()
    loop = TimedLoop(clock)
    loop.want = {"a": "x", "b": "y"}
    loop.due_at = {"a": 1.0}
    d = driver(loop, clock)
    d.mark_all()
    assert await d.sync() == {"b": ["y"]}
    await clock.advance(1.0)
    assert await d.sync() == {"a": ["x"]}  # due: promoted into the pass
