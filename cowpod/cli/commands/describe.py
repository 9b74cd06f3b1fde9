"""`cowpod describe`: one object in prose, with its conditions and events."""

from __future__ import annotations

import argparse

from cowpod.cli import describe
from cowpod.cli.commands.common import Subparsers, add_command, split_type_name
from cowpod.cli.commands.rollout import owned_sets
from cowpod.cli.context import Ctx
from cowpod.cli.errors import CliError
from cowpod.cli.resources import events_for, get_object, list_objects, resolve_kind
from cowpod.manifest.kinds import (
    CONFIGMAP,
    DAEMONSET,
    DEPLOYMENT,
    ENDPOINTS,
    JOB,
    NAMESPACE,
    NODE,
    POD,
    REPLICASET,
    SECRET,
    SERVICE,
    VM,
)

EXAMPLES = """
  cowpod describe pod hello       # containers, state, exit code, conditions, events
  cowpod describe node vm-1       # capacity, allocatable, pods on it, allocated resources
  cowpod describe vm vm-1         # size, phase, lineage (parent, children), timing
  cowpod describe svc web         # selector, ports, the ready endpoints
  cowpod describe secret db       # its keys and their sizes, never the values
  cowpod describe deploy web      # replicas, strategy, conditions, old and new ReplicaSets
  cowpod describe job pi          # parallelism, completions, pods statuses
"""


def add_parser(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "describe",
        parents,
        help="show one pod, node or VM in detail, with its events",
        description="Show one object in detail, kubectl-style, including Conditions and Events.",
        examples=EXAMPLES,
    )
    p.add_argument("type", metavar="TYPE", help="pod | node | vm (or TYPE/NAME)")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.set_defaults(func=run)


async def run(ctx: Ctx, args: argparse.Namespace) -> int:
    kind, names = split_type_name(args.type, list(args.names))
    info = resolve_kind(kind, (POD, NODE, VM, NAMESPACE, CONFIGMAP, SECRET, DEPLOYMENT, REPLICASET, JOB,
                               DAEMONSET, SERVICE))
    if not names:
        raise CliError(
            f"name the {info.singular} to describe: cowpod describe {info.singular} NAME", exit_code=2
        )
    for i, name in enumerate(names):
        obj = await get_object(ctx, info, name)
        events = await events_for(ctx, info, obj)
        if info is POD:
            text = describe.describe_pod(obj, events, ctx.now())  # type: ignore[arg-type]
        elif info is NODE:
            try:
                pods = await list_objects(
                    ctx, POD, all_namespaces=True, field_selector=f"spec.nodeName={name}"
                )
            except CliError:
                pods = []
            text = describe.describe_node(obj, pods, events, ctx.now())  # type: ignore[arg-type]
        elif info is NAMESPACE:
            text = describe.describe_namespace(obj, events, ctx.now())  # type: ignore[arg-type]
        elif info is CONFIGMAP:
            text = describe.describe_configmap(obj, events, ctx.now())  # type: ignore[arg-type]
        elif info is SECRET:
            text = describe.describe_secret(obj, events, ctx.now())  # type: ignore[arg-type]
        elif info is DEPLOYMENT:
            sets = await owned_sets(ctx, obj)  # type: ignore[arg-type]
            text = describe.describe_deployment(obj, sets, events, ctx.now())  # type: ignore[arg-type]
        elif info is REPLICASET:
            text = describe.describe_replicaset(obj, events, ctx.now())  # type: ignore[arg-type]
        elif info is JOB:
            text = describe.describe_job(obj, events, ctx.now())  # type: ignore[arg-type]
        elif info is DAEMONSET:
            text = describe.describe_daemonset(obj, events, ctx.now())  # type: ignore[arg-type]
        elif info is SERVICE:
            try:
                ep = await get_object(ctx, ENDPOINTS, name)
            except CliError:
                ep = None  # no selector, or the endpoints loop has not written them yet
            text = describe.describe_service(obj, ep, events, ctx.now())  # type: ignore[arg-type]
        else:
            text = describe.describe_vm(obj, events, ctx.now())  # type: ignore[arg-type]
        if i:
            ctx.print()
        ctx.out.write(text)
    return 0
