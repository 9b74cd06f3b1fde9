"""`cowpod get`: tables, or the objects as YAML/JSON, optionally watching for changes."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

import grpc

from cowpod.cli import jsonpath, output, printers
from cowpod.cli.commands.common import Subparsers, add_command, split_type_name
from cowpod.cli.context import Ctx
from cowpod.cli.errors import CliError, rpc_error
from cowpod.cli.kinds import ALL_CATEGORY, all_kinds, entry, type_help
from cowpod.cli.resources import get_object, list_objects, list_options, resolve_kind, service, what
from cowpod.cli.safe_text import printable
from cowpod.manifest import KindInfo, as_list, dump_json, dump_yaml, encode_object
from cowpod.manifest.kinds import EVENT, NODE, POD
from cowpod.v1 import event_pb2, meta_pb2

EXAMPLES = """
  cowpod get pods                       # pods in the current namespace
  cowpod get pods -o wide               # ... with their IP and node
  cowpod get pod hello -o yaml          # one pod, in full, as YAML
  cowpod get pods -l app=web -A         # by label, in every namespace
  cowpod get nodes -o wide              # nodes with IP, allocatable CPU/memory and pod count
  cowpod get vms -o wide                # VMs with IP, clone kind and children
  cowpod get events -w                  # events, then new ones as they happen
  cowpod get pod web -o jsonpath='{.status.podIP}'
  cowpod get pods,deploy,svc            # several kinds at once
  cowpod get all                        # pods, services, daemonsets, deployments, replicasets, jobs
  cowpod get pods --show-labels         # ... with their labels
  cowpod get pods --sort-by=.metadata.creationTimestamp
  cowpod get deploy,rs,job,ds -o wide   # workloads with their containers, images and selector
  cowpod get svc,ep                     # Services and the ready addresses behind them
  cowpod get ns; cowpod get cm,secrets; cowpod get pc
  cowpod get deploy web -w              # watch one object change (every kind but leases)
"""


def add_parser(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "get",
        parents,
        help="list objects of any kind in a table, or print them",
        description="List objects in a kubectl-style table, or print them as YAML, JSON or names.",
        examples=EXAMPLES,
    )
    p.add_argument("type", metavar="TYPE", help=type_help(all_kinds()) + "; several: pods,deploy; all")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these objects")
    p.add_argument("-o", "--output", metavar="FORMAT", help="wide | yaml | json | name | jsonpath=TEMPLATE")
    p.add_argument("-l", "--selector", default="", help="label selector, e.g. app=web,tier!=db")
    p.add_argument("--field-selector", default="", help="e.g. spec.nodeName=vm-1, status.phase=Running")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="list across all namespaces")
    p.add_argument("-w", "--watch", action="store_true", help="after listing, print changes as they happen")
    p.add_argument("--no-headers", action="store_true", help="omit the table header")
    p.add_argument("--show-labels", action="store_true", help="add a LABELS column")
    p.add_argument("--sort-by", default="", metavar="JSONPATH",
                   help="sort by a field, e.g. .metadata.name or '{.status.startTime}'")
    p.set_defaults(func=run)


async def run(ctx: Ctx, args: argparse.Namespace) -> int:
    if "," in args.type or args.type == "all":
        return await _run_several(ctx, args)
    kind, names = split_type_name(args.type, list(args.names))
    info = resolve_kind(kind)
    fmt = output.check_format(args.output)
    if args.watch:
        return await _watch(ctx, info, names, fmt, args)
    objects: list[Any]
    failed = 0
    if names:
        objects = []
        for name in names:
            try:
                objects.append(await get_object(ctx, info, name))
            except CliError as e:
                if len(names) == 1:
                    raise
                ctx.err.write(printable(f"error: {e.message}") + "\n")
                failed += 1
    else:
        objects = await list_objects(
            ctx,
            info,
            all_namespaces=args.all_namespaces,
            selector=args.selector,
            field_selector=args.field_selector,
        )
        objects = sort_by(objects, args.sort_by)
        if not objects and fmt not in ("yaml", "json"):
            where = "" if args.all_namespaces or not info.namespaced else f" in {ctx.namespace} namespace"
            ctx.err.write(f"No resources found{where}.\n")
            return 0
    per_node = await _pods_per_node(ctx) if info is NODE and fmt == "wide" else None
    if objects or fmt in ("yaml", "json"):
        ctx.out.write(
            output.render_objects(
                info,
                objects,
                ctx.now(),
                output=fmt,
                single=len(names) == 1,
                all_namespaces=args.all_namespaces,
                no_headers=args.no_headers,
                pods_per_node=per_node,
                show_labels=args.show_labels,
            )
        )
    return 1 if failed else 0


def sort_by(objects: list[Any], path: str) -> list[Any]:
    """kubectl's --sort-by: by the value at a JSONPath of each object as printed; numbers
    as numbers, missing values first."""
    if not path:
        return objects
    template = path if path.startswith("{") else "{" + path + "}"

    def key(o: Any) -> tuple[int, float, str]:
        try:
            text = jsonpath.render(encode_object(o), template).strip()
        except jsonpath.JsonPathError as e:
            raise CliError(f"--sort-by {path!r}: {e}", exit_code=2) from None
        try:
            return (1, float(text), "")
        except ValueError:
            return (1 if text else 0, 0.0, text)

    return sorted(objects, key=key)


async def _run_several(ctx: Ctx, args: argparse.Namespace) -> int:
    """`get pods,deploy`: each kind's table in turn (names as `pod/web`), or one List."""
    if args.names or args.watch:
        raise CliError("name objects or watch with one TYPE at a time (e.g. `get pod web`)", exit_code=2)
    fmt = output.check_format(args.output)
    kinds: list[KindInfo] = []
    for k in filter(None, args.type.split(",")):
        for info in ALL_CATEGORY if k == "all" else (resolve_kind(k),):
            if info not in kinds:
                kinds.append(info)
    found: list[tuple[KindInfo, list[Any]]] = []
    for info in kinds:
        objects = await list_objects(ctx, info, all_namespaces=args.all_namespaces, selector=args.selector,
                                     field_selector=args.field_selector)
        found.append((info, sort_by(objects, args.sort_by)))
    if fmt in ("yaml", "json") or (fmt or "").startswith("jsonpath="):
        everything = [o for _, objs in found for o in objs]
        items = as_list(everything)
        if fmt == "yaml":
            ctx.out.write(dump_yaml(items))
        elif fmt == "json":
            ctx.out.write(dump_json(items))
        else:
            assert fmt is not None
            try:
                ctx.out.write(jsonpath.render(items, fmt.removeprefix("jsonpath=")) + "\n")
            except jsonpath.JsonPathError as e:
                raise CliError(f"bad jsonpath: {e}", exit_code=2) from None
        return 0
    tables = [output.render_objects(info, objs, ctx.now(), output=fmt, all_namespaces=args.all_namespaces,
                                    no_headers=args.no_headers, show_labels=args.show_labels,
                                    prefix_names=True)
              for info, objs in found if objs]
    if not tables:
        ctx.err.write("No resources found.\n")
    ctx.out.write("\n".join(tables))
    return 0


async def _pods_per_node(ctx: Ctx) -> dict[str, int]:
    try:
        pods = await list_objects(ctx, POD, all_namespaces=True)
    except CliError:
        return {}
    counts: Counter[str] = printers.pods_per_node(pods)
    return dict(counts)


async def _watch(
    ctx: Ctx, info: KindInfo, names: list[str], fmt: str | None, args: argparse.Namespace
) -> int:
    """List, print, then watch from the list's revision: kubectl's way, with no gap and no repeat."""
    if not entry(info).can_watch:
        raise CliError(f"{info.plural} cannot be watched (the server has no watch for them); list them "
                       f"again instead", exit_code=2)
    field_selector = args.field_selector
    if len(names) == 1:
        field_selector = ",".join(s for s in (field_selector, f"metadata.name={names[0]}") if s)
    opts = list_options(
        ctx, info, all_namespaces=args.all_namespaces, selector=args.selector, field_selector=field_selector
    )
    svc = service(ctx, info)
    request: Any = event_pb2.ListEventsRequest(list=opts) if info is EVENT else opts
    listed = await ctx.call(svc.List, request, what=info.plural, retry=True)
    items = [o for o in listed.items if not names or o.metadata.name in names]
    table = fmt in (None, "wide")
    wide = fmt == "wide"
    hdrs = output.headers(info, wide=wide, all_namespaces=args.all_namespaces)
    widths = [len(h) for h in hdrs]
    if table:
        rows = [output.row(info, o, ctx.now(), wide=wide, all_namespaces=args.all_namespaces) for o in items]
        for cells in rows:
            widths = [max(w, len(c)) for w, c in zip(widths, cells, strict=True)]
        for cells in ([] if args.no_headers else [hdrs]) + rows:
            ctx.print(_line(cells, widths))
    else:
        for o in items:
            _print_object(ctx, info, o, fmt)
    ctx.out.flush()
    req = meta_pb2.WatchOptions(list=opts, resource_version=listed.resource_version)
    try:
        async for ev in svc.Watch(req):
            if ev.type == meta_pb2.BOOKMARK or not ev.HasField("object"):
                continue
            obj = ev.object
            if names and obj.metadata.name not in names:
                continue
            if table:
                cells = output.row(info, obj, ctx.now(), wide=wide, all_namespaces=args.all_namespaces)
                widths = [max(w, len(c)) for w, c in zip(widths, cells, strict=True)]
                ctx.print(_line(cells, widths))
            else:
                _print_object(ctx, info, obj, fmt)
            ctx.out.flush()
    except grpc.RpcError as e:
        raise rpc_error(e, address=ctx.config.controller, what=what(info, names[0]) if names else "") from e
    return 0


def _print_object(ctx: Ctx, info: KindInfo, obj: Any, fmt: str | None) -> None:
    if fmt == "name":
        ctx.print(f"{info.singular}/{obj.metadata.name}")
    elif fmt == "json":
        ctx.out.write(dump_json(encode_object(obj)))
    elif fmt is not None and fmt.startswith("jsonpath="):
        ctx.out.write(output.render_objects(info, [obj], ctx.now(), output=fmt, single=True))
    else:
        ctx.out.write("---\n" + dump_yaml(encode_object(obj)))


def _line(cells: list[str], widths: list[int]) -> str:
    return "   ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
