"""`cowpod cordon` / `uncordon`: mark a node (un)schedulable (NodeService.Update spec.unschedulable)."""

from __future__ import annotations

import argparse

import grpc

from cowpod.cli.commands.common import Subparsers, add_command
from cowpod.cli.context import Ctx
from cowpod.cli.errors import CliError, code_of, rpc_error
from cowpod.cli.resources import what
from cowpod.manifest.kinds import NODE
from cowpod.v1 import meta_pb2, node_pb2


def add_parser(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    for verb, flag, text in (
        ("cordon", True, "mark a node unschedulable: new pods go elsewhere, running pods stay"),
        ("uncordon", False, "mark a node schedulable again"),
    ):
        p = add_command(
            sub,
            verb,
            parents,
            help=text,
            description=text[0].upper() + text[1:] + ".",
            examples=f"  cowpod {verb} vm-1\n  cowpod get nodes        # STATUS shows "
            + ("Ready,SchedulingDisabled" if flag else "Ready")
            + "\n",
        )
        p.add_argument("nodes", nargs="+", metavar="NODE")
        p.set_defaults(func=run, unschedulable=flag)


async def set_unschedulable(ctx: Ctx, name: str, value: bool) -> bool:
    """Returns False if the node already was so. Retries a lost compare-and-swap."""
    for _ in range(5):
        node: node_pb2.Node = await ctx.call(
            ctx.client.nodes.Get, meta_pb2.ObjectKey(name=name), what=what(NODE, name), retry=True
        )
        if node.spec.unschedulable == value:
            return False
        node.spec.unschedulable = value
        try:
            await ctx.client.nodes.Update(node, timeout=30)
            return True
        except grpc.RpcError as e:
            if code_of(e) != grpc.StatusCode.ABORTED:
                raise rpc_error(e, address=ctx.config.controller, what=what(NODE, name)) from e
    raise CliError(f"node/{name} keeps changing; try again")


async def run(ctx: Ctx, args: argparse.Namespace) -> int:
    verb = "cordoned" if args.unschedulable else "uncordoned"
    for name in args.nodes:
        changed = await set_unschedulable(ctx, name, args.unschedulable)
        ctx.print(f"node/{name} {verb}" if changed else f"node/{name} already {verb}")
    return 0
