"""`cowpod version`: this CLI's version, and whether the controller answers."""

from __future__ import annotations

import argparse
import importlib.metadata
import platform

import grpc

from cowpod.cli.commands.common import Subparsers, add_command
from cowpod.cli.context import Ctx


def add_parser(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "version",
        parents,
        help="print the version of the CLI (and whether the controller answers)",
        description="Print the client version and the controller's health.",
        examples="  cowpod version\n  cowpod version --client     # do not contact the controller\n",
    )
    p.add_argument("--client", action="store_true", help="only the client version")
    p.set_defaults(func=run)


def client_version() -> str:
    try:
        return importlib.metadata.version("cowpod")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


async def run(ctx: Ctx, args: argparse.Namespace) -> int:
    ctx.print(
        f"Client Version: v{client_version()} (python {platform.python_version()}, grpcio {grpc.__version__})"
    )
    if not args.client:
        healthy = await ctx.client.healthy(timeout=2.0)
        ctx.print(f"Controller: {ctx.config.controller} ({'serving' if healthy else 'not reachable'})")
    return 0
