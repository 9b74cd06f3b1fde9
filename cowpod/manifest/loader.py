"""Files -> decoded objects: YAML or JSON, many documents per file, `kind: List`.

A whole file (or stdin, `-`) is decoded before anything is sent, so a bad
third document stops `apply` before the first is stored. Errors carry the
file, the 1-based document number and the field path.

The YAML loader is PyYAML's safe loader with two changes: duplicate keys are
errors (PyYAML silently keeps the last), and timestamps stay strings (decoding
parses them as RFC 3339, so `creationTimestamp` round-trips exactly).
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass
from typing import Any, TextIO

import yaml
from google.protobuf.message import Message

from cowpod.manifest.decode import decode_object_fields, describe_value, join
from cowpod.manifest.errors import FieldError, ManifestError
from cowpod.manifest.kinds import BY_KIND, UNSUPPORTED_KINDS, KindInfo, Obj
from cowpod.manifest.validate import validate_object

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class _Loader(yaml.SafeLoader):
    pass


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if key in out:
            raise yaml.constructor.ConstructorError(None, None, f'duplicate key "{key}"', key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass(frozen=True)
class Document:
    """One object from a manifest, decoded and checked."""

    source: str
    index: int  # 1-based document number in the source
    item: int | None  # position inside a `kind: List`, if any
    info: KindInfo
    obj: Obj
    raw: dict[str, Any]  # the mapping as written (for last-applied)

    @property
    def where(self) -> str:
        return f"{self.source}: document {self.index}"

    @property
    def name(self) -> str:
        return str(self.obj.metadata.name)


def decode_object(data: Any, *, path: str = "", validate: bool = True) -> tuple[KindInfo, Message]:
    """One manifest mapping -> (kind, message). Raises FieldError."""
    if not isinstance(data, dict):
        raise FieldError(path, f"expected a mapping with apiVersion and kind, got {describe_value(data)}")
    kind = data.get("kind")
    if kind is None or kind == "":
        raise FieldError(join(path, "kind"), "required (e.g. Pod, VM, Node)")
    if not isinstance(kind, str):
        raise FieldError(join(path, "kind"), f"expected a string, got {describe_value(kind)}")
    info = BY_KIND.get(kind)
    if info is None and kind in UNSUPPORTED_KINDS:
        raise FieldError(join(path, "kind"), f"{kind}: {UNSUPPORTED_KINDS[kind]}")
    if info is None:
        known = ", ".join(sorted(BY_KIND))
        raise FieldError(join(path, "kind"), f'unknown kind "{kind}" (known: {known}, List)')
    api_version = data.get("apiVersion")
    if api_version is None or api_version == "":
        raise FieldError(join(path, "apiVersion"), f"required ({info.api_version} for {info.kind})")
    if api_version not in info.api_versions:
        raise FieldError(
            join(path, "apiVersion"),
            f'"{api_version}" is not served for kind {info.kind} (use {info.api_version})',
        )
    msg = info.message()
    decode_object_fields(data, msg, path)
    if validate:
        try:
            validate_object(info, msg)
        except FieldError as e:
            raise FieldError(join(path, e.path), e.reason) from None
    return info, msg


def _is_list(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("kind"), str) and data["kind"].endswith("List")


def _documents_of(text: str, source: str) -> list[tuple[int, Any]]:
    """(1-based index, parsed data) for each non-empty document."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            return [(1, json.loads(text, object_pairs_hook=_json_object))]
        except ValueError as e:
            if isinstance(e, ManifestError):
                raise
            # Not strict JSON: let the YAML parser (a superset) try and explain.
    docs: list[tuple[int, Any]] = []
    index = 0
    try:
        for index, data in enumerate(yaml.load_all(text, Loader=_Loader), start=1):
            if data is not None:
                docs.append((index, data))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ManifestError(source, index + 1, "", f"{where}invalid YAML: {problem}") from None
    return docs


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ManifestError("", None, "", f'invalid JSON: duplicate key "{k}"')
        out[k] = v
    return out


def load_text(text: str, source: str, *, validate: bool = True) -> list[Document]:
    """Decode every document of one file. Raises ManifestError on the first bad one."""
    try:
        parsed = _documents_of(text, source)
    except ManifestError as e:
        if e.source:
            raise
        raise ManifestError(source, 1, e.path, e.reason) from None
    out: list[Document] = []
    for index, data in parsed:
        items: list[tuple[int | None, Any, str]]
        if _is_list(data):
            extra = set(data) - {"apiVersion", "kind", "items", "metadata"}
            if extra:
                raise ManifestError(source, index, sorted(extra)[0], "unknown field")
            raw_items = data.get("items") or []
            if not isinstance(raw_items, list):
                raise ManifestError(
                    source, index, "items", f"expected a list, got {describe_value(raw_items)}"
                )
            items = [(i, item, f"items[{i}]") for i, item in enumerate(raw_items)]
        else:
            items = [(None, data, "")]
        for item_index, item, path in items:
            if _is_list(item):
                raise ManifestError(source, index, path, "a List may not contain another List")
            try:
                info, msg = decode_object(item, path=path, validate=validate)
            except FieldError as e:
                raise ManifestError(source, index, e.path, e.reason) from None
            out.append(Document(source, index, item_index, info, msg, item))
    return out


def read_source(path: str, stdin: TextIO) -> list[tuple[str, str]]:
    """(source name, text) for a file, a directory (its manifests, sorted) or `-` (stdin)."""
    if path == "-":
        return [("stdin", stdin.read())]
    p = pathlib.Path(path)
    try:
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix in MANIFEST_SUFFIXES and f.is_file())
            if not files:
                raise ManifestError(path, None, "", "no .yaml, .yml or .json files in this directory")
            return [(str(f), f.read_text()) for f in files]
        return [(path, p.read_text())]
    except FileNotFoundError:
        raise ManifestError(path, None, "", "no such file") from None
    except IsADirectoryError:
        raise ManifestError(path, None, "", "is a directory") from None
    except PermissionError:
        raise ManifestError(path, None, "", "permission denied") from None
    except UnicodeDecodeError:
        raise ManifestError(path, None, "", "not a text file (expected YAML or JSON)") from None


def load_paths(paths: list[str], stdin: TextIO, *, validate: bool = True) -> list[Document]:
    """Every document of every file, all decoded before the caller sends anything."""
    docs: list[Document] = []
    for path in paths:
        for source, text in read_source(path, stdin):
            docs.extend(load_text(text, source, validate=validate))
    if not docs:
        raise ManifestError(", ".join(paths), None, "", "no objects found")
    return docs
