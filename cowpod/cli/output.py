"""Printing objects the way `-o` asks: a table, wide, yaml, json, name or jsonpath."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cowpod.cli import jsonpath, printers
from cowpod.cli.errors import CliError
from cowpod.manifest import KindInfo, as_list, dump_json, dump_yaml, encode_object
from cowpod.manifest.kinds import (
    CONFIGMAP,
    DAEMONSET,
    DEPLOYMENT,
    ENDPOINTS,
    EVENT,
    JOB,
    LEASE,
    NAMESPACE,
    NODE,
    POD,
    PRIORITYCLASS,
    REPLICASET,
    SECRET,
    SERVICE,
    VM,
)

FORMATS = ("wide", "yaml", "json", "name", "jsonpath=TEMPLATE")


def check_format(output: str | None) -> str | None:
    if output is None or output in ("wide", "yaml", "json", "name") or output.startswith("jsonpath="):
        return output
    raise CliError(f'unknown output format "{output}" (one of: {", ".join(FORMATS)})', exit_code=2)


def headers(info: KindInfo, *, wide: bool, all_namespaces: bool) -> list[str]:
    if info is POD:
        h = printers.POD_HEADERS + (printers.POD_WIDE if wide else [])
    elif info is NODE:
        h = printers.NODE_HEADERS + (printers.NODE_WIDE if wide else [])
    elif info is VM:
        h = printers.VM_HEADERS + (printers.VM_WIDE if wide else [])
    elif info is EVENT:
        h = list(printers.EVENT_HEADERS)
    elif info is LEASE:
        h = ["NAME", "HOLDER", "AGE"]
    elif info is REPLICASET:
        h = printers.REPLICASET_HEADERS + (printers.REPLICASET_WIDE if wide else [])
    elif info is DEPLOYMENT:
        h = printers.DEPLOYMENT_HEADERS + (printers.WORKLOAD_WIDE if wide else [])
    elif info is JOB:
        h = printers.JOB_HEADERS + (printers.WORKLOAD_WIDE if wide else [])
    elif info is DAEMONSET:
        h = printers.DAEMONSET_HEADERS + (printers.WORKLOAD_WIDE if wide else [])
    elif info is SERVICE:
        h = printers.SERVICE_HEADERS + (printers.SERVICE_WIDE if wide else [])
    elif info is ENDPOINTS:
        h = list(printers.ENDPOINTS_HEADERS)
    elif info is NAMESPACE:
        h = list(printers.NAMESPACE_HEADERS)
    elif info is CONFIGMAP:
        h = list(printers.CONFIGMAP_HEADERS)
    elif info is SECRET:
        h = list(printers.SECRET_HEADERS)
    elif info is PRIORITYCLASS:
        h = list(printers.PRIORITYCLASS_HEADERS)
    else:
        h = ["NAME"]
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
    if info is POD:
        r = printers.pod_row(obj, now, wide=wide)
    elif info is NODE:
        count = None if pods_per_node is None else pods_per_node.get(obj.metadata.name, 0)
        r = printers.node_row(obj, now, wide=wide, pods_on_node=count)
    elif info is VM:
        r = printers.vm_row(obj, now, wide=wide)
    elif info is EVENT:
        r = printers.event_row(obj, now)
    elif info is LEASE:
        r = [
            obj.metadata.name,
            obj.spec.holder_identity or printers.NONE,
            printers.age(
                obj.metadata.creation_timestamp, now, is_set=obj.metadata.HasField("creation_timestamp")
            ),
        ]
    elif info is REPLICASET:
        r = printers.replicaset_row(obj, now, wide=wide)
    elif info is DEPLOYMENT:
        r = printers.deployment_row(obj, now, wide=wide)
    elif info is JOB:
        r = printers.job_row(obj, now, wide=wide)
    elif info is DAEMONSET:
        r = printers.daemonset_row(obj, now, wide=wide)
    elif info is SERVICE:
        r = printers.service_row(obj, now, wide=wide)
    elif info is ENDPOINTS:
        r = printers.endpoints_row(obj, now)
    elif info is NAMESPACE:
        r = printers.namespace_row(obj, now)
    elif info is CONFIGMAP:
        r = printers.configmap_row(obj, now)
    elif info is SECRET:
        r = printers.secret_row(obj, now)
    elif info is PRIORITYCLASS:
        r = printers.priorityclass_row(obj, now)
    else:
        r = [obj.metadata.name]
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
    if info is EVENT:
        objects = printers.sort_events(objects)
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
