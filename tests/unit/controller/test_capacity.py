"""Capacity arithmetic for binds (controller.capacity), the per-node index kept from the pods
watch (controller.node_usage) and how bindings are cut into etcd transactions."""

from __future__ import annotations

import pytest

from controller.autoscaler.observe import pod_requests as autoscaler_pod_requests
from controller.binder import _Item, _NodeWork, pack_nodes
from controller.capacity import Resources, allocatable, counts, pod_requests, shared_spec_requests, shortfall
from controller.memstore import MemoryStore
from controller.node_usage import NodeUsage, bindseq_key
from controller.pods import qos_class
from controller.store import EventType, Put, RawEvent
from controller.watch import HubEvent
from cowpod.v1 import node_pb2, pod_pb2
from scheduler.convert import pod_requests as scheduler_pod_requests

Mi = 1 << 20


def spec(*containers: tuple[int, int], init: tuple[tuple[int, int], ...] = ()) -> pod_pb2.PodSpec:
    s = pod_pb2.PodSpec()
    for cpu, mem in containers:
        c = s.containers.add(name="c", image="i")
        c.resources.requests.cpu_millis, c.resources.requests.memory_bytes = cpu, mem
    for cpu, mem in init:
        c = s.init_containers.add(name="i", image="i")
        c.resources.requests.cpu_millis, c.resources.requests.memory_bytes = cpu, mem
    return s


def test_requests_sum_app_containers_and_take_the_largest_init_container() -> None:
    assert pod_requests(spec((100, 64 * Mi), (200, 64 * Mi))) == Resources(300, 128 * Mi, 1)
    assert pod_requests(spec((100, 64 * Mi), init=((500, 32 * Mi),))) == Resources(500, 64 * Mi, 1)
    assert pod_requests(spec()) == Resources(0, 0, 1)


def test_the_remembered_requests_are_the_rules_answer_for_every_spec() -> None:
    """`shared_spec_requests` (the binder's) remembers by the spec's bytes: a spec changed in
    place, a different one, and map order give the rule's answer, never a neighbour's."""
    specs = [spec((100, 64 * Mi)), spec((100, 64 * Mi), (200, 64 * Mi)), spec(), spec((0, 0)),
             spec((100, 64 * Mi), init=((500, 32 * Mi),)), spec(init=((7, 7),))]
    limited = spec((100, 64 * Mi))
    extra = limited.containers.add(name="limited", image="i")
    extra.resources.limits.cpu_millis, extra.resources.limits.ephemeral_storage_bytes = 400, 9 * Mi
    specs.append(limited)
    for _ in range(2):  # the second round answers from the memo
        for s in specs:
            assert shared_spec_requests(s) == pod_requests(s)
    changing = spec((100, 64 * Mi))
    assert shared_spec_requests(changing) == Resources(100, 64 * Mi, 1)
    changing.containers[0].resources.requests.cpu_millis = 300  # the same object, changed
    assert shared_spec_requests(changing) == Resources(300, 64 * Mi, 1)
    a, b = spec((100, 64 * Mi)), spec((100, 64 * Mi))
    a.node_selector.update({"x": "1", "y": "2"})
    b.node_selector.update({"y": "2", "x": "1"})
    assert shared_spec_requests(a) == shared_spec_requests(b) == pod_requests(a)


def test_a_limit_without_a_request_is_reserved_by_the_bind_check_and_the_scheduler() -> None:
    s = spec((100, 64 * Mi))
    extra = s.containers.add(name="limited", image="i")
    extra.resources.limits.cpu_millis, extra.resources.limits.memory_bytes = 400, 32 * Mi
    assert pod_requests(s) == Resources(500, 96 * Mi, 1)
    # The scheduler and the autoscaler count it the same way (one rule, cowpod.api.resources).
    got = scheduler_pod_requests(s)
    assert (got.cpu_millis, got.memory_bytes) == (500, 96 * Mi)
    assert autoscaler_pod_requests(s).cpu_millis == 500


def test_ephemeral_storage_is_reserved_like_memory_by_every_user_of_the_rule() -> None:
    """One rule (cowpod.api.resources): request, else limit; apps summed, largest init container."""
    s = pod_pb2.PodSpec()
    a = s.containers.add(name="a", image="i")
    a.resources.requests.ephemeral_storage_bytes = 100 * Mi
    b = s.containers.add(name="b", image="i")
    b.resources.limits.ephemeral_storage_bytes = 50 * Mi  # a limit alone counts as the request
    assert pod_requests(s) == Resources(0, 0, 1, 150 * Mi)
    assert scheduler_pod_requests(s).ephemeral_storage_bytes == 150 * Mi
    init = s.init_containers.add(name="i", image="i")
    init.resources.requests.ephemeral_storage_bytes = 400 * Mi
    assert pod_requests(s).ephemeral_storage_bytes == 400 * Mi
    n = node_pb2.Node()
    n.status.allocatable.ephemeral_storage_bytes = 10 << 30
    assert allocatable(n).ephemeral_storage_bytes == 10 << 30


@pytest.mark.parametrize(("node", "phase", "want"), [
    ("n1", "Pending", True), ("n1", "Running", True), ("n1", "Succeeded", False),
    ("n1", "Failed", False), ("", "Pending", False),
])
def test_a_pod_counts_while_bound_and_not_terminal(node: str, phase: str, want: bool) -> None:
    p = pod_pb2.Pod(spec=pod_pb2.PodSpec(node_name=node), status=pod_pb2.PodStatus(phase=phase))
    assert counts(p) is want


def test_allocatable_falls_back_to_capacity_and_defaults_the_pod_count() -> None:
    n = node_pb2.Node()
    n.status.capacity.cpu_millis = 4000
    assert allocatable(n) == Resources(4000, 0, 110)
    n.status.allocatable.cpu_millis = 3500
    n.status.allocatable.pods = 20
    assert allocatable(n) == Resources(3500, 0, 20)


ALLOC = Resources(1000, 1024 * Mi, 3, 2048 * Mi)


@pytest.mark.parametrize(("used", "want", "why"), [
    (Resources(500, 512 * Mi, 1), Resources(500, 512 * Mi, 1), None),  # exactly full fits
    (Resources(500, 768 * Mi, 1), Resources(100, 512 * Mi, 1),
     "node n1 has insufficient memory (requested 512Mi, free 256Mi)"),
    (Resources(900, 0, 1), Resources(200, 0, 1), "node n1 has insufficient cpu (requested 200m, free 100m)"),
    (Resources(0, 0, 3), Resources(0, 0, 1), "node n1 has too many pods (allocatable 3, bound 3)"),
    # Zero requests are never refused, even on an overcommitted node; the pod count always is.
    (Resources(1500, 2048 * Mi, 1), Resources(0, 0, 1), None),
    (Resources(1500, 0, 1), Resources(1000, 0, 1), "node n1 has insufficient cpu (requested 1, free 0)"),
    (Resources(0, 0, 1, 1536 * Mi), Resources(0, 0, 1, 1024 * Mi),
     "node n1 has insufficient ephemeral-storage (requested 1Gi, free 512Mi)"),
    (Resources(0, 0, 1, 1024 * Mi), Resources(0, 0, 1, 1024 * Mi), None),  # exactly full fits
    (Resources(0, 0, 1, 4096 * Mi), Resources(0, 0, 1), None),  # no disk request: never refused
])
def test_shortfall(used: Resources, want: Resources, why: str | None) -> None:
    assert shortfall("n1", ALLOC, used, want) == why


def test_a_node_that_reports_no_disk_is_not_checked_for_it() -> None:
    assert shortfall("n1", Resources(1000, 1024 * Mi, 3), Resources(), Resources(0, 0, 1, 1 << 40)) is None


# --- the index kept from the watch ----------------------------------------------------------------


def pod_bytes(node: str, cpu: int, phase: str = "Pending") -> bytes:
    p = pod_pb2.Pod(spec=spec((cpu, 0)), status=pod_pb2.PodStatus(phase=phase))
    p.spec.node_name = node
    return p.SerializeToString()


def event(key: str, value: bytes | None, rev: int) -> HubEvent:
    raw = RawEvent(EventType.DELETE if value is None else EventType.PUT, key, value or b"", None, rev, 1)
    return HubEvent(raw, pod_pb2.Pod, pod_pb2.PodWatchEvent)


def test_usage_follows_binds_moves_terminal_pods_and_deletes() -> None:
    u = NodeUsage(MemoryStore())
    u.observe(event("registry/pods/default/a", pod_bytes("", 100), 5))  # pending: nothing
    assert u.used("n1") == Resources()
    u.observe(event("registry/pods/default/a", pod_bytes("n1", 100), 6))  # bound
    u.observe(event("registry/pods/default/b", pod_bytes("n1", 300), 7))  # created bound
    assert u.used("n1") == Resources(400, 0, 2)
    assert u.seq("n1") == 7  # arrivals are binding-sequence bumps
    u.observe(event("registry/pods/default/a", pod_bytes("n1", 100, "Running"), 8))  # status only
    assert u.used("n1") == Resources(400, 0, 2) and u.seq("n1") == 7
    u.observe(event("registry/pods/default/a", pod_bytes("n1", 100, "Succeeded"), 9))
    assert u.used("n1") == Resources(300, 0, 1)
    u.observe(event("registry/pods/default/b", None, 10))
    assert u.used("n1") == Resources()
    u.note_seq("n1", 4)  # never backwards
    assert u.seq("n1") == 7


async def test_resync_lists_pods_and_binding_sequences() -> None:
    store = MemoryStore()
    await store.txn([], [Put("registry/pods/default/a", pod_bytes("n1", 250)),
                         Put("registry/pods/default/b", pod_bytes("n2", 100, "Failed")),
                         Put(bindseq_key("n1"), b"x")])
    u = NodeUsage(store)
    rev = await u.resync()
    assert rev == store.revision
    assert u.used("n1") == Resources(250, 0, 1) and u.used("n2") == Resources()
    assert u.seq("n1") == rev and u.seq("n2") == 0


# --- packing bindings into transactions -----------------------------------------------------------


def work(name: str, n: int) -> _NodeWork:
    items = [_Item(i, f"default/p{i}", f"k{i}", 1, pod_pb2.Pod(), b"", Resources(), pod_pb2.Binding())
             for i in range(n)]
    return _NodeWork(name, f"registry/nodes/{name}", 1, Resources(), items)


def test_pack_nodes_respects_etcds_operation_limit() -> None:
    works = [work(f"n{i}", 1) for i in range(100)]
    pending = {w.name: w for w in works}
    packs = pack_nodes(works, pending, max_ops=128)
    assert pending == {}
    assert [sum(len(w.items) + 2 for w in p) for p in packs] == [126, 126, 48]
    assert sum(len(p) for p in packs) == 100


def test_a_node_with_more_pods_than_a_transaction_keeps_the_rest_pending() -> None:
    big = work("big", 300)
    pending = {"big": big}
    packs = pack_nodes([big], pending, max_ops=128)
    assert [len(p[0].items) for p in packs] == [126]
    assert len(pending["big"].items) == 174


def qos_spec(*containers: tuple[int, int, int, int]) -> pod_pb2.PodSpec:
    s = pod_pb2.PodSpec()
    for rc, rm, lc, lm in containers:
        c = s.containers.add(name="c", image="i")
        c.resources.requests.cpu_millis, c.resources.requests.memory_bytes = rc, rm
        c.resources.limits.cpu_millis, c.resources.limits.memory_bytes = lc, lm
    return s


@pytest.mark.parametrize(("containers", "want"), [
    ([(0, 0, 0, 0)], "BestEffort"),
    ([(100, Mi, 100, Mi)], "Guaranteed"),
    ([(0, 0, 100, Mi)], "Guaranteed"),  # requests default to limits
    ([(100, Mi, 200, Mi)], "Burstable"),
    ([(100, Mi, 0, 0)], "Burstable"),
    ([(100, Mi, 100, Mi), (0, 0, 0, 0)], "Burstable"),
])
def test_qos_class(containers: list[tuple[int, int, int, int]], want: str) -> None:
    assert qos_class(qos_spec(*containers)) == want
