"""check_message skips messages too small to break a limit, with a bound per message type (a
PodSpec has no labels map, so the label count does not bound it): it must refuse exactly
what the plain walk of every field refuses, with the same field path and reason, for every
message type of the API and any limits."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from controller.limits import Limits, _size, check_message
from cowpod.errors import Invalid
from cowpod.v1 import config_pb2, meta_pb2, node_pb2, pod_pb2, service_pb2, vm_pb2, workload_pb2

_MODULES = (pod_pb2, node_pb2, workload_pb2, config_pb2, service_pb2, vm_pb2, meta_pb2)
_TYPES = [m.DESCRIPTOR.message_types_by_name[n] for m in _MODULES for n in m.DESCRIPTOR.message_types_by_name]
_NAMES = ["labels", "annotations"]


def _scalar(fd: FieldDescriptor, rng: random.Random, longest: int) -> Any:
    t = fd.type
    if t == FieldDescriptor.TYPE_STRING:
        return "".join(rng.choice("abé") for _ in range(rng.randrange(longest)))
    if t == FieldDescriptor.TYPE_BYTES:
        return b"x" * rng.randrange(longest)
    if t == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if t == FieldDescriptor.TYPE_ENUM:
        assert fd.enum_type is not None
        return rng.choice(fd.enum_type.values).number
    if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return rng.random() * 100
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED32,
             FieldDescriptor.TYPE_FIXED64):
        return rng.randrange(1 << 20)
    return rng.randrange(-(1 << 20), 1 << 20)


def _fill(msg: Any, rng: random.Random, depth: int, longest: int, most: int) -> None:
    """Set a random selection of `msg`'s fields: strings up to `longest` characters, lists and
    maps up to `most` items, sub-messages `depth` levels down."""
    for fd in msg.DESCRIPTOR.fields:
        if rng.random() < 0.4:
            continue
        mt = fd.message_type
        if mt is not None and mt.GetOptions().map_entry:
            key_fd, value_fd = mt.fields_by_name["key"], mt.fields_by_name["value"]
            m = getattr(msg, fd.name)
            for _ in range(rng.randrange(most + 1)):
                k = _scalar(key_fd, rng, longest)
                if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                    if depth > 0:
                        _fill(m[k], rng, depth - 1, longest, most)
                else:
                    m[k] = _scalar(value_fd, rng, longest)
        elif fd.is_repeated:
            items = getattr(msg, fd.name)
            for _ in range(rng.randrange(most + 1)):
                if fd.type == FieldDescriptor.TYPE_MESSAGE:
                    if depth > 0:
                        _fill(items.add(), rng, depth - 1, longest, most)
                else:
                    items.append(_scalar(fd, rng, longest))
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            if depth > 0:
                _fill(getattr(msg, fd.name), rng, depth - 1, longest, most)
        else:
            setattr(msg, fd.name, _scalar(fd, rng, longest))


def _message(desc: Descriptor) -> Message:
    for m in _MODULES:
        if desc.file.name == m.DESCRIPTOR.name:
            cls: Any = getattr(m, desc.name)
            return cls()  # type: ignore[no-any-return]
    raise AssertionError(desc.full_name)


def _full_walk(msg: Message, path: str, limits: Limits) -> None:
    """Every field of every message, by the rules of check_message (its paths and reasons),
    skipping nothing."""
    for fd, value in msg.ListFields():
        p = f"{path}.{fd.json_name}" if path else fd.json_name
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            n = len(value)
            if fd.name == "labels" and n > limits.max_labels:
                raise Invalid(p, f"at most {limits.max_labels} labels (got {n})")
            if n > limits.max_items:
                raise Invalid(p, f"at most {limits.max_items} entries (got {n})")
            if fd.name == "annotations":
                total = sum(len(k) + len(v) for k, v in value.items())
                if total > limits.max_annotations_bytes:
                    raise Invalid(p, f"annotations total {_size(total)}; "
                                     f"the maximum is {_size(limits.max_annotations_bytes)}")
                continue
            value_fd = fd.message_type.fields_by_name["value"]
            for k, v in value.items():
                if isinstance(k, str) and len(k) > limits.max_string_bytes:
                    raise Invalid(p, f"key of {_size(len(k))} is too long")
                _full_value(value_fd, v, f"{p}[{k}]" if len(str(k)) <= 80 else f"{p}[...]", limits)
        elif fd.is_repeated:
            if len(value) > limits.max_items:
                raise Invalid(p, f"at most {limits.max_items} items (got {len(value)})")
            for i, item in enumerate(value):
                _full_value(fd, item, f"{p}[{i}]", limits)
        else:
            _full_value(fd, value, p, limits)


def _full_value(fd: FieldDescriptor, value: Any, path: str, limits: Limits) -> None:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        _full_walk(value, path, limits)
    elif fd.type == FieldDescriptor.TYPE_STRING and len(value) > limits.max_string_bytes:
        most, got = _size(limits.max_string_bytes), _size(len(value))
        raise Invalid(path, f"must be no more than {most} (got {got})")


def _refusal(msg: Message, limits: Limits, check: Any) -> tuple[str, str] | None:
    try:
        check(msg, limits)
    except Invalid as err:
        return err.field, str(err)
    return None


def _field_of(fn: Any) -> str | None:
    try:
        fn()
    except Invalid as err:
        return err.field
    return None


def _random_limits(rng: random.Random) -> Limits:
    """Each limit small (most messages break it) or large (few do), independently, so that
    each in turn is the one that bounds what may be skipped."""

    def pick(low: int, high: int) -> int:
        return rng.randrange(low, high) * (1 if rng.random() < 0.5 else 8)

    return Limits(max_labels=pick(1, 4), max_string_bytes=pick(4, 20), max_items=pick(2, 5),
                  max_annotations_bytes=pick(8, 40), max_object_bytes=1 << 30)


@pytest.mark.parametrize("seed", range(4))
def test_every_api_type_is_refused_as_the_full_walk_refuses(seed: int) -> None:
    rng = random.Random(seed)
    refused = passed = 0
    for desc in _TYPES:
        for _ in range(8):
            limits = _random_limits(rng)
            msg = _message(desc)
            _fill(msg, rng, depth=rng.randrange(1, 5),
                  longest=rng.randrange(2, 3 * limits.max_string_bytes // 2 + 3),
                  most=rng.randrange(1, 3 * limits.max_items // 2 + 2))
            want = _refusal(msg, limits, lambda m, lim: _full_walk(m, "", lim))
            assert _refusal(msg, limits, check_message) == want, (desc.full_name, limits)
            # As the interceptor checks a request: bounded by the bytes it was read from.
            wire = msg.SerializeToString()
            if rng.random() < 0.3:  # the same fields twice over: parsed as merged, read from more bytes
                wire += wire
                msg = _message(desc)
                msg.ParseFromString(wire)
                want = _refusal(msg, limits, lambda m, lim: _full_walk(m, "", lim))
            sized = _refusal(msg, limits, lambda m, lim: check_message(m, lim, wire_size=len(wire)))  # noqa: B023
            assert sized == want, (desc.full_name, limits)
            refused += want is not None
            passed += want is None
    # Both outcomes were exercised, or the comparison proved nothing.
    assert refused > 50 and passed > 50, (refused, passed)


def _labels(n: int) -> meta_pb2.ObjectMeta:
    meta = meta_pb2.ObjectMeta()
    for i in range(n):
        meta.labels[chr(ord("a") + i % 26) * (1 + i // 26)] = ""
    return meta


@pytest.mark.parametrize("most", [1, 2, 5, 64])
def test_the_smallest_messages_that_break_a_limit_are_refused(most: int) -> None:
    """At the edge of each bound: one label, item, byte of a string or of annotations too many,
    in the smallest message that can carry it."""
    limits = Limits(max_labels=most, max_items=most, max_string_bytes=most, max_annotations_bytes=most)
    only_labels = Limits(max_labels=most)  # the label count is what bounds the skipping
    for lim in (limits, only_labels):
        pod = pod_pb2.Pod(metadata=_labels(most + 1))
        assert _field_of(lambda: check_message(pod, lim)) == "metadata.labels"  # noqa: B023
        assert _field_of(lambda: check_message(pod_pb2.Pod(metadata=_labels(most)), lim)) is None  # noqa: B023
        # The fewest bytes max_labels + 1 labels can take: one empty key, the others of one character.
        tight = meta_pb2.ObjectMeta(labels={"": "", **_labels(most).labels})
        assert _field_of(lambda: check_message(tight, lim)) == "labels"  # noqa: B023
        assert _field_of(lambda: check_message(pod_pb2.Pod(metadata=tight), lim)) == "metadata.labels"  # noqa: B023

    spec = pod_pb2.PodSpec(containers=[pod_pb2.Container() for _ in range(most + 1)])
    assert _field_of(lambda: check_message(spec, limits)) == "containers"
    assert _field_of(lambda: check_message(pod_pb2.Pod(spec=spec), limits)) == "spec.containers"

    deep = pod_pb2.Pod(spec=pod_pb2.PodSpec(containers=[pod_pb2.Container(image="x" * (most + 1))]))
    assert _field_of(lambda: check_message(deep, limits)) == "spec.containers[0].image"
    fits = pod_pb2.Pod(spec=pod_pb2.PodSpec(containers=[pod_pb2.Container(image="x" * most)]))
    assert _field_of(lambda: check_message(fits, limits)) is None

    notes = pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(annotations={"a": "x" * most}))
    assert _field_of(lambda: check_message(notes, limits)) == "metadata.annotations"

    batch = pod_pb2.CreatePodsRequest(pods=[pod_pb2.Pod(), pod_pb2.Pod(), pod])
    roomy = dataclasses.replace(limits, max_items=3)
    assert _field_of(lambda: check_message(batch, roomy)) == "pods[2].metadata.labels"


def test_a_long_map_key_is_refused_where_only_keys_are_strings() -> None:
    """ResourceList's only strings are the keys of `extended` (its values are numbers)."""
    limits = Limits(max_string_bytes=8)
    quantities = meta_pb2.ResourceList(extended={"example.com/gpu": 1})
    assert _field_of(lambda: check_message(quantities, limits)) == "extended"
    pod = pod_pb2.Pod(spec=pod_pb2.PodSpec(containers=[pod_pb2.Container(
        resources=pod_pb2.ResourceRequirements(limits=quantities))]))
    assert _field_of(lambda: check_message(pod, limits)) == "spec.containers[0].resources.limits.extended"
    assert _field_of(lambda: check_message(meta_pb2.ResourceList(extended={"gpu": 1}), limits)) is None


def _field_bytes(cls: Any, name: str, payload: bytes) -> bytes:
    """`payload` as the length-delimited field `name` of message `cls` (short payloads only)."""
    assert len(payload) < 128
    return bytes([cls.DESCRIPTOR.fields_by_name[name].number << 3 | 2, len(payload)]) + payload


def test_a_request_is_bounded_by_the_bytes_it_was_read_from() -> None:
    """Map entries written without their (empty) value are shorter on the wire than serialized
    again; the label count they break is still found by the length of those bytes."""
    limits = Limits(max_labels=3)
    entry: Any = meta_pb2.ObjectMeta.DESCRIPTOR.fields_by_name["labels"].message_type
    key_tag = bytes([entry.fields_by_name["key"].number << 3 | 2, 1])
    labels = b"".join(_field_bytes(meta_pb2.ObjectMeta, "labels", key_tag + bytes([ord("a") + i]))
                      for i in range(3))  # {a, b, c: ""}, the values left out
    labels += _field_bytes(meta_pb2.ObjectMeta, "labels", b"")  # and {"": ""}, in two bytes
    meta = meta_pb2.ObjectMeta.FromString(labels)
    # The fewest bytes 4 labels can be sent in: 2 + 5 * 3.
    assert len(meta.labels) == 4 and len(labels) == 17 and meta.ByteSize() > len(labels)
    assert _field_of(lambda: check_message(meta, limits, wire_size=len(labels))) == "labels"
    wire = _field_bytes(pod_pb2.Pod, "metadata", labels)
    pod = pod_pb2.Pod.FromString(wire)
    assert _field_of(lambda: check_message(pod, limits, wire_size=len(wire))) == "metadata.labels"
    # A CreatePodsRequest is no object: measured by its bytes alone.
    batch_wire = _field_bytes(pod_pb2.CreatePodsRequest, "pods", wire)
    batch = pod_pb2.CreatePodsRequest.FromString(batch_wire)
    got = _field_of(lambda: check_message(batch, limits, wire_size=len(batch_wire)))
    assert got == "pods[0].metadata.labels"
    fits = Limits(max_labels=4)
    assert _field_of(lambda: check_message(batch, fits, wire_size=len(batch_wire))) is None
