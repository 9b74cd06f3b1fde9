"""Manifest mapping -> protobuf, rejecting what does not fit with a field path.

Decoding walks the message descriptor, so it knows every field's type: an
unknown key, a string where a number belongs, or a value outside its allowed
set stops decoding with a `FieldError` naming the path
(`spec.containers[0].ports[1].containerPort`). `null` means "not set", as in
Kubernetes.

One exception, so that `get -o yaml` output (or a Kubernetes cluster's export) applies
back: what the server owns. An object's `status` is decoded leniently (a field that does
not fit cowpod's status, such as a Deployment condition's `lastUpdateTime`, is dropped,
not refused), and server-set metadata cowpod does not keep (`managedFields`, `selfLink`)
is dropped (schema.SERVER_SET_METADATA); apply and create then ignore both.
"""

from __future__ import annotations

import base64
import binascii
import difflib
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from cowpod.api import quantity
from cowpod.manifest import schema
from cowpod.manifest.errors import FieldError
from cowpod.manifest.schema import FieldSpec, Unit
from cowpod.manifest.timefmt import parse_rfc3339


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def describe_value(value: Any) -> str:
    """How a YAML value reads in an error: `integer 1`, `a list`, `string "x"`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'string "{shown}"'
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def decode_object_fields(data: Any, msg: Message, path: str) -> None:
    """Fill a top-level object (`msg` of a kind) from its manifest mapping: strictly, but its
    `status`, which the server owns, leniently (see the module docstring)."""
    status_fd = msg.DESCRIPTOR.fields_by_name.get(schema.STATUS)
    if not isinstance(data, dict) or status_fd is None or data.get(schema.STATUS) is None:
        decode_into(data, msg, path)
        return
    decode_into({k: v for k, v in data.items() if k != schema.STATUS}, msg, path)
    try:
        _decode_field(msg, schema.FieldSpec(schema.STATUS, status_fd), data[schema.STATUS],
                      join(path, schema.STATUS), lenient=True)
    except FieldError:
        msg.ClearField(status_fd.name)  # not even a mapping: dropped


def decode_into(data: Any, msg: Message, path: str, *, lenient: bool = False) -> None:
    """Fill `msg` from a manifest mapping (merging into what is already set). `lenient`: skip
    unknown fields and drop those that do not decode, instead of refusing them (a status)."""
    desc = msg.DESCRIPTOR
    if desc.full_name == schema.RESOURCE_LIST:
        _decode_resource_list(data, msg, path)
        return
    if desc.full_name == schema.TIMESTAMP:
        raise AssertionError("timestamps are decoded by their parent field")
    if not isinstance(data, dict):
        raise FieldError(path, f"expected a mapping, got {describe_value(data)}")
    names = schema.input_names(desc)
    seen: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise FieldError(path, f"field names must be strings, got {describe_value(key)}")
        fpath = join(path, key)
        spec = names.get(key)
        if spec is None:
            if lenient or (desc.full_name == schema.OBJECT_META and key in schema.SERVER_SET_METADATA):
                continue  # the server's, not cowpod's: dropped
            if value in schema.ACCEPTED_AS_IS.get((desc.full_name, key), ()):
                continue  # what happens here anyway (schema.ACCEPTED_AS_IS)
            refused = schema.REFUSED_FIELDS.get((desc.full_name, key))
            if refused is not None:
                raise FieldError(fpath, refused)
            raise FieldError(fpath, "unknown field" + _did_you_mean(key, desc))
        if spec.fd.name in seen:
            if lenient:
                continue
            raise FieldError(fpath, f"set twice (also as {seen[spec.fd.name]})")
        seen[spec.fd.name] = key
        if value is None:
            continue
        if not lenient:
            _decode_field(msg, spec, value, fpath)
            continue
        try:
            _decode_field(msg, spec, value, fpath, lenient=True)
        except FieldError:
            msg.ClearField(spec.fd.name)  # does not fit: dropped


def _did_you_mean(key: str, desc: Any) -> str:
    close = difflib.get_close_matches(key, [s.name for s in schema.fields_of(desc)], n=1, cutoff=0.75)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _decode_field(msg: Message, spec: FieldSpec, value: Any, path: str, *, lenient: bool = False) -> None:
    fd = spec.fd
    if schema.is_map(fd):
        _decode_map(msg, fd, value, path, lenient=lenient)
    elif schema.is_repeated(fd):
        if not isinstance(value, list):
            raise FieldError(path, f"expected a list, got {describe_value(value)}")
        container = getattr(msg, fd.name)
        for i, item in enumerate(value):
            ipath = f"{path}[{i}]"
            if item is None:
                raise FieldError(ipath, "must not be null")
            if fd.type == FieldDescriptor.TYPE_MESSAGE:
                _decode_message_value(item, container.add(), ipath, lenient=lenient)
            else:
                container.append(_scalar(spec, item, ipath))
    elif fd.type == FieldDescriptor.TYPE_MESSAGE:
        sub = getattr(msg, fd.name)
        sub.SetInParent()
        _decode_message_value(value, sub, path, lenient=lenient)
    elif spec.key in schema.PORT_NAME_FIELDS and isinstance(value, str) and not value.isdigit():
        setattr(msg, schema.PORT_NAME_FIELDS[spec.key], value)  # `port: http`, resolved at create
    else:
        if spec.key in schema.PORT_NAME_FIELDS and isinstance(value, str):
            value = int(value)
        setattr(msg, fd.name, _scalar(spec, value, path))


def _decode_message_value(value: Any, sub: Message, path: str, *, lenient: bool = False) -> None:
    if sub.DESCRIPTOR.full_name == schema.TIMESTAMP:
        if not isinstance(value, str):
            raise FieldError(path, f"expected an RFC 3339 time string, got {describe_value(value)}")
        try:
            sub.CopyFrom(parse_rfc3339(value))
        except ValueError as e:
            raise FieldError(path, str(e)) from None
        return
    decode_into(value, sub, path, lenient=lenient)


def _decode_map(msg: Message, fd: Any, value: Any, path: str, *, lenient: bool = False) -> None:
    if not isinstance(value, dict):
        raise FieldError(path, f"expected a mapping, got {describe_value(value)}")
    target = getattr(msg, fd.name)
    value_fd = fd.message_type.fields_by_name["value"]
    for k, v in value.items():
        kpath = f"{path}[{k}]"
        if not isinstance(k, str):
            raise FieldError(path, f"keys must be strings, got {describe_value(k)} (quote it)")
        if v is None:
            raise FieldError(kpath, "must not be null (use an empty string)")
        if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
            _decode_message_value(v, target[k], kpath, lenient=lenient)
        else:
            target[k] = _scalar(FieldSpec(k, value_fd), v, kpath)


def _scalar(spec: FieldSpec, value: Any, path: str) -> Any:
    fd = spec.fd
    key = spec.key
    if spec.unit is not None:
        return _quantity(spec.unit, value, path)
    if key in schema.STRING_INT_FIELDS:
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        elif isinstance(value, str) and value == "":
            return 0
    if key in schema.INT_OR_STRING_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if fd.type == FieldDescriptor.TYPE_STRING:
        if not isinstance(value, str):
            raise FieldError(path, f"expected a string, got {describe_value(value)} (quote it)")
        allowed = schema.ALLOWED_VALUES.get(key)
        if allowed is not None and value and value not in allowed:
            raise FieldError(path, f'unsupported value "{value}": must be one of {", ".join(allowed)}')
        return value
    if fd.type == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            raise FieldError(path, f"expected true or false, got {describe_value(value)}")
        return value
    bounds = schema.int_bounds(fd)
    if bounds is not None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(path, f"expected an integer, got {describe_value(value)}")
        lo, hi = schema.INT_RANGES.get(key, bounds)
        if value == 0 and not fd.has_presence and key in schema.INT_RANGES:
            return value  # 0 = unset: the server's default applies
        if not lo <= value <= hi:
            raise FieldError(path, f"{value} is out of range ({lo}..{hi})")
        return value
    if fd.type == FieldDescriptor.TYPE_BYTES:
        # Bytes are base64 in manifests, as Kubernetes writes []byte (Secret data, binaryData).
        if not isinstance(value, str):
            raise FieldError(path, f"expected a base64 string, got {describe_value(value)}")
        try:
            return base64.b64decode("".join(value.split()), validate=True)
        except binascii.Error:
            raise FieldError(path, "illegal base64 data (use stringData for plain text)") from None
    if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FieldError(path, f"expected a number, got {describe_value(value)}")
        return float(value)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        if not isinstance(value, str) or value not in fd.enum_type.values_by_name:
            names = ", ".join(v.name for v in fd.enum_type.values)
            raise FieldError(path, f"expected one of {names}, got {describe_value(value)}")
        return fd.enum_type.values_by_name[value].number
    raise FieldError(path, f"unsupported field type {fd.type}")


def _quantity(unit: Unit, value: Any, path: str) -> int:
    if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FieldError(path, f"expected a quantity, got {describe_value(value)}")
    try:
        return quantity.parse_cpu(value) if unit is Unit.CPU else quantity.parse_memory(value)
    except quantity.QuantityError as e:
        raise FieldError(path, str(e)) from None


# Kubernetes resource names and the ResourceList fields they fill.
_RESOURCE_FIELDS: dict[str, tuple[str, Unit | None]] = {
    "cpu": ("cpu_millis", Unit.CPU),
    "memory": ("memory_bytes", Unit.BYTES),
    "pods": ("pods", None),
    "ephemeral-storage": ("ephemeral_storage_bytes", Unit.BYTES),
}


def _decode_resource_list(data: Any, msg: Any, path: str) -> None:
    if not isinstance(data, dict):
        raise FieldError(
            path, f"expected a mapping of resource names to quantities, got {describe_value(data)}"
        )
    for name, value in data.items():
        rpath = join(path, str(name))
        if value is None:
            continue
        if name in _RESOURCE_FIELDS:
            field, unit = _RESOURCE_FIELDS[name]
            if unit is None:
                setattr(msg, field, _count(value, rpath))
            else:
                setattr(msg, field, _quantity(unit, value, rpath))
        elif isinstance(name, str) and "/" in name:
            msg.extended[name] = _count(value, rpath)
        else:
            close = difflib.get_close_matches(str(name), list(_RESOURCE_FIELDS), n=1, cutoff=0.6)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            raise FieldError(
                rpath,
                "unknown resource" + hint + "; use cpu, memory, pods, ephemeral-storage "
                "or a domain-prefixed name such as example.com/gpu",
            )


def _count(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FieldError(path, f"expected a quantity, got {describe_value(value)}")
    try:
        return quantity.parse_count(value)
    except quantity.QuantityError as e:
        raise FieldError(path, str(e)) from None
