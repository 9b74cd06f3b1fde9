"""`cowpod describe`: one object in prose, with its conditions and events."""

from __future__ import annotations

import argparse
from typing import Any

from cowpod.cli.commands.common import Subparsers, add_command, split_type_name
from cowpod.cli.commands.rollout import owned_sets
from cowpod.cli.context import Ctx
from cowpod.cli.errors import CliError
from cowpod.cli.kinds import Related, all_kinds, entry, type_help
from cowpod.cli.resources import events_for, get_object, list_objects, resolve_kind
from cowpod.cli.safe_text import printable
from cowpod.manifest import KindInfo
from cowpod.manifest.kinds import ENDPOINTS, POD

EXAMPLES = """
  cowpod describe pod hello       # containers, state, exit code, conditions, events
  cowpod describe node vm-1       # capacity, allocatable, pods on it, allocated resources
  cowpod describe vm vm-1         # size, phase, lineage (parent, children), timing
  cowpod describe svc web         # selector, ports, the ready endpoints
  cowpod describe secret db       # its keys and their sizes, never the values
  cowpod describe deploy web      # replicas, strategy, conditions, old and new ReplicaSets
  cowpod describe job pi          # parallelism, completions, pods statuses
  cowpod describe ds/logs         # nodes scheduled, up to date, available
  cowpod describe ep web          # ready and not-ready addresses, ports
  cowpod describe ns team-a       # status, events
  cowpod describe cm game         # its data (a Secret shows sizes only)
  cowpod describe pc high         # value, global default, preemption policy
  cowpod describe lease -n cowpod-node-lease vm-1   # holder, renew time
  cowpod describe rs web-5d4f8b   # replicas, pods status, owner
  cowpod describe pods            # every pod in the namespace, one after another
  cowpod describe pods -l app=web # ... with these labels (-A: in every namespace)
"""


def add_parser(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "describe",
        parents,
        help="show objects of any kind in detail, with their events",
        description="Show objects in detail, kubectl-style, including Conditions and Events: the "
        "named ones, else every one of the type (with -l, those with the labels).",
        examples=EXAMPLES,
    )
    p.add_argument("type", metavar="TYPE", help=type_help(all_kinds()))
    p.add_argument("names", nargs="*", metavar="NAME", help="none: every object of the type (or -l)")
    p.add_argument("-l", "--selector", default="", help="describe the objects with these labels")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="across all namespaces")
    p.set_defaults(func=run)


async def related(ctx: Ctx, info: KindInfo, obj: Any) -> Related:
    """What the kind's describe shows beside the object (its table entry names it): a missing
    part is shown as none rather than failing the describe."""
    needs = entry(info).related
    events = await events_for(ctx, info, obj)
    pods: list[Any] = []
    sets: list[Any] = []
    endpoints = None
    if "pods_on_node" in needs:
        try:
            pods = await list_objects(ctx, POD, all_namespaces=True,
                                      field_selector=f"spec.nodeName={obj.metadata.name}")
        except CliError:
            pods = []
    if "replica_sets" in needs:
        sets = await owned_sets(ctx, obj)
    if "endpoints" in needs:
        try:
            endpoints = await get_object(ctx, ENDPOINTS, obj.metadata.name)
        except CliError:
            endpoints = None  # no selector, or the endpoints loop has not written them yet
    return Related(events=events, pods_on_node=pods, replica_sets=sets, endpoints=endpoints)  # type: ignore[arg-type]


async def run(ctx: Ctx, args: argparse.Namespace) -> int:
    kind, names = split_type_name(args.type, list(args.names))
    info = resolve_kind(kind, all_kinds())
    objects: list[Any] = []
    failed = 0
    if names:
        if args.selector:
            raise CliError("give names or a selector (-l), not both", exit_code=2)
        for name in names:  # as kubectl: describe those found, an error line for each missing one
            try:
                objects.append(await get_object(ctx, info, name))
            except CliError as e:
                if len(names) == 1:
                    raise
                ctx.err.write(printable(f"error: {e.message}") + "\n")
                failed += 1
    else:  # kubectl's `describe pods`: every one (of the selector)
        objects = await list_objects(ctx, info, all_namespaces=args.all_namespaces, selector=args.selector)
        if not objects:
            where = "" if args.all_namespaces or not info.namespaced else f" in {ctx.namespace} namespace"
            ctx.err.write(f"No resources found{where}.\n")
            return 0
    for i, obj in enumerate(objects):
        text = entry(info).describe(obj, await related(ctx, info, obj), ctx.now())
        if i:
            ctx.print()
        ctx.out.write(text)
    return 1 if failed else 0
