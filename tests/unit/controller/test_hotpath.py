"""The controller's hot-path shortcuts give the same answers as the plain code they stand in for."""

from __future__ import annotations

import random
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from controller import validation
from controller.limits import Limits, check_message
from cowpod.errors import Invalid
from cowpod.v1 import pod_pb2


def _pod(rng: random.Random) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = f"p{rng.randrange(1000)}"
    p.metadata.namespace = "default"
    for i in range(rng.randrange(6)):
        p.metadata.labels[f"k{i}"] = "v" * rng.randrange(12)
    for i in range(rng.randrange(3)):
        p.metadata.annotations[f"a{i}"] = "x" * rng.randrange(40)
    for i in range(1 + rng.randrange(3)):
        c = p.spec.containers.add()
        c.name = f"c{i}"
        c.image = "img" + "x" * rng.randrange(30)
        c.command.extend("arg" * rng.randrange(4) for _ in range(rng.randrange(5)))
        c.resources.requests.cpu_millis = rng.randrange(1000)
    for i in range(rng.randrange(4)):
        p.spec.node_selector[f"s{i}"] = "y" * rng.randrange(10)
    return p


def _reference_walk(msg: Message, path: str, limits: Limits) -> None:
    """The straightforward walk every field of every message (what check_message did before
    it learnt to skip messages too small to break a limit)."""
    for fd, value in msg.ListFields():
        p = f"{path}.{fd.json_name}" if path else fd.json_name
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            n = len(value)
            if fd.name == "labels" and n > limits.max_labels:
                raise Invalid(p, f"at most {limits.max_labels} labels (got {n})")
            if n > limits.max_items:
                raise Invalid(p, f"at most {limits.max_items} entries (got {n})")
            if fd.name == "annotations":
                if sum(len(k) + len(v) for k, v in value.items()) > limits.max_annotations_bytes:
                    raise Invalid(p, "annotations")
                continue
            for k, v in value.items():
                if len(k) > limits.max_string_bytes:
                    raise Invalid(p, "key")
                if isinstance(v, str) and len(v) > limits.max_string_bytes:
                    raise Invalid(f"{p}[{k}]", "string")
        elif fd.is_repeated:
            if len(value) > limits.max_items:
                raise Invalid(p, "items")
            for i, item in enumerate(value):
                _reference_value(fd, item, f"{p}[{i}]", limits)
        else:
            _reference_value(fd, value, p, limits)


def _reference_value(fd: FieldDescriptor, value: Any, path: str, limits: Limits) -> None:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        _reference_walk(value, path, limits)
    elif fd.type == FieldDescriptor.TYPE_STRING and len(value) > limits.max_string_bytes:
        raise Invalid(path, "string")


def _field_of(fn: Any) -> str | None:
    try:
        fn()
    except Invalid as err:
        return err.field
    return None


@pytest.mark.parametrize("seed", range(40))
def test_check_message_refuses_what_the_full_walk_refuses(seed: int) -> None:
    rng = random.Random(seed)
    limits = Limits(max_labels=rng.randrange(1, 6), max_string_bytes=rng.randrange(4, 40),
                    max_items=rng.randrange(3, 8), max_annotations_bytes=rng.randrange(10, 80))
    req = pod_pb2.CreatePodsRequest(pods=[_pod(rng) for _ in range(3)])
    want = _field_of(lambda: _reference_walk(req, "", limits))
    got = _field_of(lambda: check_message(req, limits))
    assert got == want


def test_check_message_names_a_long_string_deep_inside() -> None:
    p = pod_pb2.Pod()
    p.spec.containers.add().image = "x" * 50
    with pytest.raises(Invalid) as err:
        check_message(p, Limits(max_string_bytes=40))
    assert err.value.field == "spec.containers[0].image"
    assert "no more than 40 bytes" in str(err.value)


def test_pod_spec_findings_are_remembered_per_spec() -> None:
    """A bad spec is refused the same way the second time (from memory), and a pod whose spec
    differs in one field is judged on its own."""
    bad = pod_pb2.Pod()
    bad.metadata.name = "a"
    bad.metadata.namespace = "default"
    bad.spec.containers.add(name="c", image="")
    first = _field_of(lambda: validation.validate_pod(bad))
    second = _field_of(lambda: validation.validate_pod(bad))
    assert first == second == "spec.containers[0].image"

    good = pod_pb2.Pod()
    good.CopyFrom(bad)
    good.spec.containers[0].image = "busybox"
    assert _field_of(lambda: validation.validate_pod(good)) is None
    # The same spec under another pod's metadata: the metadata is still checked every time.
    renamed = pod_pb2.Pod()
    renamed.CopyFrom(good)
    renamed.metadata.name = "Not_A_Name"
    assert _field_of(lambda: validation.validate_pod(renamed)) == "metadata.name"
