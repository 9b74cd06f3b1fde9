"""`cowpod drain NODE`: cordon the node, evict its pods gracefully, wait until they are gone.

As `kubectl drain`: the node is cordoned first so nothing new lands there; each
pod is deleted with its own grace period (or `--grace-period`), so its agent
stops it gracefully and a ReplicaSet that owns it starts a replacement on
another node. Pods that nothing would replace (no controller owner) are only
deleted with `--force`. `--timeout` bounds the wait; on expiry the command
fails naming the pods still there. Draining again is harmless (idempotent).
"""

from __future__ import annotations

import argparse

import grpc

from cowpod.cli.commands.common import Subparsers, add_command, parse_duration
from cowpod.cli.commands.node import set_unschedulable
from cowpod.cli.context import Ctx
from cowpod.cli.errors import CliError, code_of, rpc_error
from cowpod.cli.resources import what
from cowpod.manifest.kinds import NODE, POD
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2

EXAMPLES = """
  cowpod drain vm-2                        # cordon, evict, wait for the pods to go
  cowpod drain vm-2 --timeout 2m           # give up (exit 1) after two minutes
  cowpod drain vm-2 --force                # also delete pods no ReplicaSet would replace
  cowpod drain vm-2 --grace-period 5       # override each pod's terminationGracePeriodSeconds
  cowpod uncordon vm-2                     # take pods again afterwards
"""

POLL_SECONDS = 0.5


def add_parser(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "drain",
        parents,
        help="cordon a node and evict its pods (gracefully), waiting until they are gone",
        description=__doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        examples=EXAMPLES,
    )
    p.add_argument("node", metavar="NODE")
    p.add_argument("--force", action="store_true",
                   help="also delete pods that no controller owns (they will not be replaced)")
    p.add_argument("--grace-period", type=int, default=-1, metavar="SECONDS",
                   help="seconds each pod gets to stop (default -1: the pod's own)")
    p.add_argument("--timeout", type=parse_duration, default=0.0, metavar="DURATION",
                   help="give up after this long, e.g. 90s or 5m (default 0: wait forever)")
    p.set_defaults(func=run)


def owner_of(pod: pod_pb2.Pod) -> str:
    for ref in pod.metadata.owner_references:
        if ref.controller:
            return f"{ref.kind}/{ref.name}"
    return ""


def _qual(pod: pod_pb2.Pod) -> str:
    return f"{pod.metadata.namespace}/{pod.metadata.name}"


async def pods_on(ctx: Ctx, node: str) -> list[pod_pb2.Pod]:
    opts = meta_pb2.ListOptions(field_selector=f"spec.nodeName={node}")
    resp: pod_pb2.PodList = await ctx.call(ctx.client.pods.List, opts, what=f"pods on node/{node}",
                                           retry=True)
    return sorted(resp.items, key=_qual)


async def _evict(ctx: Ctx, pod: pod_pb2.Pod, grace: int) -> None:
    key = meta_pb2.ObjectKey(namespace=pod.metadata.namespace, name=pod.metadata.name)
    opts = meta_pb2.DeleteOptions(key=key)
    if grace >= 0:
        opts.grace_period_seconds = grace
    try:
        await ctx.client.pods.Delete(opts, timeout=30)
    except grpc.RpcError as e:
        if code_of(e) != grpc.StatusCode.NOT_FOUND:
            raise rpc_error(e, address=ctx.config.controller, what=what(POD, pod.metadata.name)) from e


async def _node_ready(ctx: Ctx, name: str) -> bool:
    node: node_pb2.Node = await ctx.call(ctx.client.nodes.Get, meta_pb2.ObjectKey(name=name),
                                         what=what(NODE, name), retry=True)
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


async def run(ctx: Ctx, args: argparse.Namespace) -> int:
    name = args.node
    changed = await set_unschedulable(ctx, name, True)
    ctx.print(f"node/{name} cordoned" if changed else f"node/{name} already cordoned")
    pods = await pods_on(ctx, name)
    unmanaged = [p for p in pods if not owner_of(p)]
    if unmanaged and not args.force:
        listed = ", ".join(_qual(p) for p in unmanaged)
        raise CliError(f"cannot drain node/{name}: these pods have no controller and would not be replaced: "
                       f"{listed} (use --force to delete them anyway)")
    for p in pods:
        if not p.metadata.HasField("deletion_timestamp"):
            ctx.print(f"evicting pod {_qual(p)}")
            await _evict(ctx, p, args.grace_period)
    ctx.out.flush()
    waiting = {p.metadata.uid: p for p in pods}
    deadline = ctx.clock.monotonic() + args.timeout if args.timeout > 0 else None
    while waiting:
        still = {p.metadata.uid for p in await pods_on(ctx, name)}
        for uid in [u for u in waiting if u not in still]:
            ctx.print(f"pod/{waiting.pop(uid).metadata.name} evicted")
        if not waiting:
            break
        if deadline is not None and ctx.clock.monotonic() >= deadline:
            left = ", ".join(_qual(p) for p in waiting.values())
            hint = ""
            if not await _node_ready(ctx, name):
                hint = (f"; node/{name} is not Ready, so no agent can confirm they stopped "
                        "(`cowpod delete pod NAME --force` removes one without waiting)")
            raise CliError(f"drain of node/{name} timed out after {args.timeout:.0f}s; "
                           f"{len(waiting)} pod(s) still there: {left}{hint}")
        await ctx.clock.sleep(POLL_SECONDS)
    ctx.print(f"node/{name} drained")
    return 0
