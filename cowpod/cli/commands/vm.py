"""`cowpod vm clone|destroy|snap-free|pause|resume`: the VM verbs that are not plain get/delete."""

from __future__ import annotations

import argparse

from cowpod.cli.commands.common import Subparsers, add_command, parse_duration, parse_labels, sub_examples
from cowpod.cli.commands.delete import wait_gone
from cowpod.cli.context import Ctx
from cowpod.cli.errors import CliError
from cowpod.cli.resources import delete_object, what
from cowpod.manifest import KindInfo
from cowpod.manifest.kinds import VM
from cowpod.v1 import meta_pb2, vm_pb2

EXAMPLES = """
  cowpod vm clone vm-1                  # one instant clone of the running VM vm-1
  cowpod vm clone vm-1 --count 3 --wait # three, and wait until their nodes are Ready
  cowpod vm clone vm-1 --name web-a --label pool=web
  cowpod vm snap-free vm-1-abcde        # flatten a clone so it no longer needs its parent
  cowpod vm destroy vm-1 --cascade      # destroy vm-1 and its clones that were not snapped free
  cowpod vm pause vm-1                  # freeze it (a paused VM can still be instant-cloned)
  cowpod vm resume vm-1
"""


def add_parser(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "vm",
        parents,
        help="clone, snap free, pause, resume or destroy VMs",
        description="Instant-clone a running VM, snap a clone free of its parent, pause or resume a VM, "
        "or destroy one.",
        examples=EXAMPLES,
    )
    verbs = p.add_subparsers(dest="vm_verb", metavar="VERB", parser_class=type(p))
    verbs.required = True
    clone = verbs.add_parser(
        "clone",
        parents=parents,
        help="instant-clone a running VM",
        description="Fork children from a running parent VM, sharing its disk copy-on-write.",
    )
    clone.add_argument("parent", metavar="PARENT")
    clone.add_argument("--count", type=int, default=1, help="how many children (1)")
    clone.add_argument(
        "--name", action="append", default=[], metavar="NAME", help="child name (repeat per child)"
    )
    clone.add_argument(
        "--label", action="append", default=[], metavar="K=V", help="labels for the children's nodes"
    )
    clone.add_argument("--wait", action="store_true", help="wait until the children's nodes are Ready")
    clone.add_argument("--timeout", type=parse_duration, default=300.0, metavar="DURATION")
    clone.set_defaults(func=run_clone)
    destroy = verbs.add_parser(
        "destroy",
        parents=parents,
        help="destroy a VM and the pods on it",
        description="Destroy a VM (its pods go with it).",
    )
    destroy.add_argument("names", nargs="+", metavar="NAME")
    destroy.add_argument("--cascade", action="store_true", help="also destroy children not snapped free")
    destroy.add_argument("--wait", action="store_true", help="return once the VM is gone")
    destroy.add_argument("--timeout", type=parse_duration, default=300.0, metavar="DURATION")
    destroy.set_defaults(func=run_destroy)
    snap = verbs.add_parser(
        "snap-free",
        parents=parents,
        help="make a clone independent of its parent",
        description="Flatten an instant clone so its parent can be destroyed.",
    )
    snap.add_argument("name", metavar="NAME")
    snap.set_defaults(func=run_snap_free)
    for verb, paused, text in (
        ("pause", True, "freeze a VM (vSphere suspend): its pods stop, its node shows VMPaused, "
                        "instant clones still fork from it"),
        ("resume", False, "unfreeze a paused VM"),
    ):
        sp = verbs.add_parser(
            verb, parents=parents, help=text.split(":")[0], description=text[0].upper() + text[1:] + "."
        )
        sp.add_argument("names", nargs="+", metavar="NAME")
        sp.set_defaults(func=run_set_paused, paused=paused)
    sub_examples(p, "vm", EXAMPLES)


async def run_clone(ctx: Ctx, args: argparse.Namespace) -> int:
    if args.count < 1:
        raise CliError("--count must be at least 1", exit_code=2)
    if args.name and len(args.name) != args.count:
        if args.count == 1:
            args.count = len(args.name)
        else:
            raise CliError(f"--count {args.count} but {len(args.name)} --name given", exit_code=2)
    req = vm_pb2.CloneRequest(
        parent=args.parent, count=args.count, names=args.name, node_labels=parse_labels(args.label)
    )
    resp: vm_pb2.CloneResponse = await ctx.call(ctx.client.vms.Clone, req, what=what(VM, args.parent))
    for vm in resp.items:
        ctx.print(f"vm/{vm.metadata.name} cloned from vm/{args.parent}")
    if args.wait and resp.items:
        from cowpod.cli.commands.apply import wait_applied

        await wait_applied(ctx, [(VM, vm) for vm in resp.items], timeout=args.timeout)
    return 0


async def run_destroy(ctx: Ctx, args: argparse.Namespace) -> int:
    gone: list[tuple[KindInfo, str, str]] = []
    for name in args.names:
        await delete_object(ctx, VM, name, cascade=args.cascade)
        ctx.print(f"vm/{name} destroyed" + (" (with its clones)" if args.cascade else ""))
        gone.append((VM, "", name))
    if args.wait:
        await wait_gone(ctx, gone, timeout=args.timeout)
    return 0


async def run_snap_free(ctx: Ctx, args: argparse.Namespace) -> int:
    vm: vm_pb2.VM = await ctx.call(
        ctx.client.vms.SnapFree, meta_pb2.ObjectKey(name=args.name), what=what(VM, args.name)
    )
    ctx.print(f"vm/{vm.metadata.name or args.name} snapped free")
    return 0


async def run_set_paused(ctx: Ctx, args: argparse.Namespace) -> int:
    """Set spec.paused; the VM manager pauses or resumes the VM (phase Paused/Running)."""
    for name in args.names:
        req = vm_pb2.SetPausedRequest(key=meta_pb2.ObjectKey(name=name), paused=args.paused)
        await ctx.call(ctx.client.vms.SetPaused, req, what=what(VM, name))
        ctx.print(f"vm/{name} {'paused' if args.paused else 'resumed'}")
    return 0
