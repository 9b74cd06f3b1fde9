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
"""


def add_parser(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "describe",
        parents,
        help="show one object of any kind in detail, with its events",
        description="Show one object in detail, kubectl-style, including Conditions and Events.",
        examples=EXAMPLES,
    )
    p.add_argument("type", metavar="TYPE", help=type_help(all_kinds()))
    p.add_argument("names", nargs="*", metavar="NAME")
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
    if not names:
        raise CliError(
            f"name the {info.singular} to describe: cowpod describe {info.singular} NAME", exit_code=2
        )
    for i, name in enumerate(names):
        obj = await get_object(ctx, info, name)
        text = entry(info).describe(obj, await related(ctx, info, obj), ctx.now())
        if i:
            ctx.print()
        ctx.out.write(text)
    return 0
