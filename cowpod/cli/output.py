"""Printing objects the way `-o` asks: a table, wide, yaml, json, name or jsonpath."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cowpod.cli import jsonpath, printers
from cowpod.cli.errors import CliError
from cowpod.cli.kinds import RowContext, entry
from cowpod.manifest import KindInfo, as_list, dump_json, dump_yaml, encode_object

FORMATS = ("wide", "yaml", "json", "name", "jsonpath=TEMPLATE")


def check_format(output: str | None) -> str | None:
    if output is None or output in ("wide", "yaml", "json", "name") or output.startswith("jsonpath="):
        return output
    raise CliError(f'unknown output format "{output}" (one of: {", ".join(FORMATS)})', exit_code=2)


def headers(info: KindInfo, *, wide: bool, all_namespaces: bool) -> list[str]:
    """The table's columns for a kind (its entry in `cowpod.cli.kinds`), NAMESPACE first with -A."""
    h = entry(info).header_row(wide=wide)
    return (["NAMESPACE"] if all_namespaces and info.namespaced else []) + h


def row(
    info: KindInfo,
    obj: Any,
    now: float,
    *,
    wide: bool,
    all_namespaces: bool,
    pods_per_node: dict[str, int] | None = None,
) -> list[str]:
    r = entry(info).row(obj, now, RowContext(wide=wide, pods_per_node=pods_per_node))
    if all_namespaces and info.namespaced:
        r = [obj.metadata.namespace or "default", *r]
    return r


def render_objects(
    info: KindInfo,
    objects: Sequence[Any],
    now: float,
    *,
    output: str | None,
    single: bool = False,
    all_namespaces: bool = False,
    no_headers: bool = False,
    pods_per_node: dict[str, int] | None = None,
    show_labels: bool = False,
    prefix_names: bool = False,
) -> str:
    """The whole text for a `get`. `single` prints one object rather than a List for yaml/json.
    `show_labels` adds a LABELS column; `prefix_names` writes names as `pod/web`, as kubectl
    does when one `get` lists several kinds."""
    if output == "name":
        return "".join(f"{info.singular}/{o.metadata.name}\n" for o in objects)
    if output in ("yaml", "json"):
        data = encode_object(objects[0]) if single and len(objects) == 1 else as_list(objects)
        return dump_yaml(data) if output == "yaml" else dump_json(data)
    if output is not None and output.startswith("jsonpath="):
        template = output.removeprefix("jsonpath=")
        data = encode_object(objects[0]) if single and len(objects) == 1 else as_list(objects)
        try:
            text = jsonpath.render(data, template)
        except jsonpath.JsonPathError as e:
            raise CliError(f"bad jsonpath: {e}", exit_code=2) from None
        return text if text.endswith("\n") or not text else text + "\n"
    wide = output == "wide"
    order = entry(info).order
    if order is not None:
        objects = order(objects)
    rows = [
        row(info, o, now, wide=wide, all_namespaces=all_namespaces, pods_per_node=pods_per_node)
        for o in objects
    ]
    h = headers(info, wide=wide, all_namespaces=all_namespaces)
    if prefix_names:
        at = h.index("NAME") if "NAME" in h else -1
        for r, o in zip(rows, objects, strict=True):
            if at >= 0:
                r[at] = f"{info.singular}/{o.metadata.name}"
    if show_labels:
        h = [*h, "LABELS"]
        for r, o in zip(rows, objects, strict=True):
            r.append(",".join(f"{k}={v}" for k, v in sorted(o.metadata.labels.items())) or printers.NONE)
    text = printers.render_table(h, rows)
    if no_headers:
        text = "".join(text.splitlines(keepends=True)[1:])
    return text
