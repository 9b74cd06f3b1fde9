"""Object limits (INVALID_ARGUMENT with a field path) and rate limits (RESOURCE_EXHAUSTED)."""

from __future__ import annotations

import pytest

from controller.limits import Limits, RateLimiter, StreamCounter, TokenBucket, check_message, source_address
from cowpod.clock import FakeClock
from cowpod.errors import Invalid, ResourceExhausted
from cowpod.v1 import meta_pb2, pod_pb2

SMALL = Limits(
    max_object_bytes=10_000, max_labels=3, max_annotations_bytes=100, max_string_bytes=50, max_items=5,
    user_rate=2.0, user_burst=3, system_rate=100.0, system_burst=100, max_streams=2, max_clients=2,
)


def pod(**meta: object) -> pod_pb2.Pod:
    fields: dict[str, object] = {"name": "web", "namespace": "default", **meta}
    p = pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(**fields))  # type: ignore[arg-type]
    p.spec.containers.add(name="c", image="busybox")
    return p


def test_ordinary_pod_passes() -> None:
    check_message(pod(labels={"app": "web"}, annotations={"a": "b"}), SMALL)


@pytest.mark.parametrize(
    ("obj", "field", "reason"),
    [
        (pod(labels={f"k{i}": "v" for i in range(4)}), "metadata.labels", "at most 3 labels"),
        (pod(annotations={"a": "x" * 200}), "metadata.annotations", "annotations total"),
        (pod(name="x" * 51), "metadata.name", "no more than 50 bytes"),
    ],
)
def test_object_limits_name_the_field(obj: pod_pb2.Pod, field: str, reason: str) -> None:
    with pytest.raises(Invalid) as e:
        check_message(obj, SMALL)
    assert e.value.field == field
    assert reason in e.value.reason


def test_too_many_items_names_the_list() -> None:
    p = pod()
    for i in range(6):
        p.spec.containers.add(name=f"c{i}")
    with pytest.raises(Invalid) as e:
        check_message(p, SMALL)
    assert e.value.field == "spec.containers"


def test_nested_strings_have_paths() -> None:
    p = pod()
    p.spec.containers[0].env.add(name="X", value="v" * 51)
    with pytest.raises(Invalid) as e:
        check_message(p, SMALL)
    assert e.value.field == "spec.containers[0].env[0].value"


def test_giant_object_is_refused_by_size() -> None:
    lim = Limits(max_object_bytes=1000)
    p = pod(annotations={f"k{i}": "v" * 100 for i in range(20)})
    with pytest.raises(Invalid, match="the maximum is 1000 bytes"):
        check_message(p, lim)


def test_token_bucket_refills_with_time() -> None:
    b = TokenBucket(rate=1.0, burst=2, now=0.0)
    assert b.take(0.0) == 0.0
    assert b.take(0.0) == 0.0
    assert b.take(0.0) == pytest.approx(1.0)
    assert b.take(0.5) == pytest.approx(0.5)
    assert b.take(1.0) == 0.0


async def test_rate_limiter_per_client_with_fake_clock() -> None:
    clock = FakeClock()
    rl = RateLimiter(SMALL, clock)
    for _ in range(3):
        rl.check("alice")
    with pytest.raises(ResourceExhausted, match=r"rate limit for alice: 2 requests/s .*retry in 0.50s"):
        rl.check("alice")
    rl.check("bob")  # another client has its own bucket
    await clock.advance(0.5)
    rl.check("alice")
    with pytest.raises(ResourceExhausted):
        rl.check("alice")


async def test_system_clients_get_more_room() -> None:
    rl = RateLimiter(SMALL, FakeClock())
    for _ in range(50):
        rl.check("system:scheduler", system=True)


def test_rate_limiter_forgets_least_recent_clients() -> None:
    rl = RateLimiter(SMALL, FakeClock())
    for _ in range(3):
        rl.check("a")
    rl.check("b")
    rl.check("c")  # evicts "a": it starts over with a full bucket
    rl.check("a")


def test_stream_counter() -> None:
    sc = StreamCounter(2)
    with sc.opened("a"), sc.opened("a"):
        with pytest.raises(ResourceExhausted, match="2 open streams"), sc.opened("a"):
            pass
        with sc.opened("b"):
            pass
    with sc.opened("a"), sc.opened("a"):
        pass


def test_source_address_drops_the_port() -> None:
    assert source_address("ipv4:10.0.0.7:51234") == "10.0.0.7"
    assert source_address("ipv6:[::1]:4000") == "::1"
    assert source_address("unix:/run/cowpod/controller.sock") == "unix"
    assert source_address("unix:") == "unix"


def test_failure_limiter_looks_without_taking() -> None:
    clock = FakeClock()
    rl = RateLimiter.for_failures(Limits(failed_auth_rate=1.0, failed_auth_burst=2), clock)
    assert not rl.exhausted("failed-auth@10.0.0.7")
    rl.check("failed-auth@10.0.0.7")
    rl.check("failed-auth@10.0.0.7")
    assert rl.exhausted("failed-auth@10.0.0.7") and rl.exhausted("failed-auth@10.0.0.7")
    with pytest.raises(ResourceExhausted, match=r"failed-auth@10\.0\.0\.7"):
        rl.check("failed-auth@10.0.0.7")
    assert not rl.exhausted("failed-auth@10.0.0.8")
