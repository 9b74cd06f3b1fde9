"""`cowpod rollout status|history|undo|restart|pause|resume` and `cowpod scale`, as kubectl has them.

The rollout state is read from the objects the controllers write (a Deployment's
status and conditions, its ReplicaSets' revision annotations; a DaemonSet's
status); `undo` and `restart` are ordinary updates of the Deployment's pod
template, which the Deployment controller then rolls out like any other change.
"""

from __future__ import annotations

import argparse
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from cowpod.api.labels import (
    CHANGE_CAUSE_ANNOTATION,
    DEPLOYMENT_REVISION_ANNOTATION,
    POD_TEMPLATE_HASH_LABEL,
    RESTARTED_AT_ANNOTATION,
)
from cowpod.cli import printers
from cowpod.cli.commands.common import Subparsers, add_command, parse_duration, split_type_name
from cowpod.cli.context import Ctx
from cowpod.cli.errors import CliError
from cowpod.cli.progress import Progress
from cowpod.cli.readiness import daemonset_readiness, deployment_readiness
from cowpod.cli.resources import get_object, list_objects, namespace_for, resolve_kind, service, what
from cowpod.cli.waiting import poll_until
from cowpod.manifest import KindInfo
from cowpod.manifest.kinds import DAEMONSET, DEPLOYMENT, REPLICASET
from cowpod.manifest.timefmt import format_rfc3339
from cowpod.v1 import meta_pb2, workload_pb2

ROLLOUT_EXAMPLES = """
  cowpod rollout status deploy/web            # waits until the rollout is done (or failed)
  cowpod rollout status ds/logs --timeout 2m
  cowpod rollout history deploy/web
  cowpod rollout history deploy/web --revision 2
  cowpod rollout undo deploy/web              # back to the previous revision
  cowpod rollout undo deploy/web --to-revision 1
  cowpod rollout restart deploy/web           # new pods, same template
  cowpod rollout pause deploy/web; cowpod rollout resume deploy/web
"""

SCALE_EXAMPLES = """
  cowpod scale deploy/web --replicas 5
  cowpod scale rs web-7c9fdb8d5b --replicas 0
"""

ROLLOUT_KINDS = (DEPLOYMENT, DAEMONSET)
SCALABLE = (DEPLOYMENT, REPLICASET)


def add_parser(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = add_command(sub, "rollout", parents, help="watch, list, undo or restart a Deployment's rollouts",
                    description="Manage the rollout of a Deployment (status also for a DaemonSet).",
                    examples=ROLLOUT_EXAMPLES)
    p.add_argument("action", choices=("status", "history", "undo", "restart", "pause", "resume"))
    p.add_argument("type", metavar="TYPE/NAME", help="deploy/NAME (or TYPE NAME); status also ds/NAME")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--timeout", type=parse_duration, default=600.0, metavar="DURATION",
                   help="status: give up after this long (600s)")
    p.add_argument("--revision", type=int, default=0, metavar="N",
                   help="history: show this revision's template")
    p.add_argument("--to-revision", type=int, default=0, metavar="N", help="undo: to this revision (default: "
                   "the previous one)")
    p.set_defaults(func=run_rollout)

    s = add_command(sub, "scale", parents, help="set the replicas of a Deployment or ReplicaSet",
                    description="Set spec.replicas of a Deployment or ReplicaSet.", examples=SCALE_EXAMPLES)
    s.add_argument("type", metavar="TYPE/NAME", help="deploy/NAME or rs/NAME (or TYPE NAME)")
    s.add_argument("names", nargs="*", metavar="NAME")
    s.add_argument("--replicas", type=int, required=True, metavar="N", help="the new number of replicas")
    s.set_defaults(func=run_scale)


def _one(args: argparse.Namespace, allowed: tuple[KindInfo, ...], verb: str) -> tuple[KindInfo, str]:
    kind, names = split_type_name(args.type, list(args.names))
    info = resolve_kind(kind, allowed)
    if len(names) != 1:
        raise CliError(f"name one {info.singular}: cowpod {verb} {info.singular}/NAME", exit_code=2)
    return info, names[0]


def ref(info: KindInfo, name: str) -> str:
    """`deployment.apps/web`, as kubectl names what it changed."""
    group = info.api_version.split("/")[0] if "/" in info.api_version else ""
    return f"{info.singular}{'.' + group if group else ''}/{name}"


# ---- status ------------------------------------------------------------------------------------------


async def _status(ctx: Ctx, info: KindInfo, name: str, timeout: float) -> int:
    async def check() -> tuple[bool, str]:
        obj: Any = await get_object(ctx, info, name)
        r = deployment_readiness(obj) if info is DEPLOYMENT else daemonset_readiness(obj)
        if r.failure:
            raise CliError(r.failure)
        return r.done, r.status

    final = await poll_until(ctx, check, timeout=timeout, what=f"{info.singular}/{name} rollout",
                             progress=Progress(ctx.err))
    ctx.print(final)
    return 0


# ---- history, undo, restart ----------------------------------------------------------------------------


def revision(rs: workload_pb2.ReplicaSet) -> int:
    try:
        return int(rs.metadata.annotations.get(DEPLOYMENT_REVISION_ANNOTATION, "0"))
    except ValueError:
        return 0


async def owned_sets(ctx: Ctx, d: workload_pb2.Deployment) -> list[workload_pb2.ReplicaSet]:
    """The Deployment's ReplicaSets, oldest revision first."""
    sets = await list_objects(ctx, REPLICASET)
    mine = [rs for rs in sets if any(r.controller and r.kind == "Deployment" and r.uid == d.metadata.uid
                                     for r in rs.metadata.owner_references)]
    return sorted(mine, key=revision)


def history_table(sets: list[workload_pb2.ReplicaSet]) -> str:
    rows = [[str(revision(rs)), rs.metadata.annotations.get(CHANGE_CAUSE_ANNOTATION) or printers.NONE]
            for rs in sets if revision(rs)]
    return printers.render_table(["REVISION", "CHANGE-CAUSE"], rows)


async def _history(ctx: Ctx, d: workload_pb2.Deployment, rev: int) -> int:
    sets = await owned_sets(ctx, d)
    ctx.print(f"{ref(DEPLOYMENT, d.metadata.name)}")
    if not rev:
        ctx.out.write(history_table(sets))
        return 0
    match = [rs for rs in sets if revision(rs) == rev]
    if not match:
        raise CliError(f"unable to find the specified revision {rev}")
    tmpl = match[0].spec.template
    ctx.print(f"revision {rev}")
    ctx.print("Pod Template:")
    ctx.print("  Labels: " + (",".join(f"{k}={v}" for k, v in sorted(tmpl.metadata.labels.items()))
                              or printers.NONE))
    for c in tmpl.spec.containers:
        ctx.print(f"  Container {c.name}:")
        ctx.print(f"    Image: {c.image}")
        if c.command:
            ctx.print(f"    Command: {' '.join(c.command)}")
    return 0


def rollback_template(sets: list[workload_pb2.ReplicaSet], to_revision: int) -> workload_pb2.ReplicaSet:
    """The set to go back to: `to_revision`, or the one before the newest (kubectl's default)."""
    numbered = [rs for rs in sets if revision(rs)]
    if to_revision:
        match = [rs for rs in numbered if revision(rs) == to_revision]
        if not match:
            raise CliError(f"unable to find the specified revision {to_revision}")
        return match[0]
    if len(numbered) < 2:
        raise CliError("no rollout history found: there is no previous revision to go back to")
    return numbered[-2]


async def _update(ctx: Ctx, d: workload_pb2.Deployment) -> None:
    await ctx.call(ctx.client.deployments.Update, d, what=what(DEPLOYMENT, d.metadata.name))


async def _undo(ctx: Ctx, d: workload_pb2.Deployment, to_revision: int) -> int:
    target = rollback_template(await owned_sets(ctx, d), to_revision)
    tmpl = workload_pb2.PodTemplateSpec()
    tmpl.CopyFrom(target.spec.template)
    tmpl.metadata.labels.pop(POD_TEMPLATE_HASH_LABEL, None)
    name = ref(DEPLOYMENT, d.metadata.name)
    if tmpl == d.spec.template:
        ctx.print(f"{name} skipped rollback (current template already matches revision {revision(target)})")
        return 0
    d.spec.template.CopyFrom(tmpl)
    await _update(ctx, d)
    ctx.print(f"{name} rolled back")
    return 0


async def run_rollout(ctx: Ctx, args: argparse.Namespace) -> int:
    allowed = ROLLOUT_KINDS if args.action == "status" else (DEPLOYMENT,)
    info, name = _one(args, allowed, f"rollout {args.action}")
    if args.action == "status":
        return await _status(ctx, info, name, args.timeout)
    d: Any = await get_object(ctx, DEPLOYMENT, name)
    # Updates below carry the resource_version read here: a concurrent change makes them fail, not vanish.
    if args.action == "history":
        return await _history(ctx, d, args.revision)
    if args.action == "undo":
        return await _undo(ctx, d, args.to_revision)
    if args.action == "restart":
        d.spec.template.metadata.annotations[RESTARTED_AT_ANNOTATION] = format_rfc3339_now(ctx)
        await _update(ctx, d)
        ctx.print(f"{ref(DEPLOYMENT, name)} restarted")
        return 0
    pause = args.action == "pause"
    if d.spec.paused == pause:
        ctx.print(f"{ref(DEPLOYMENT, name)} is already {'paused' if pause else 'resumed'}")
        return 0
    d.spec.paused = pause
    await _update(ctx, d)
    ctx.print(f"{ref(DEPLOYMENT, name)} {'paused' if pause else 'resumed'}")
    return 0


def format_rfc3339_now(ctx: Ctx) -> str:
    return format_rfc3339(Timestamp(seconds=int(ctx.now())))


# ---- scale ----------------------------------------------------------------------------------------------


async def run_scale(ctx: Ctx, args: argparse.Namespace) -> int:
    info, name = _one(args, SCALABLE, "scale")
    if args.replicas < 0:
        raise CliError("--replicas must be 0 or more", exit_code=2)
    req = workload_pb2.ScaleRequest(key=meta_pb2.ObjectKey(namespace=namespace_for(info, ctx), name=name),
                                    replicas=args.replicas)
    await ctx.call(service(ctx, info).Scale, req, what=what(info, name))
    ctx.print(f"{ref(info, name)} scaled")
    return 0
