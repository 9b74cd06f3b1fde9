"""The create path's shortcuts (issue #17) give the same answers as the plain code they stand
in for: spec findings remembered by the spec's bytes, named ports resolved only in the
handlers that are set, metadata checked once, results filled in place."""

from __future__ import annotations

import random
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from controller import validation
from controller.kinds import NODES, PODS
from controller.memstore import MemoryStore
from controller.namespaces import NAMESPACES, NamespaceAdmission, Namespaces, new_namespace
from controller.node_usage import NodeUsage
from controller.pods import DEFAULT_GRACE_SECONDS, Pods, add_create_result, qos_class
from controller.resource import Resource, new_uid, set_time
from controller.servicers.pods import spec_findings
from controller.specmemo import SpecMemo
from controller.watch import WatchHub
from cowpod.api import podfields
from cowpod.auth.podsecurity import pod_violations
from cowpod.clock import FakeClock
from cowpod.errors import AlreadyExists, CowpodError, Invalid, NotFound
from cowpod.v1 import meta_pb2, pod_pb2

PORTS = ("http", "admin", "metrics", "nope")


def _handler(rng: random.Random, h: pod_pb2.Probe | pod_pb2.LifecycleHandler) -> None:
    """Sets `h` (a probe or lifecycle handler) to one of the shapes a manifest can give."""
    shape = rng.randrange(5)
    if shape == 0:
        h.http_get.port_name = rng.choice(PORTS)
    elif shape == 1:
        h.tcp_socket.port_name = rng.choice(PORTS)
    elif shape == 2:
        h.http_get.port = 8080
    elif shape == 3:
        h.exec.command.append("true")
    else:
        h.http_get.port_name = rng.choice(PORTS)
        h.tcp_socket.port_name = rng.choice(PORTS)


def _container(rng: random.Random, c: pod_pb2.Container, i: int) -> None:
    c.name = f"c{i}"
    c.image = rng.choice(["busybox", "nginx:1", "cowpod/vm:latest", "docker.io/library/redis",
                          "sha256:" + "a" * 64])
    for name in rng.sample(PORTS[:3], rng.randrange(4)):
        c.ports.add(name=name, container_port=rng.randrange(1, 65536))
    for f in ("liveness_probe", "readiness_probe", "startup_probe"):
        if rng.random() < 0.3:
            _handler(rng, getattr(c, f))
            if rng.random() < 0.3:
                getattr(c, f).termination_grace_period_seconds = 5
    if rng.random() < 0.3:
        c.lifecycle.SetInParent()  # lifecycle present, maybe with no handler
        for f in ("post_start", "pre_stop"):
            if rng.random() < 0.5:
                _handler(rng, getattr(c.lifecycle, f))
    if rng.random() < 0.2:
        c.security_context.privileged = True
    if rng.random() < 0.2:
        c.security_context.capabilities.add.append("NET_ADMIN")
    if rng.random() < 0.2:
        c.security_context.capabilities.drop.append("ALL")
    if rng.random() < 0.1:
        c.termination_message_path = "/dev/termination-log"
    if rng.random() < 0.1:
        c.stdin_once = True


def _pod(rng: random.Random) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = f"p{rng.randrange(100)}"
    p.metadata.namespace = "default"
    for i in range(rng.randrange(3)):
        _container(rng, p.spec.init_containers.add(), 10 + i)
    for i in range(1 + rng.randrange(3)):
        _container(rng, p.spec.containers.add(), i)
    if rng.random() < 0.3:
        p.spec.volumes.add(name="h").host_path.path = rng.choice(["/srv", "/var/run/docker.sock", "/a/../b"])
    if rng.random() < 0.2:
        p.spec.enable_service_links = rng.random() < 0.5  # present even when False
    if rng.random() < 0.2:
        p.spec.service_account_name = "robot"
    if rng.random() < 0.2:
        p.spec.security_context.fs_group = 0  # present at zero
    if rng.random() < 0.2:
        p.spec.restart_policy = rng.choice(["Always", "Never", "Sometimes"])
    return p


def _resolve_named_ports_reference(spec: pod_pb2.PodSpec) -> None:
    """What `resolve_named_ports` did before it learnt to skip unset handlers."""
    for c in [*spec.init_containers, *spec.containers]:
        handlers: list[pod_pb2.Probe | pod_pb2.LifecycleHandler] = [
            c.liveness_probe, c.readiness_probe, c.startup_probe,
            c.lifecycle.post_start, c.lifecycle.pre_stop]
        for h in handlers:
            for action in (h.http_get, h.tcp_socket):
                if action.port_name:
                    number = podfields.named_port(c, action.port_name)
                    if number is not None:
                        action.port = number


def test_resolve_named_ports_matches_the_full_walk() -> None:
    rng = random.Random(17)
    resolved = 0
    for _ in range(2000):
        pod = _pod(rng)
        want, got = pod_pb2.PodSpec(), pod_pb2.PodSpec()
        want.CopyFrom(pod.spec)
        got.CopyFrom(pod.spec)
        _resolve_named_ports_reference(want)
        podfields.resolve_named_ports(got)
        # Equal as messages and as bytes: the shortcut neither misses a port nor marks an
        # unset handler present.
        assert got == want
        assert got.SerializeToString(deterministic=True) == want.SerializeToString(deterministic=True)
        resolved += want != pod.spec
    assert resolved > 100  # the cases did name ports that resolve


def test_spec_findings_are_the_rules_and_warnings_of_that_spec() -> None:
    rng = random.Random(4)
    pods = [_pod(rng) for _ in range(400)]
    for pod in pods + pods:  # the second round is answered from the memo
        want = (tuple(pod_violations(pod)), tuple(podfields.pod_warnings(pod.spec)))
        assert spec_findings(pod) == want
    assert any(spec_findings(p)[0] for p in pods) and any(spec_findings(p)[1] for p in pods)


def test_spec_findings_tell_a_field_set_to_its_default_from_one_left_out() -> None:
    unset = pod_pb2.Pod()
    unset.spec.containers.add(name="a", image="busybox")
    off = pod_pb2.Pod()
    off.CopyFrom(unset)
    off.spec.enable_service_links = False
    assert spec_findings(unset) == ((), ())
    assert [w.split(":")[0] for w in spec_findings(off)[1]] == ["spec.enableServiceLinks"]
    assert spec_findings(unset) == ((), ())


def test_spec_memo_is_bounded_and_drops_the_oldest() -> None:
    memo: SpecMemo[int] = SpecMemo(max_entries=3, max_key_bytes=8)
    for i in range(3):
        memo.put(bytes([i]), i)
    memo.put(b"\x01", 10)  # a key already there replaces its value, evicting nothing
    assert len(memo) == 3 and memo.get(b"\x01") == 10
    memo.put(b"\x09", 9)
    assert memo.get(b"\x00") is None and memo.get(b"\x09") == 9 and len(memo) == 3
    memo.put(b"123456789", 1)  # over the key size: not kept
    assert memo.get(b"123456789") is None and len(memo) == 3


def test_validate_pod_with_checked_metadata_finds_what_the_full_check_finds() -> None:
    rng = random.Random(9)
    seen_invalid = 0
    for _ in range(300):
        pod = _pod(rng)
        pod.status.phase = rng.choice(["Pending", "Running", "Bogus"])
        validation.check_metadata(pod.metadata, namespaced=True)  # what prepare_new runs first
        errors = []
        for checked in (False, True):
            try:
                validation.validate_pod(pod, metadata_checked=checked)
                errors.append("")
            except Invalid as err:
                errors.append(f"{err.field}: {err}")
        assert errors[0] == errors[1]
        seen_invalid += errors[0] != ""
    assert seen_invalid > 50


def _create_result_reference(req: pod_pb2.Pod, out: pod_pb2.Pod | CowpodError) -> pod_pb2.CreatePodResult:
    """What `create_result` built before results were filled in place."""
    meta = req.metadata
    key = meta_pb2.ObjectKey(namespace=meta.namespace, name=meta.name)
    if isinstance(out, CowpodError):
        code = out.code if out.code != grpc.StatusCode.UNKNOWN else grpc.StatusCode.INTERNAL
        return pod_pb2.CreatePodResult(pod=key, ok=False, code=int(code.value[0]), message=str(out))
    return pod_pb2.CreatePodResult(pod=key, ok=True, uid=out.metadata.uid,
                                   resource_version=out.metadata.resource_version)


@pytest.mark.parametrize("out", [
    "created",
    AlreadyExists('pods "default/web" already exists'),
    Invalid("spec.containers[0].image", "required"),
    CowpodError("a bug"),  # UNKNOWN answers INTERNAL
])
def test_results_filled_in_place_equal_the_built_ones(out: str | CowpodError) -> None:
    req = pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(name="web", namespace="default"))
    done: pod_pb2.Pod | CowpodError
    if isinstance(out, str):
        done = pod_pb2.Pod()
        done.CopyFrom(req)
        done.metadata.uid = "0b1d2c3e-0000-4000-8000-000000000001"
        done.metadata.resource_version = 4242
    else:
        done = out
    resp = pod_pb2.CreatePodsResponse()
    add_create_result(resp.results, req, done)
    assert list(resp.results) == [_create_result_reference(req, done)]


def test_new_uid_is_a_random_version_4_uuid_as_uuid4_writes_it() -> None:
    seen = set()
    for _ in range(2000):
        uid = new_uid()
        parsed = uuid.UUID(uid)
        assert str(parsed) == uid  # lowercase, dashes where str(uuid4()) puts them
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        seen.add(uid)
    assert len(seen) == 2000


@pytest.mark.parametrize("seconds", [0.0, 1.5, 1_795_600_000.123456, 1_795_600_000.999999999, 42.0000001])
def test_set_time_splits_seconds_as_before(seconds: float) -> None:
    ts = Timestamp()
    set_time(ts, seconds)
    assert (ts.seconds, ts.nanos) == (int(seconds), int((seconds - int(seconds)) * 1e9))


@pytest.mark.parametrize("phase", ["", "Pending", "Running", "Succeeded", "Failed", "Unknown", "Bogus"])
@pytest.mark.parametrize("conds", [[], [("Ready", "True")], [("", "True")], [("Ready", "Maybe")],
                                   [("Ready", "True"), ("Ready", "False")]])
def test_pod_status_shortcut_finds_what_the_full_check_finds(phase: str,
                                                             conds: list[tuple[str, str]]) -> None:
    status = pod_pb2.PodStatus(phase=phase)
    for t, s in conds:
        status.conditions.add(type=t, status=s)
    errs = validation.Errors()
    validation.pod_status(errs, status)
    want = validation.Errors()
    validation.one_of(want, "status.phase", status.phase, validation.POD_PHASES)
    validation.conditions(want, "status.conditions", status.conditions)
    assert errs.items == want.items


NAMES = ["web", "a" * 253, "a" * 254, "", "Web", "web-", "web.1", "web\n", "-x", "x.y.z", "a_b"]
NAMESPACE_NAMES = ["default", "", "kube-system", "a" * 63, "a" * 64, "Team", "ns\n", "a.b"]


@pytest.mark.parametrize("namespaced", [True, False])
def test_check_metadata_shortcut_refuses_what_the_full_check_refuses(namespaced: bool) -> None:
    rng = random.Random(3)
    for _ in range(1500):
        meta = meta_pb2.ObjectMeta(name=rng.choice(NAMES), namespace=rng.choice(NAMESPACE_NAMES))
        if rng.random() < 0.3:
            meta.labels[rng.choice(["app", "bad key!", "x/"])] = rng.choice(["v", "bad value!"])
        if rng.random() < 0.3:
            meta.annotations[rng.choice(["note", "bad key!"])] = "x"
        want = validation.Errors()
        validation.metadata(want, meta, namespaced=namespaced)
        try:
            validation.check_metadata(meta, namespaced=namespaced)
            got: list[tuple[str, str]] = []
        except Invalid as err:
            got = [(err.field, str(err))]
        if not want.items:
            assert got == []
        else:
            with pytest.raises(Invalid) as raised:
                want.raise_if_any()
            assert got == [(raised.value.field, str(raised.value))]


def _resources(rng: random.Random, c: pod_pb2.Container) -> None:
    for rl in (c.resources.requests, c.resources.limits):
        if rng.random() < 0.5:
            rl.cpu_millis = rng.choice([0, 100, 500])
        if rng.random() < 0.5:
            rl.memory_bytes = rng.choice([0, 1 << 20, 128 << 20])


async def _prepare_reference(pods: Pods, pod: pod_pb2.Pod) -> None:
    """What `Pods.create` did to a new pod before its QoS class and spec findings were
    remembered by the final spec's bytes (and its metadata was checked once)."""
    pod.ClearField("status")
    spec = pod.spec
    if not spec.restart_policy:
        spec.restart_policy = "Always"
    if not spec.HasField("termination_grace_period_seconds"):
        spec.termination_grace_period_seconds = DEFAULT_GRACE_SECONDS
    pod.status.phase = "Pending"
    pod.status.qos_class = qos_class(spec)
    _resolve_named_ports_reference(spec)
    if pods.priority is not None:
        await pods.priority(spec)
    pods.res.prepare_new(pod)
    validation.check_metadata(pod.metadata, namespaced=True)
    errs = validation.Errors()
    validation.metadata(errs, pod.metadata, namespaced=True)
    validation.pod_spec(errs, pod.spec)
    validation.pod_status(errs, pod.status)
    errs.raise_if_any()


async def test_a_prepared_pod_is_what_the_plain_sequence_made() -> None:
    store = MemoryStore()
    clock = FakeClock()
    pods = Pods(Resource(PODS, store, clock, WatchHub(store, PODS, clock)), Resource(NODES, store, clock),
                store, clock, usage=NodeUsage(store))
    rng = random.Random(11)
    outcomes = set()
    for _ in range(600):
        pod = _pod(rng)
        for c in [*pod.spec.init_containers, *pod.spec.containers]:
            _resources(rng, c)
        if rng.random() < 0.1:
            pod.metadata.name = "Bad_Name"
        if rng.random() < 0.2:
            pod.status.phase = "Running"  # a client's status is dropped
        want, got = pod_pb2.Pod(), pod_pb2.Pod()
        want.CopyFrom(pod)
        got.CopyFrom(pod)
        errors = []
        for fn, p in ((_prepare_reference, want), (Pods._prepare, got)):
            try:
                await fn(pods, p)
                errors.append("")
            except Invalid as err:
                errors.append(f"{err.field}: {err}")
        assert errors[0] == errors[1]
        if not errors[0]:
            assert got.metadata.uid != want.metadata.uid
            got.metadata.uid = want.metadata.uid
            assert got == want
            outcomes.add(got.status.qos_class)
        else:
            outcomes.add("invalid")
    assert outcomes == {"BestEffort", "Burstable", "Guaranteed", "invalid"}


class CountingNamespaces(Namespaces):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.asked: list[str] = []

    async def admit_create(self, message: Any) -> None:
        self.asked.append(message.metadata.namespace)
        await super().admit_create(message)


async def test_a_batch_admits_each_namespace_once_and_refuses_the_first_missing() -> None:
    store, clock = MemoryStore(), FakeClock()
    namespaces = CountingNamespaces(Resource(NAMESPACES, store, clock), clock)
    await namespaces.create(new_namespace("team-a"))
    admission = NamespaceAdmission(namespaces, [])

    def batch(*spaces: str) -> pod_pb2.CreatePodsRequest:
        metas = [meta_pb2.ObjectMeta(name=f"p{i}", namespace=s) for i, s in enumerate(spaces)]
        return pod_pb2.CreatePodsRequest(pods=[pod_pb2.Pod(metadata=m) for m in metas])

    await admission("PodService.CreateBatch", batch("team-a", "", "team-a", "default", "team-a"))
    assert namespaces.asked == ["team-a", "", "default"]
    for spaces, missing in ((("team-a", "gone", "team-a", "lost"), "gone"), (("lost", "gone"), "lost")):
        with pytest.raises(NotFound, match=f'namespaces "{missing}" not found'):
            await admission("PodService.CreateBatch", batch(*spaces))
