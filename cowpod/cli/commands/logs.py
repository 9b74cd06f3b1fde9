"""`cowpod logs` and `cowpod exec`: reach a pod's containers through the controller,
which proxies to the node's agent (PodService.Logs / PodService.Exec)."""

from __future__ import annotations

import argparse
import asyncio

import grpc

from cowpod.cli import interactive
from cowpod.cli.commands.common import Subparsers, add_command, parse_duration
from cowpod.cli.context import Ctx
from cowpod.cli.errors import CliError, rpc_error
from cowpod.cli.resources import get_object, list_objects, what
from cowpod.manifest.kinds import POD
from cowpod.v1 import meta_pb2, pod_pb2

LOGS_EXAMPLES = """
  cowpod logs hello                   # what the pod's container printed
  cowpod logs web -f                  # follow (Ctrl-C to stop)
  cowpod logs web -c sidecar --tail 20 --timestamps
  cowpod logs web --previous          # the container's previous run (after a restart)
  cowpod logs -l app=web              # every pod the selector picks, lines prefixed [pod/NAME/CONTAINER]
  cowpod logs web --all-containers    # every container of the pod, init containers first
"""

EXEC_EXAMPLES = """
  cowpod exec web -- ls /             # run a command in the pod's first container
  cowpod exec web -c sidecar -- cat /shared/index.html
  echo hi | cowpod exec web -i -- cat # pass stdin to the command
  cowpod exec web -- sh -c 'exit 3'; echo $?    # prints 3: the exit code is passed back
  cowpod exec -it web -- sh           # an interactive shell (a TTY; window resizes follow)
"""


def add_parser(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "logs",
        parents,
        help="print a container's logs",
        description="Print the logs of a container in a pod (the first one unless -c).",
        examples=LOGS_EXAMPLES,
    )
    p.add_argument("pod", metavar="POD", nargs="?", default="", help="the pod (or use -l)")
    p.add_argument("-c", "--container", default="", help="container name (default: the first)")
    p.add_argument("-l", "--selector", default="", help="the pods with these labels, e.g. app=web")
    p.add_argument("--all-containers", action="store_true", help="every container of the pod(s)")
    p.add_argument("--prefix", action=argparse.BooleanOptionalAction, default=None,
                   help="prefix lines with [pod/NAME/CONTAINER] (default: when several are printed)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    p.add_argument("-p", "--previous", action="store_true", help="the previous, terminated run")
    p.add_argument("--tail", type=int, default=-1, metavar="N", help="only the last N lines")
    p.add_argument("--timestamps", action="store_true", help="prefix each line with its RFC 3339 time")
    p.add_argument(
        "--since", type=parse_duration, default=None, metavar="DURATION", help="only newer lines, e.g. 5m"
    )
    p.set_defaults(func=run_logs)

    e = add_command(
        sub,
        "exec",
        parents,
        help="run a command in a container",
        description="Run a command in a container of a pod and pass back its output and exit code.",
        examples=EXEC_EXAMPLES,
    )
    e.add_argument("pod", metavar="POD")
    e.add_argument("-c", "--container", default="", help="container name (default: the first)")
    e.add_argument("-i", "--stdin", action="store_true",
                   help="pass stdin to the process as it comes (interactive)")
    e.add_argument("-t", "--tty", action="store_true",
                   help="give the process a terminal (with -i: an interactive shell)")
    e.add_argument("command", nargs="*", metavar="COMMAND", help="after --: the command and its arguments")
    e.set_defaults(func=run_exec)


async def _container(ctx: Ctx, pod_name: str, container: str) -> str:
    pod: pod_pb2.Pod = await get_object(ctx, POD, pod_name)  # type: ignore[assignment]
    names = [c.name for c in pod.spec.containers]
    if container:
        if container not in names and container not in [c.name for c in pod.spec.init_containers]:
            raise CliError(f'pod "{pod_name}" has no container "{container}" (it has: {", ".join(names)})')
        return container
    if len(names) > 1:
        ctx.err.write(f'Defaulted container "{names[0]}" out of: {", ".join(names)}\n')
    return names[0] if names else ""


async def _sources(ctx: Ctx, args: argparse.Namespace) -> list[tuple[str, str]]:
    """(pod, container) pairs to print, from POD or -l, -c or --all-containers."""
    if bool(args.pod) == bool(args.selector):
        raise CliError("name a pod or select pods with -l (not both): cowpod logs POD | -l app=web",
                       exit_code=2)
    if args.selector:
        pods: list[pod_pb2.Pod] = await list_objects(ctx, POD, selector=args.selector)
        if not pods:
            raise CliError(f"no pods match {args.selector!r} in namespace {ctx.namespace}")
    else:
        pods = [await get_object(ctx, POD, args.pod)]  # type: ignore[list-item]
    out: list[tuple[str, str]] = []
    for pod in pods:
        name = pod.metadata.name
        if args.all_containers:
            out += [(name, c.name) for c in [*pod.spec.init_containers, *pod.spec.containers]]
        elif args.container or not args.selector:
            out.append((name, await _container(ctx, name, args.container)))
        elif pod.spec.containers:
            out.append((name, pod.spec.containers[0].name))
    return out


async def run_logs(ctx: Ctx, args: argparse.Namespace) -> int:
    sources = await _sources(ctx, args)
    if args.tail == 0:
        return 0
    prefix = args.prefix if args.prefix is not None else len(sources) > 1

    async def one(pod: str, container: str) -> None:
        req = pod_pb2.LogsRequest(
            pod=meta_pb2.ObjectKey(namespace=ctx.namespace, name=pod),
            container=container,
            follow=args.follow,
            previous=args.previous,
            tail_lines=max(args.tail, 0),
            timestamps=args.timestamps,
            since_seconds=int(args.since) if args.since else 0,
        )
        tag = f"[pod/{pod}/{container}] ".encode()
        rest = b""
        try:
            async for chunk in ctx.client.pods.Logs(req, timeout=None if args.follow else 120):
                if not prefix:
                    ctx.write_bytes(chunk.data)
                    continue
                *lines, rest = (rest + chunk.data).split(b"\n")
                if lines:
                    ctx.write_bytes(b"".join(tag + line + b"\n" for line in lines))
            if rest:
                ctx.write_bytes(tag + rest + b"\n")
        except grpc.RpcError as e:
            raise rpc_error(e, address=ctx.config.controller, what=f"logs of {what(POD, pod)}") from e

    if args.follow:
        async with asyncio.TaskGroup() as tg:  # every stream at once, as kubectl -f -l does
            for pod, container in sources:
                tg.create_task(one(pod, container))
    else:
        for pod, container in sources:
            await one(pod, container)
    return 0


async def run_exec(ctx: Ctx, args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise CliError("say which command to run: cowpod exec POD -- COMMAND [ARG...]", exit_code=2)
    container = await _container(ctx, args.pod, args.container)
    if args.stdin or args.tty:
        return await interactive.run(ctx, args.pod, container, command, stdin=args.stdin, tty=args.tty)
    stdin = b""
    if args.stdin:
        buffer = getattr(ctx.stdin, "buffer", None)
        stdin = buffer.read() if buffer is not None else ctx.stdin.read().encode()
    req = pod_pb2.ExecRequest(
        pod=meta_pb2.ObjectKey(namespace=ctx.namespace, name=args.pod),
        container=container,
        command=command,
        stdin=stdin,
    )
    resp = await ctx.call(ctx.client.pods.Exec, req, what=what(POD, args.pod), timeout=3600)
    if resp.stdout:
        ctx.write_bytes(resp.stdout)
    if resp.stderr:
        ctx.write_bytes(resp.stderr, err=True)
    return int(resp.exit_code)


__all__ = ["add_parser", "run_exec", "run_logs"]
