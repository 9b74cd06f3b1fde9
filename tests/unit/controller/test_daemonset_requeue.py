"""The DaemonSet loop asks the reconcile driver to look again when only time changes its plan
(`cowpod.reconcile.Requeue`): a pod Ready for `minReadySeconds` turning available, a failed
pod's back-off ending. Driven on a FakeClock, with the loop's gRPC calls recorded, so a pass
happens exactly when the driver says and no resync is needed (it is an hour away)."""

from __future__ import annotations

from typing import Any

from controller.daemonset import FAILED_POD_BACKOFF, DaemonSetController, daemonset_due_in
from controller.resource import set_time
from cowpod.clock import FakeClock
from cowpod.v1 import meta_pb2, pod_pb2, workload_pb2
from tests.unit.controller.test_daemonset_plan import make_ds, node, pod

KEY = ("default", "agent")


class _Service:
    """A service stub that records the requests of its calls."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def __getattr__(self, rpc: str) -> Any:
        async def call(req: Any, **_: Any) -> Any:
            self.sent.append((rpc, req))
            return req
        return call


class _Client:
    def __init__(self) -> None:
        self.daemonsets, self.pods, self.nodes, self.events = _Service(), _Service(), _Service(), _Service()

    async def call(self, fn: Any, req: Any, **_: Any) -> Any:
        return await fn(req)


def _statuses(c: _Client) -> list[workload_pb2.DaemonSetStatus]:
    return [req.status for rpc, req in c.daemonsets.sent if rpc == "UpdateStatus"]


async def _loop(clock: FakeClock, ds: workload_pb2.DaemonSet, pods: list[pod_pb2.Pod]) -> tuple[
        DaemonSetController, _Client]:
    c = _Client()
    ctl = DaemonSetController(c, clock, resync_seconds=3600.0)  # type: ignore[arg-type]
    ctl.owners.cache[KEY] = ds
    ctl.nodes.cache[("", "n1")] = node("n1")
    for p in pods:
        await ctl.pods.shared.deliver(meta_pb2.ADDED, p)  # the shared pod informer feeds the loop
    ctl.driver.mark(KEY)
    return ctl, c


async def test_a_pod_counts_available_once_ready_for_min_ready_seconds_without_a_resync() -> None:
    clock = FakeClock()
    ds = make_ds()
    ds.spec.min_ready_seconds = 5
    p = pod(ds, "a", "n1")
    set_time(p.status.conditions[0].last_transition_time, clock.now())  # Ready since now
    ctl, c = await _loop(clock, ds, [p])

    await ctl.driver.sync()
    assert [s.number_available for s in _statuses(c)] == [0]
    assert ctl.driver.requeued == {KEY: clock.monotonic() + 5}

    await clock.advance(4)
    assert await ctl.driver.sync() == {}  # not due yet: nothing planned
    await clock.advance(1)
    await ctl.driver.sync()
    assert [s.number_available for s in _statuses(c)] == [0, 1]
    assert ctl.driver.requeued == {}  # nothing more that only time brings


def test_due_in_names_the_next_moment_only_time_brings() -> None:
    now = 1_700_000_000.0
    ds = make_ds()
    ds.spec.min_ready_seconds = 30
    ready = pod(ds, "a", "n1")
    set_time(ready.status.conditions[0].last_transition_time, now - 10)
    assert daemonset_due_in(ds, [ready], now) == 20
    assert daemonset_due_in(ds, [ready], now + 20) is None  # available now: nothing ahead
    failed = pod(ds, "b", "n2")
    failed.status.phase = "Failed"
    set_time(failed.status.container_statuses.add(name="c").state.terminated.finished_at, now - 4)
    assert daemonset_due_in(ds, [ready, failed], now) == FAILED_POD_BACKOFF - 4
    ds.spec.min_ready_seconds = 0
    assert daemonset_due_in(ds, [ready], now) is None
