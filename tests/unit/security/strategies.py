"""Hypothesis strategies for hostile input: JSON-ish values, manifests, protobuf messages.

- `hostile_values`: what a YAML/JSON document can hold, biased to the nasty
  (path traversal, NUL bytes, shell syntax, right-to-left marks, huge and
  non-finite numbers, deep nesting).
- `hostile_manifests`: a valid pod manifest with 1-3 mutations anywhere in
  it (wrong types, unknown fields, garbage values).
- `invalid_pods`: a valid pod manifest with one mutation that is invalid *by
  the API's rules* while still decodable, so it reaches the controller and
  must come back INVALID_ARGUMENT.
- `messages(descriptor)`: arbitrary protobuf messages of a type, field by
  field, with hostile scalars; `corrupt_bytes`: a valid message's wire bytes
  truncated, flipped or extended.
"""

from __future__ import annotations

import copy
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

NASTY_STRINGS = [
    "", " ", "-", ".", "..", "../../etc/passwd", "/var/run/docker.sock", "/run/cowpod/controller.sock",
    "a\x00b", "$(reboot)", "`id`", "; rm -rf /", "\u202eevil", "💥", "Web", "web-", "-web", "a" * 64,
    "a" * 254, "default/../kube-system", "%00", "\n", "\t", "null", "true", "0x10", "1e999", "-1",
    "NaN", "{{.}}", "<script>", "é", "\uff41", "system:masters", "spec.nodeName=n1",
]

BAD_NAMES = ["", "Web", "-web", "web-", "a" * 254, "../x", "a\x00b", "a b", "💥"]

hostile_strings = st.one_of(st.sampled_from(NASTY_STRINGS), st.text(max_size=40))
hostile_numbers = st.one_of(
    st.sampled_from([0, -1, 1, 2**31 - 1, 2**31, -(2**31) - 1, 2**63 - 1, -(2**63), 2**64, 10**30]),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), hostile_numbers, hostile_strings)
hostile_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(hostile_strings, inner, max_size=4),
    ),
    max_leaves=12,
)


def valid_pod_manifest(name: str = "fuzz") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"},
                     "annotations": {"note": "x"}},
        "spec": {
            "restartPolicy": "Always",
            "nodeSelector": {"disk": "ssd"},
            "containers": [{
                "name": "main",
                "image": "cowpod/busybox:latest",
                "command": ["sh", "-c", "sleep 1"],
                "env": [{"name": "A", "value": "1"}],
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m", "memory": "16Mi"},
                              "limits": {"cpu": "200m", "memory": "32Mi"}},
            }],
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location in a document (dict keys and list indexes)."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    parent[path[-1]] = value
    return doc


@st.composite
def hostile_manifests(draw: st.DrawFn) -> Any:
    doc: Any = valid_pod_manifest()
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "add-key", "delete"]))
        target = doc
        for p in path:
            target = target[p]
        if action == "add-key" and isinstance(target, dict):
            target[draw(hostile_strings)] = draw(hostile_values)
        elif action == "delete" and path:
            parent = doc
            for p in path[:-1]:
                parent = parent[p]
            del parent[path[-1]]
        else:
            doc = _set(doc, path, draw(hostile_values))
    return doc


# One invalid-by-the-rules change each, still decodable into a Pod.
_INVALID_EDITS: list[tuple[tuple[Any, ...], st.SearchStrategy[Any]]] = [
    (("metadata", "name"), st.sampled_from(BAD_NAMES)),
    (("metadata", "namespace"), st.sampled_from(["Default", "a/b", "-x", "a" * 64])),
    (("metadata", "labels"), st.sampled_from([{"bad key": "v"}, {"k": "v" * 64}, {"": "v"}, {"a/b/c": "v"},
                                              {f"k{i}": "v" for i in range(65)}])),
    (("metadata", "annotations"), st.sampled_from([{"bad key": "v"}, {"": "v"}])),
    (("spec", "containers"), st.just([])),
    (("spec", "containers", 0, "name"), st.sampled_from(["", "Main", "a" * 64, "a_b"])),
    (("spec", "containers", 0, "image"), st.just("")),
    (("spec", "containers", 0, "ports", 0, "containerPort"), st.sampled_from([0, -1, 65536, 2**31 - 1])),
    (("spec", "containers", 0, "ports", 0, "protocol"), st.sampled_from(["ICMP", "tcp", "x"])),
    (("spec", "containers", 0, "env", 0, "name"), st.sampled_from(["", "1A", "A=B", "a b"])),
    (("spec", "restartPolicy"), st.sampled_from(["Sometimes", "always", "x"])),
    (("spec", "tolerations", 0, "operator"), st.sampled_from(["Maybe", "equal"])),
    (("spec", "tolerations", 0, "effect"), st.sampled_from(["Sometimes", "noschedule"])),
    (("spec", "terminationGracePeriodSeconds"), st.sampled_from([-1, -(2**40)])),
    (("spec", "nodeSelector"), st.sampled_from([{"bad key": "v"}, {"k": "bad value!"}])),
]


# Invalid only by the server's limits (controller/limits.py), not the manifest rules.
_OVER_LIMITS: list[tuple[tuple[Any, ...], st.SearchStrategy[Any]]] = [
    (("metadata", "annotations"), st.just({"k": "x" * (300 * 1024)})),
    (("spec", "containers", 0, "command"), st.just(["x" * (20 * 1024)])),
]


@st.composite
def invalid_pods(draw: st.DrawFn, *, over_limits: bool = False) -> dict[str, Any]:
    doc = valid_pod_manifest(draw(st.sampled_from(["fz-a", "fz-b", "fz-c"])))
    path, values = draw(st.sampled_from(_INVALID_EDITS + (_OVER_LIMITS if over_limits else [])))
    _set(doc, path, copy.deepcopy(draw(values)))
    if doc["spec"]["containers"] and draw(st.booleans()):  # and sometimes a duplicate container
        doc["spec"]["containers"].append(copy.deepcopy(doc["spec"]["containers"][0]))
    return doc


# --- protobuf -------------------------------------------------------------------------------------

_INT_BOUNDS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _scalar(fd: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = fd.type
    if t == FieldDescriptor.TYPE_STRING:
        return hostile_strings
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        width = 32 if t == FieldDescriptor.TYPE_FLOAT else 64
        return st.floats(allow_nan=True, allow_infinity=True, width=width)
    if t == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 10)
    lo, hi = _INT_BOUNDS[t]
    return st.one_of(st.sampled_from([lo, hi, 0, -1, 1]), st.integers(lo, hi))


@st.composite
def _fill(draw: st.DrawFn, msg: Message, depth: int) -> Message:
    desc: Descriptor = msg.DESCRIPTOR
    fields = list(desc.fields)
    if not fields:
        return msg
    chosen = draw(st.lists(st.sampled_from(fields), max_size=min(len(fields), 6), unique_by=lambda f: f.name))
    for fd in chosen:
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            key_fd = fd.message_type.fields_by_name["key"]
            val_fd = fd.message_type.fields_by_name["value"]
            m = getattr(msg, fd.name)
            for _ in range(draw(st.integers(0, 3))):
                k = draw(_scalar(key_fd))
                if val_fd.message_type is not None:
                    if depth > 0:
                        draw(_fill(m[k], depth - 1))
                else:
                    m[k] = draw(_scalar(val_fd))
        elif fd.message_type is not None:
            if depth <= 0:
                continue
            if fd.is_repeated:
                for _ in range(draw(st.integers(0, 2))):
                    draw(_fill(getattr(msg, fd.name).add(), depth - 1))
            else:
                draw(_fill(getattr(msg, fd.name), depth - 1))
                if fd.message_type.full_name == "google.protobuf.Timestamp":
                    ts = getattr(msg, fd.name)
                    ts.nanos = abs(ts.nanos) % 1_000_000_000
        elif fd.is_repeated:
            getattr(msg, fd.name).extend(draw(st.lists(_scalar(fd), max_size=3)))
        else:
            setattr(msg, fd.name, draw(_scalar(fd)))
    return msg


def messages(cls: type[Message], depth: int = 4) -> st.SearchStrategy[Message]:
    return st.builds(cls).flatmap(lambda m: _fill(m, depth))


@st.composite
def corrupt_bytes(draw: st.DrawFn, valid: bytes) -> bytes:
    data = bytearray(valid)
    kind = draw(st.sampled_from(["truncate", "flip", "append", "prefix", "random"]))
    if kind == "truncate" and data:
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind == "flip" and data:
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "append":
        return bytes(data) + draw(st.binary(min_size=1, max_size=16))
    if kind == "prefix":
        return draw(st.binary(min_size=1, max_size=16)) + bytes(data)
    return draw(st.binary(max_size=64))


# Invalid by the API's rules, edited at the protobuf level (past any client-side decoder).
def _edits() -> list[tuple[str, st.SearchStrategy[Any]]]:
    return [
        ("metadata.name", st.sampled_from(BAD_NAMES)),
        ("metadata.namespace", st.sampled_from(["Default", "a/b", "-x", "a" * 64])),
        ("label", st.sampled_from([("bad key", "v"), ("k", "v" * 64), ("", "v"), ("a/b/c", "v"),
                                   ("k", "a b")])),
        ("annotation", st.sampled_from([("bad key", "v"), ("", "v"), ("k", "x" * (300 * 1024))])),
        ("no-containers", st.just(None)),
        ("container.name", st.sampled_from(["", "Main", "a" * 64, "a_b"])),
        ("container.image", st.just("")),
        ("port", st.sampled_from([-1, 65536, 2**31 - 1, -(2**31)])),
        ("protocol", st.sampled_from(["ICMP", "tcp", "x"])),
        ("env.name", st.sampled_from(["", "1A", "A=B", "a b"])),
        ("restartPolicy", st.sampled_from(["Sometimes", "always", "x"])),
        ("toleration.operator", st.sampled_from(["Maybe", "equal"])),
        ("grace", st.sampled_from([-1, -(2**40)])),
        ("cpu", st.sampled_from([-1, -(2**62)])),
        ("duplicate-container", st.just(None)),
        ("huge-string", st.just("x" * (20 * 1024))),
        ("many-labels", st.just(65)),
    ]


def apply_edit(pod: Any, edit: str, value: Any) -> None:
    c = pod.spec.containers[0] if pod.spec.containers else None
    if c is None and edit in {"duplicate-container", "container.name", "container.image", "port", "protocol",
                              "env.name", "cpu", "huge-string"}:
        return  # containers already removed by an earlier edit: the pod is invalid anyway
    if edit == "metadata.name":
        pod.metadata.name = value
    elif edit == "metadata.namespace":
        pod.metadata.namespace = value
    elif edit == "label":
        pod.metadata.labels[value[0]] = value[1]
    elif edit == "annotation":
        pod.metadata.annotations[value[0]] = value[1]
    elif edit == "no-containers":
        del pod.spec.containers[:]
    elif edit == "duplicate-container":
        pod.spec.containers.add().CopyFrom(c)
    elif edit == "container.name":
        c.name = value
    elif edit == "container.image":
        c.image = value
    elif edit == "port":
        c.ports[0].container_port = value
    elif edit == "protocol":
        c.ports[0].protocol = value
    elif edit == "env.name":
        c.env[0].name = value
    elif edit == "restartPolicy":
        pod.spec.restart_policy = value
    elif edit == "toleration.operator":
        pod.spec.tolerations[0].operator = value
    elif edit == "grace":
        pod.spec.termination_grace_period_seconds = value
    elif edit == "cpu":
        c.resources.requests.cpu_millis = value
    elif edit == "huge-string":
        c.command.append(value)
    elif edit == "many-labels":
        for i in range(value):
            pod.metadata.labels[f"k{i}"] = "v"
    else:
        raise AssertionError(edit)


# What PodService/Update takes from a request (the rest of the spec is immutable and ignored).
UPDATABLE = frozenset({"label", "annotation", "many-labels"})


@st.composite
def invalid_pod_edits(draw: st.DrawFn, *, update: bool = False) -> list[tuple[str, Any]]:
    """1-2 rule-breaking edits to apply to a valid Pod message with `apply_edit`."""
    edits = [e for e in _edits() if not update or e[0] in UPDATABLE]
    out = []
    for _ in range(draw(st.integers(1, 2))):
        name, values = draw(st.sampled_from(edits))
        out.append((name, draw(values)))
    return out
