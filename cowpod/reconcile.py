"""One reconcile driver: watch → dirty keys → plan (pure) → execute, with per-key
back-off, periodic resync and never two workers on one key.

Every control loop in cowpod (the ReplicaSet controller, the VM manager, the
autoscaler, the workload controllers) has the same shape, so it is written once
here; a loop supplies only what is its own:

    sources (informers) ── handlers call driver.mark(key) / mark_all() ──┐
                                                                         ▼
      resync tick ── mark_all() ──►  dirty keys (+ "everything")   ◄── a key's work ended
                                          │  (keys in flight or backing off wait here)
                                          ▼  one pass, when every source has synced and ready()
                  state = await reconciler.observe()        I/O allowed (e.g. list the hypervisor)
                  plan  = reconciler.plan(state, dirty)     pure: {key: [action, ..., Requeue(after)]}
                                          │                       (Requeue: back into dirty keys
                                          ▼  one task per key       `after` seconds on, not executed)
                  await reconciler.execute(key, actions)    ok: back-off forgotten (and key marked
                                                            again with requeue_after_success)
                                                            raised: key backs off, then is planned again

The rules, taken from Kubernetes' workqueue (dirty and processing sets, a
rate-limited re-add) and kopf (one worker per object):

- **in flight**: a key whose actions are running. It is never planned into a
  second worker; marking it meanwhile keeps it dirty, and it is planned again
  once its work ends.
- **stale pass**: a key whose work ended while `observe` was running was
  observed (partly) before that work; its actions from that pass are dropped
  and it stays dirty for the next pass.
- **back-off**: a key whose `execute` raised waits `Backoff.delay(failures)`
  before it is planned again (the caller's constants); a success resets it.
  `observe`/`plan` raising backs the whole pass off the same way.
- **resync**: every `resync_seconds` every key is dirty ("everything"), which
  catches what no watch reports (a VM that died on its own, a lost event).
- **plan is asked about the dirty keys**: `plan(state, dirty)` may look at the
  whole world (a fit check does) but only actions of dirty keys are run.
- **requeue at a time**: a transition that only time brings (a pod Ready for
  `minReadySeconds`, a progress or active deadline, a TTL) is announced by no
  watch event, so a plan returns `Requeue(after)` among a key's actions: the
  key is dirty again `after` seconds on (the driver's clock), without waiting
  for a resync (Kubernetes' `AddAfter`). It is never executed; a key whose only
  action is a `Requeue` starts no work. Per key the earliest pending time wins,
  and a pass that plans the key drops its pending time (that plan restates it
  if still needed). `requeue_after(key, seconds)` does the same from outside a plan.

Use (the workload controllers start from `controller/replicaset.py`):

    class MyLoop:                                    # implements `Reconciler[Key, State, Action]`
        def __init__(self, watches: Watches, clock: Clock) -> None:
            self.things = Informer(watches.things, handler=self._on_thing, clock=clock)
            self.driver = Driver(self, clock, name="my-loop", sources=(self.things,),
                                 backoff=Backoff(initial=0.5, cap=30.0), resync_seconds=30.0)
        async def _on_thing(self, type_: int, obj: Thing) -> None:
            self.driver.mark(key_of(obj))            # cheap: bookkeeping and marking only
        def ready(self) -> bool: return True         # e.g. "this process leads"
        async def observe(self) -> State: ...        # a snapshot of the caches (+ any listing)
        def plan(self, state: State, dirty: Dirty[Key]) -> Mapping[Key, Sequence[Action | Requeue]]: ...
        async def execute(self, key: Key, actions: Sequence[Action]) -> None: ...  # raise to back off
    await loop.driver.run()                          # until cancelled; owns the sources' tasks

Tests drive a pass with `await driver.sync()` (executes inline, returns what ran)
or run `driver.run()` on a `FakeClock` and advance it; nothing sleeps for real.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge

from cowpod.backoff import Backoff, KeyedBackoff, Retry
from cowpod.clock import Clock
from cowpod.errors import CowpodError

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
S = TypeVar("S")
A = TypeVar("A")
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)

# The back-off of a key whose work failed, unless the loop gives its own.
DEFAULT_BACKOFF = Backoff(initial=0.5, cap=30.0)


@dataclass(frozen=True)
class Dirty(Generic[K]):
    """The keys a pass is about: `keys`, or every key there is when `everything` (a resync)."""

    keys: frozenset[K]
    everything: bool = False

    def __contains__(self, key: object) -> bool:
        return self.everything or key in self.keys


@dataclass(frozen=True)
class Requeue:
    """Not an action but a note a plan returns among a key's actions: plan this key again
    `after` seconds from now on the driver's clock, even if nothing marks it (see "requeue at
    a time" above). A plan returns it only for a moment still ahead (`after` > 0): one that
    returned it again and again for a moment already past would plan the key in a loop."""

    after: float


class Source(Protocol):
    """What feeds dirty keys: an `Informer` (its handler marks keys). The driver runs it
    and plans nothing until every source has `synced` (an empty cache must never read
    as "nothing exists")."""

    @property
    def synced(self) -> bool: ...

    async def wait_synced(self) -> None: ...

    async def run(self) -> None: ...


class Reconciler(Protocol[K, S, A]):
    """The part of a control loop that is its own; see the module docstring."""

    def ready(self) -> bool:
        """May a pass run now (e.g. this process holds the lease)? Checked before every pass."""

    async def observe(self) -> S:
        """The state a pass plans from (caches; may do I/O such as listing a provider)."""

    def plan(self, state: S, dirty: Dirty[K]) -> Mapping[K, Sequence[A | Requeue]]:
        """Pure: the actions for each dirty key, and when to look at a key again (`Requeue`)."""

    async def execute(self, key: K, actions: Sequence[A]) -> None:
        """Carry out one key's actions; raise to have the key backed off and retried."""


class ReconcileMetrics:
    """Per loop (label `controller`): passes, work done and failed, keys waiting and in flight.
    One set per registry, shared by every driver on it (`for_registry`)."""

    _by_registry: weakref.WeakKeyDictionary[CollectorRegistry, ReconcileMetrics] = weakref.WeakKeyDictionary()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.passes = Counter("cowpod_reconcile_passes", "Reconcile passes planned", ["controller"],
                              registry=registry)
        self.pass_errors = Counter("cowpod_reconcile_pass_errors", "Passes whose observe or plan raised",
                                   ["controller"], registry=registry)
        self.work = Counter("cowpod_reconcile_work", "Keys whose actions were executed, by outcome",
                            ["controller", "outcome"], registry=registry)
        self.dirty = Gauge("cowpod_reconcile_dirty_keys", "Keys waiting to be planned", ["controller"],
                           registry=registry)
        self.in_flight = Gauge("cowpod_reconcile_in_flight_keys", "Keys whose actions are running",
                               ["controller"], registry=registry)
        self.backing_off = Gauge("cowpod_reconcile_backing_off_keys", "Keys whose last work failed",
                                 ["controller"], registry=registry)
        self.requeued = Gauge("cowpod_reconcile_requeued_keys",
                              "Keys a plan asked to look at again at a later time (Requeue)", ["controller"],
                              registry=registry)

    @classmethod
    def for_registry(cls, registry: CollectorRegistry | None) -> ReconcileMetrics:
        if registry is None:
            return cls(CollectorRegistry())
        m = cls._by_registry.get(registry)
        if m is None:
            m = cls._by_registry[registry] = cls(registry)
        return m


class Driver(Generic[K, S, A]):
    """Runs one `Reconciler`. `run()` until cancelled; the handlers of its sources mark keys."""

    def __init__(
        self,
        reconciler: Reconciler[K, S, A],
        clock: Clock,
        *,
        name: str,
        sources: Sequence[Source] = (),
        resync_seconds: float = 0.0,
        resync_keys: Callable[[], Iterable[K]] | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        pass_backoff: Backoff | None = None,
        batch_window: float = 0.0,
        max_in_flight: int = 0,
        requeue_after_success: bool = False,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """`resync_seconds` 0: no periodic resync; `resync_keys`: the keys a resync marks
        (default: everything, which also plans keys the caches do not know, such as a
        provider's orphans). `batch_window`: wait this long after a
        wake-up so a burst of changes is planned once. `max_in_flight` 0: no cap on keys
        executing at once. `requeue_after_success`: plan a key again after its work ends
        (its effect is then confirmed from fresh state)."""
        self.reconciler = reconciler
        self.clock = clock
        self.name = name
        self.sources = tuple(sources)
        self.resync_seconds = resync_seconds
        self._resync_keys = resync_keys
        self.batch_window = batch_window
        self.requeue_after_success = requeue_after_success
        self.backoff: KeyedBackoff[K] = KeyedBackoff(backoff, clock)
        self._pass_retry = Retry(pass_backoff or backoff, clock)
        self._pass_not_before = 0.0
        self._sem = asyncio.Semaphore(max_in_flight) if max_in_flight > 0 else None
        self.metrics = ReconcileMetrics.for_registry(registry)
        self._dirty: set[K] = set()
        self._everything = False
        self._in_flight: set[K] = set()
        self._finished: set[K] = set()
        # key -> when (monotonic) it is dirty again: Requeue notes and requeue_after.
        self._requeue: dict[K, float] = {}
        self._wake = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        # Completed passes (observe + plan); tests wait on it.
        self.passes = 0

    # ---- marking (cheap; called from informer handlers) ------------------------------------

    def mark(self, key: K) -> None:
        self._dirty.add(key)
        self._wake.set()

    def mark_many(self, keys: Iterable[K]) -> None:
        self._dirty.update(keys)
        self._wake.set()

    def mark_all(self) -> None:
        """Plan every key (a resync)."""
        self._everything = True
        self._wake.set()

    def forget(self, key: K) -> None:
        """`key` is gone for good: drop its back-off record and any pending requeue."""
        self.backoff.forget(key)
        self._requeue.pop(key, None)

    def requeue_after(self, key: K, seconds: float) -> None:
        """Mark `key` dirty `seconds` from now on the clock (the earliest pending time wins)."""
        self._requeue_at(key, self.clock.monotonic() + max(seconds, 0.0))
        self._wake.set()

    def _requeue_at(self, key: K, when: float) -> None:
        cur = self._requeue.get(key)
        if cur is None or when < cur:
            self._requeue[key] = when

    def _promote(self, now: float) -> None:
        """Keys whose requeue time has come become dirty."""
        due = [k for k, t in self._requeue.items() if t <= now]
        for k in due:
            del self._requeue[k]
        self._dirty.update(due)

    @property
    def requeued(self) -> Mapping[K, float]:
        """Pending requeues: key -> when (the clock's monotonic seconds)."""
        return dict(self._requeue)

    def wake(self) -> None:
        """Check for work now (e.g. leadership was just gained)."""
        self._wake.set()

    @property
    def in_flight(self) -> frozenset[K]:
        return frozenset(self._in_flight)

    @property
    def dirty(self) -> frozenset[K]:
        return frozenset(self._dirty)

    @property
    def synced(self) -> bool:
        return all(s.synced for s in self.sources)

    # ---- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the sources and the loop until cancelled; every task is owned here."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for i, src in enumerate(self.sources):
                    tg.create_task(src.run(), name=f"{self.name}/source-{i}")
                tg.create_task(self._loop(tg), name=f"{self.name}/loop")
        finally:
            self._tg = None

    async def sync(self) -> dict[K, Sequence[A]]:
        """One pass now, its work executed before returning (tests; a loop's `sync_once`).
        Ignores `ready()` and the sources' sync state: the caller decides."""
        return await self._pass(None)

    async def _loop(self, tg: asyncio.TaskGroup) -> None:
        # Nothing is planned from a cache that has not listed yet; the first pass sees everything
        # (startup reconciliation: what changed while no one was watching).
        await asyncio.gather(*(s.wait_synced() for s in self.sources))
        self._everything = True
        next_resync = self.clock.monotonic() + self.resync_seconds if self.resync_seconds > 0 else math.inf
        while True:
            now = self.clock.monotonic()
            if now >= next_resync:
                if self._resync_keys is None:
                    self.mark_all()
                else:
                    self.mark_many(set(self._resync_keys()))
                next_resync = now + self.resync_seconds
            self._promote(now)
            # Cleared before looking for work: a mark from here on sets it again.
            self._wake.clear()
            if self.synced and self.reconciler.ready() and self._has_work(now):
                if self.batch_window > 0:
                    await self.clock.sleep(self.batch_window)
                await self._pass(tg)
                continue
            await self._wait(min(next_resync, self._next_due(now)) - now)

    def _due(self, key: K, now: float) -> bool:
        return key not in self._in_flight and self.backoff.due(key) <= now

    def _has_work(self, now: float) -> bool:
        if now < self._pass_not_before:
            return False
        return self._everything or any(self._due(k, now) for k in self._dirty)

    def _next_due(self, now: float) -> float:
        """When a waiting key's back-off (or the pass's) ends or a requeue falls due; inf when
        nothing waits on time. Only future times: a loop that may not pass yet (not leading)
        must not spin."""
        dues = [self.backoff.due(k) for k in self._dirty if k not in self._in_flight]
        if self._everything or self._dirty:
            dues.append(self._pass_not_before)
        dues.extend(self._requeue.values())
        return min((d for d in dues if d > now), default=math.inf)

    async def _wait(self, timeout: float) -> None:
        """Until something is marked or `timeout` (on the clock) has passed."""
        if self._wake.is_set():
            return
        waiters: list[asyncio.Future[object]] = [asyncio.ensure_future(self._wake.wait())]
        if timeout != math.inf:
            waiters.append(asyncio.ensure_future(self.clock.sleep(max(timeout, 0.0))))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    def _gauges(self) -> None:
        m, n = self.metrics, self.name
        m.dirty.labels(n).set(len(self._dirty) + (1 if self._everything else 0))
        m.in_flight.labels(n).set(len(self._in_flight))
        m.backing_off.labels(n).set(len(self.backoff))
        m.requeued.labels(n).set(len(self._requeue))

    async def _pass(self, tg: asyncio.TaskGroup | None) -> dict[K, Sequence[A]]:
        now = self.clock.monotonic()
        self._promote(now)
        everything = self._everything
        take = {k for k in self._dirty if self._due(k, now)}
        self._everything = False
        self._dirty -= take
        dirty = Dirty(frozenset(take), everything)
        self._finished = set()
        try:
            state = await self.reconciler.observe()
            planned = self.reconciler.plan(state, dirty)
        except Exception:
            self._dirty |= take
            self._everything = self._everything or everything
            delay = self._pass_retry.next_delay()
            self._pass_not_before = self.clock.monotonic() + delay
            self.metrics.pass_errors.labels(self.name).inc()
            log.exception("%s: reconcile pass failed; retrying in %.1fs", self.name, delay)
            self._gauges()
            return {}
        self._pass_retry.reset()
        self._pass_not_before = 0.0
        self.passes += 1
        self.metrics.passes.labels(self.name).inc()
        # Taken after plan: a Requeue's `after` counts from the plan's view of now, so the key
        # is never looked at again before the moment the plan named.
        planned_at = self.clock.monotonic()
        for key in take:
            self._requeue.pop(key, None)  # this pass's plan restates it if still needed
        finished = self._finished
        started: dict[K, Sequence[A]] = {}
        inline = []
        for key, noted in planned.items():
            if not noted or key not in dirty:
                continue
            actions: list[A] = []
            for a in noted:
                if isinstance(a, Requeue):
                    self._requeue_at(key, planned_at + max(a.after, 0.0))
                else:
                    actions.append(a)
            if not actions:
                continue
            if key in self._in_flight or key in finished or not self.backoff.ready(key):
                self._dirty.add(key)  # planned again once its work ends / its back-off is over
                continue
            self._in_flight.add(key)
            started[key] = actions
            if tg is None:
                inline.append(self._work(key, actions))
            else:
                tg.create_task(self._work(key, actions), name=f"{self.name}/work/{key}")
        if started:
            log.debug("%s: pass %d: %d keys with work of %d dirty%s", self.name, self.passes, len(started),
                      len(take), " (everything)" if everything else "")
        self._gauges()
        if inline:
            await asyncio.gather(*inline)
        return started

    async def _work(self, key: K, actions: Sequence[A]) -> None:
        try:
            if self._sem is None:
                await self.reconciler.execute(key, actions)
            else:
                async with self._sem:
                    await self.reconciler.execute(key, actions)
        except Exception as err:
            delay = self.backoff.failed(key)
            self._dirty.add(key)
            self.metrics.work.labels(self.name, "error").inc()
            if isinstance(err, CowpodError | grpc.RpcError):
                log.warning("%s: %s failed (retry in %.1fs): %s", self.name, key, delay, err)
            else:
                log.exception("%s: %s failed (retry in %.1fs)", self.name, key, delay)
        else:
            self.backoff.forget(key)
            self.metrics.work.labels(self.name, "ok").inc()
            if self.requeue_after_success:
                self._dirty.add(key)
        finally:
            self._in_flight.discard(key)
            self._finished.add(key)
            self._gauges()
            self._wake.set()
