"""`cowpod wait`: block until an object reaches a condition, a phase, a JSONPath value, or is gone."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import grpc

from cowpod.api.phases import is_terminal
from cowpod.cli import jsonpath
from cowpod.cli.commands.common import Subparsers, add_command, parse_duration, split_type_name
from cowpod.cli.context import Ctx
from cowpod.cli.errors import CliError, is_not_found, rpc_error
from cowpod.cli.kinds import kinds_where, type_help
from cowpod.cli.progress import Progress
from cowpod.cli.readiness import node_ready, vm_readiness
from cowpod.cli.resources import list_objects, namespace_for, resolve_kind, service, what
from cowpod.cli.waiting import poll_until
from cowpod.manifest import KindInfo, encode_object
from cowpod.manifest.kinds import JOB, NODE, POD, VM
from cowpod.v1 import meta_pb2

# Kinds `wait` takes: every kind that can be read by name (not events, which have only a List).
WAITABLE = kinds_where(lambda e: e.can_get_one)

EXAMPLES = """
  cowpod wait pod hello --for phase=Succeeded --timeout 2m
  cowpod wait pod web --for condition=Ready
  cowpod wait node vm-1 --for condition=Ready
  cowpod wait vm vm-2 --for condition=Ready        # VM Running and its node Ready
  cowpod wait pod web --for=jsonpath='{.status.podIP}'        # any non-empty value
  cowpod wait pod web --for=jsonpath='{.status.containerStatuses[0].ready}'=true
  cowpod wait pod web --for delete --timeout 60s
  cowpod wait --for=condition=complete job/pi --timeout 5m   # exits 1 at once if the job failed
  cowpod wait deploy/web --for condition=Available
  cowpod wait namespace team-a --for delete --timeout 2m     # its pods stopped, then it is gone
  cowpod wait configmap game --for=jsonpath='{.data.lives}'=5
  cowpod wait ds/logs --for=jsonpath='{.status.numberReady}'=3
  cowpod wait ep web --for=jsonpath='{.subsets[0].addresses[0].ip}'   # the Service has a ready pod
  cowpod wait svc web --for delete; cowpod wait pc high --for delete
  cowpod wait pods -l app=web --for condition=Ready   # every pod with the label
  cowpod wait pods --all --for delete --timeout 2m
"""



@dataclass(frozen=True)
class Condition:
    """What `--for` asks: kind is condition | phase | jsonpath | delete."""

    kind: str
    key: str = ""
    value: str | None = None

    def describe(self) -> str:
        if self.kind == "delete":
            return "deletion"
        if self.kind == "jsonpath":
            return f"jsonpath {self.key}" + (f"={self.value}" if self.value is not None else "")
        return f"{self.kind}={self.key}" + (f"={self.value}" if self.value not in (None, "True") else "")


def parse_for(text: str) -> Condition:
    """`condition=Ready`, `condition=Ready=False`, `phase=Succeeded`, `jsonpath={.a}=b`, `delete`."""
    if text == "delete":
        return Condition("delete")
    kind, eq, rest = text.partition("=")
    if not eq or not rest:
        raise CliError(
            f'unsupported --for "{text}" (use condition=NAME, phase=PHASE, jsonpath={{...}}=VALUE or delete)',
            exit_code=2,
        )
    if kind == "condition":
        name, _, status = rest.partition("=")
        return Condition("condition", name, status or "True")
    if kind == "phase":
        return Condition("phase", rest)
    if kind == "jsonpath":
        rest = rest.strip("'")
        if rest.startswith("{"):
            close = rest.find("}")
            if close < 0:
                raise CliError(f'unbalanced braces in --for "{text}"', exit_code=2)
            path, tail = rest[1:close], rest[close + 1 :]
        else:
            path, eq, after = rest.partition("=")
            tail = eq + after
        value = tail[1:] if tail.startswith("=") else None
        if tail and not tail.startswith("="):
            raise CliError(f'expected =VALUE after the JSONPath in --for "{text}"', exit_code=2)
        return Condition("jsonpath", path, value)
    raise CliError(f'unsupported --for "{text}" (condition=, phase=, jsonpath= or delete)', exit_code=2)


def add_parser(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "wait",
        parents,
        help="wait until an object reaches a condition, phase or value, or is deleted",
        description="Wait for an object of any kind but events. Exits 0 when met, 1 on timeout or "
        "when it can no longer happen (a pod that failed while you waited for Succeeded, a failed job).",
        examples=EXAMPLES,
    )
    p.add_argument("type", metavar="TYPE", help=type_help(WAITABLE))
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-l", "--selector", default="", help="wait for every object with these labels")
    p.add_argument("--all", action="store_true", help="wait for every object of the type in the namespace")
    p.add_argument(
        "--for",
        dest="for_",
        required=True,
        metavar="CONDITION",
        help="condition=Ready | phase=Succeeded | jsonpath={.path}=value | delete",
    )
    p.add_argument("--timeout", type=parse_duration, default=30.0, metavar="DURATION", help="default 30s")
    p.set_defaults(func=run)


async def _get(ctx: Ctx, info: KindInfo, name: str) -> Any | None:
    key = meta_pb2.ObjectKey(namespace=namespace_for(info, ctx), name=name)
    try:
        return await ctx.client.call(service(ctx, info).Get, key, timeout=10, attempts=2)
    except grpc.RpcError as e:
        if is_not_found(e):
            return None
        raise rpc_error(e, address=ctx.config.controller, what=what(info, name)) from e


async def evaluate(ctx: Ctx, info: KindInfo, name: str, cond: Condition) -> tuple[bool, str]:
    """(met, status text); raises CliError when the condition can no longer be met."""
    obj = await _get(ctx, info, name)
    if cond.kind == "delete":
        return (obj is None, "gone" if obj is None else "still there")
    if obj is None:
        return (False, "not found yet")
    # ConfigMaps and Secrets have no status (only `delete` and `jsonpath` apply to them).
    has_status = "status" in obj.DESCRIPTOR.fields_by_name and obj.HasField("status")
    phase = str(getattr(obj.status, "phase", "")) if has_status else ""
    if cond.kind == "phase":
        if phase == cond.key:
            return (True, phase)
        if info is POD and is_terminal(phase):
            detail = obj.status.message or obj.status.reason
            because = f" ({detail})" if detail else ""
            raise CliError(f"{info.singular}/{name} is {phase}{because} and will never be {cond.key}")
        return (False, phase or "Pending")
    if cond.kind == "condition":
        if info is VM and cond.key == "Ready":
            node = None
            if obj.status.node_name:
                node = await _get(ctx, NODE, obj.status.node_name)
            r = vm_readiness(obj, node)
            if r.failure:
                raise CliError(r.failure)
            return (r.done == (cond.value == "True"), r.status)
        if info is NODE and cond.key == "Ready" and cond.value == "True":
            return (node_ready(obj), "Ready" if node_ready(obj) else "NotReady")
        for c in getattr(obj.status, "conditions", []) if has_status else []:
            if c.type.lower() == cond.key.lower():
                if c.status == cond.value:
                    return (True, f"{c.type}={c.status}")
                current = f"{c.type}={c.status}"
                break
        else:
            current = f"no {cond.key} condition yet"
        if info is JOB and cond.key.lower() == "complete" and cond.value == "True":
            for c in obj.status.conditions:
                if c.type == "Failed" and c.status == "True":
                    raise CliError(f"job/{name} failed ({c.reason}: {c.message}) and will never be complete")
        if info is POD and is_terminal(phase):
            raise CliError(f"{info.singular}/{name} is {phase}; condition {cond.key} will not change")
        return (False, current + (f", phase {phase}" if phase else ""))
    data = encode_object(obj)
    values = jsonpath.evaluate(data, cond.key)
    shown = " ".join(jsonpath.format_value(v) for v in values)
    if cond.value is None:
        return (bool(values) and any(v not in ("", None, [], {}) for v in values), shown or "<empty>")
    return (shown == cond.value, shown or "<empty>")


async def run(ctx: Ctx, args: argparse.Namespace) -> int:
    kind, names = split_type_name(args.type, list(args.names))
    info = resolve_kind(kind, WAITABLE)
    cond = parse_for(args.for_)
    if names and (args.selector or args.all):
        raise CliError("give names or a selector (-l/--all), not both", exit_code=2)
    if args.selector or args.all:  # the objects there are now, as kubectl's wait takes them
        names = [o.metadata.name for o in await list_objects(ctx, info, selector=args.selector)]
        if not names:
            raise CliError("no matching resources found")
    if not names:
        raise CliError(
            f"name the {info.singular} to wait for: cowpod wait {info.singular} NAME --for ... "
            "(or -l SELECTOR, --all)", exit_code=2
        )
    for name in names:

        async def check(name: str = name) -> tuple[bool, str]:
            return await evaluate(ctx, info, name, cond)

        await poll_until(
            ctx,
            check,
            timeout=args.timeout,
            what=f"{info.singular}/{name} {cond.describe()}",
            progress=Progress(ctx.err),
        )
        ctx.print(f"{info.singular}/{name} {'deleted' if cond.kind == 'delete' else 'condition met'}")
    return 0
