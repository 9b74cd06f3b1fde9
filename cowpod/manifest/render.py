"""Objects -> YAML or JSON text, the way `kubectl get -o yaml|json` prints them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml
from google.protobuf.message import Message

from cowpod.manifest.encode import encode_object


class _Dumper(yaml.SafeDumper):
    """Block style, lists flush with their key, as kubectl prints them."""


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # Multi-line strings (scripts in `args`) as literal blocks, readable and exact.
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_presenter)


def as_list(objects: Sequence[Message]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": [encode_object(o) for o in objects],
    }


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def to_yaml(obj: Message) -> str:
    return dump_yaml(encode_object(obj))


def to_json(obj: Message) -> str:
    return dump_json(encode_object(obj))
