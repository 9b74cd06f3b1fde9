"""`cowpod delete`: pods (gracefully), VMs (destroying their pods) and nodes."""

from __future__ import annotations

import argparse
from dataclasses import replace

from cowpod.cli.commands.common import Subparsers, add_command, parse_duration, split_type_name
from cowpod.cli.context import Ctx
from cowpod.cli.errors import CliError, is_not_found
from cowpod.cli.kinds import kinds_where, type_help
from cowpod.cli.progress import Progress
from cowpod.cli.resources import delete_object, list_objects, namespace_for, resolve_kind, service, what
from cowpod.cli.safe_text import printable
from cowpod.cli.waiting import poll_until
from cowpod.manifest import KindInfo, load_paths
from cowpod.manifest.kinds import NAMESPACE, POD
from cowpod.v1 import meta_pb2

# Kinds `delete` takes (by name, selector or file): those whose service has a Delete (or Destroy).
DELETABLE = kinds_where(lambda e: e.delete_rpc is not None)

EXAMPLES = """
  cowpod delete pod web                      # graceful: the pod's grace period applies
  cowpod delete pod web --grace-period 1 --wait
  cowpod delete pod web --force              # at once (grace period 0)
  cowpod delete pods -l app=web              # every pod with that label
  cowpod delete vm vm-2 --wait               # destroys the VM and the pods on it
  cowpod delete node vm-3
  cowpod delete -f examples/web.yaml         # what a manifest created
  cowpod delete -f examples/app.yaml         # every kind in it (ConfigMap, Deployment, Service)
  cowpod delete deploy web                   # its ReplicaSets and pods go too
  cowpod delete job pi; cowpod delete ds logs; cowpod delete svc web
  cowpod delete cm game; cowpod delete secret db; cowpod delete pc high
  cowpod delete ns team-a --wait             # everything in it, then the namespace
"""


def add_parser(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "delete",
        parents,
        help="delete objects of any kind by name, label or manifest",
        description="Delete objects. Pods stop gracefully unless --force or --grace-period 0.",
        examples=EXAMPLES,
    )
    p.add_argument("type", nargs="?", metavar="TYPE", help=type_help(DELETABLE))
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument(
        "-f", "--filename", action="append", default=[], metavar="FILE", help="manifest file, dir or -"
    )
    p.add_argument("-l", "--selector", default="", help="delete every object with these labels")
    p.add_argument("--all", action="store_true", help="delete every object of the type in the namespace")
    p.add_argument("--grace-period", type=int, default=None, metavar="N", help="seconds to stop gracefully")
    p.add_argument("--force", action="store_true", help="delete at once (same as --grace-period 0)")
    p.add_argument("--cascade", action="store_true", help="VMs: also destroy children not snapped free")
    p.add_argument("--wait", action="store_true", help="return only once the objects are gone")
    p.add_argument(
        "--timeout", type=parse_duration, default=300.0, metavar="DURATION", help="for --wait (300s)"
    )
    p.add_argument("--ignore-not-found", action="store_true", help="no error for objects that do not exist")
    p.set_defaults(func=run)


async def run(ctx: Ctx, args: argparse.Namespace) -> int:
    grace = 0 if args.force else args.grace_period
    if grace is not None and grace < 0:
        raise CliError("--grace-period must be 0 or more", exit_code=2)
    targets: list[tuple[KindInfo, str, str]] = []  # (kind, namespace, name)
    if args.filename:
        if args.type or args.names:
            raise CliError("give either -f FILE or TYPE NAME, not both", exit_code=2)
        # Namespaces last (apply makes them first): deleting one takes what is in it, so the
        # file's other objects would otherwise be reported as not found.
        docs = sorted(load_paths(args.filename, ctx.stdin), key=lambda d: d.info is NAMESPACE)
        for doc in docs:
            if doc.info not in DELETABLE:
                raise CliError(f"{doc.where}: {doc.info.plural} cannot be deleted (the controller keeps "
                               "them)", exit_code=2)
            ns = doc.obj.metadata.namespace or namespace_for(doc.info, ctx)
            targets.append((doc.info, ns, doc.name))
    else:
        if not args.type:
            raise CliError("say what to delete: cowpod delete TYPE NAME, or -f FILE", exit_code=2)
        kind, names = split_type_name(args.type, list(args.names))
        info = resolve_kind(kind, DELETABLE)
        if args.selector or args.all:
            if names:
                raise CliError("give names or a selector (-l/--all), not both", exit_code=2)
            objs = await list_objects(ctx, info, selector=args.selector)
            if not objs:
                ctx.err.write("No resources found.\n")
                return 0
            names = [o.metadata.name for o in objs]
        if not names:
            raise CliError(
                f"name the {info.singular} to delete: cowpod delete {info.singular} NAME", exit_code=2
            )
        targets = [(info, namespace_for(info, ctx), n) for n in names]
    if grace == 0 and any(info is POD for info, _, _ in targets):
        ctx.err.write("warning: immediate deletion does not wait for the containers to stop\n")
    failed = 0
    deleted: list[tuple[KindInfo, str, str]] = []
    for info, ns, name in targets:
        scoped = _with_namespace(ctx, ns)
        try:
            await delete_object(scoped, info, name, grace=grace, cascade=args.cascade)
        except CliError as e:
            if isinstance(e.__cause__, Exception) and is_not_found(e.__cause__) and args.ignore_not_found:
                continue
            ctx.err.write(printable(f"error: {e.message}") + "\n")
            failed += 1
            continue
        ctx.print(f"{what(info, name)} deleted")
        deleted.append((info, ns, name))
    if args.wait and deleted:
        await wait_gone(ctx, deleted, timeout=args.timeout)
    return 1 if failed else 0


def _with_namespace(ctx: Ctx, namespace: str) -> Ctx:
    if not namespace or namespace == ctx.namespace:
        return ctx
    scoped = replace(ctx, config=replace(ctx.config, namespace=namespace))
    scoped._client = ctx.client  # share the channel
    return scoped


async def wait_gone(ctx: Ctx, targets: list[tuple[KindInfo, str, str]], *, timeout: float) -> None:
    remaining = list(targets)

    async def check() -> tuple[bool, str]:
        still = []
        for info, ns, name in remaining:
            try:
                await service(ctx, info).Get(meta_pb2.ObjectKey(namespace=ns, name=name), timeout=10)
                still.append((info, ns, name))
            except Exception as e:
                if not is_not_found(e):
                    still.append((info, ns, name))
        remaining[:] = still
        return (not still, ", ".join(f"{i.singular}/{n}" for i, _, n in still) + " still there")

    what_ = "deletion" if len(targets) > 1 else f"{targets[0][0].singular}/{targets[0][2]} to be deleted"
    await poll_until(ctx, check, timeout=timeout, what=what_, progress=Progress(ctx.err))
