"""Protobuf -> Kubernetes-shaped mapping, for `-o yaml|json` and `apply`.

Empty fields are left out, as Kubernetes' `omitempty` does, with the
exceptions Kubernetes makes too (`exitCode: 0`, `restartCount: 0`). A message
field that was set but is empty is printed as `{}`, because that can carry
meaning (`emptyDir: {}` is a volume's type). Maps are printed with sorted keys
so output is stable.
"""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from cowpod.api import quantity
from cowpod.manifest import schema
from cowpod.manifest.kinds import of_message
from cowpod.manifest.schema import FieldSpec, Unit
from cowpod.manifest.timefmt import format_rfc3339


def encode_object(msg: Message) -> dict[str, Any]:
    """A top-level object, with `apiVersion` and `kind` filled in if the server left them empty."""
    out = encode_message(msg)
    info = of_message(msg)
    if info is not None:
        head: dict[str, Any] = {"apiVersion": out.pop("apiVersion", "") or info.api_version}
        head["kind"] = out.pop("kind", "") or info.kind
        out = {**head, **out}
    return out


def user_owned(data: dict[str, Any]) -> dict[str, Any]:
    """An encoded object without what the server owns (its `status` and the server-set
    metadata, schema.SERVER_SET_METADATA): what apply records and compares."""
    out = {k: v for k, v in data.items() if k != schema.STATUS}
    meta = out.get("metadata")
    if isinstance(meta, dict):
        out["metadata"] = {k: v for k, v in meta.items() if k not in schema.SERVER_SET_METADATA}
    return out


def encode_message(msg: Message) -> dict[str, Any]:
    desc = msg.DESCRIPTOR
    if desc.full_name == schema.RESOURCE_LIST:
        return _encode_resource_list(msg)
    out: dict[str, Any] = {}
    for spec in schema.fields_of(desc):
        value = _encode_field(msg, spec)
        if value is not _OMIT:
            out[spec.name] = value
    return out


class _Omit:
    pass


_OMIT: Any = _Omit()


def _encode_field(msg: Message, spec: FieldSpec) -> Any:
    fd = spec.fd
    value = getattr(msg, fd.name)
    if schema.is_map(fd):
        if not value:
            return _OMIT
        value_fd = fd.message_type.fields_by_name["value"]
        return {k: _encode_single(value_fd, value[k], spec) for k in sorted(value)}
    if schema.is_repeated(fd):
        if not value:
            return _OMIT
        return [_encode_single(fd, v, spec) for v in value]
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return _encode_single(fd, value, spec) if msg.HasField(fd.name) else _OMIT
    port_name = schema.PORT_NAME_FIELDS.get(spec.key)
    if port_name is not None and getattr(msg, port_name):
        return getattr(msg, port_name)  # `port: http` prints back as written
    if fd.has_presence:
        return _encode_single(fd, value, spec) if msg.HasField(fd.name) else _OMIT
    if value == fd.default_value and spec.key not in schema.ALWAYS_PRINTED:
        return _OMIT
    return _encode_single(fd, value, spec)


def _encode_single(fd: Any, value: Any, spec: FieldSpec) -> Any:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        if fd.message_type.full_name == schema.TIMESTAMP:
            return format_rfc3339(value)
        return encode_message(value)
    if spec.unit is Unit.CPU:
        return quantity.format_cpu(value)
    if spec.unit is Unit.BYTES:
        return quantity.format_memory(value)
    if spec.key in schema.STRING_INT_FIELDS:
        return str(value)
    if spec.key in schema.INT_OR_STRING_FIELDS and value.isdigit():
        return int(value)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return fd.enum_type.values_by_number[value].name
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()  # as Kubernetes writes []byte
    return value


def _encode_resource_list(msg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cpu = msg.cpu_millis
    memory = msg.memory_bytes
    pods = msg.pods
    storage = msg.ephemeral_storage_bytes
    if cpu:
        out["cpu"] = quantity.format_cpu(cpu)
    if memory:
        out["memory"] = quantity.format_memory(memory)
    if pods:
        out["pods"] = quantity.format_count(pods)
    if storage:
        out["ephemeral-storage"] = quantity.format_memory(storage)
    extended = msg.extended
    for name in sorted(extended):
        out[name] = quantity.format_count(extended[name])
    return out
