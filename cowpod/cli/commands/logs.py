"""`cowpod logs` and `cowpod exec`: reach a pod's containers through the controller,
which proxies to the node's agent (PodService.Logs / PodService.Exec)."""

from __future__ import annotations

import argparse

import grpc

from cowpod.cli.commands.common import Subparsers, add_command, parse_duration
from cowpod.cli.context import Ctx
from cowpod.cli.errors import CliError, rpc_error
from cowpod.cli.resources import get_object, what
from cowpod.manifest.kinds import POD
from cowpod.v1 import meta_pb2, pod_pb2

LOGS_EXAMPLES = """
  cowpod logs hello                   # what the pod's container printed
  cowpod logs web -f                  # follow (Ctrl-C to stop)
  cowpod logs web -c sidecar --tail 20 --timestamps
  cowpod logs web --previous          # the container's previous run (after a restart)
"""

EXEC_EXAMPLES = """
  cowpod exec web -- ls /             # run a command in the pod's first container
  cowpod exec web -c sidecar -- cat /shared/index.html
  echo hi | cowpod exec web -i -- cat # pass stdin to the command
  cowpod exec web -- sh -c 'exit 3'; echo $?    # prints 3: the exit code is passed back
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
    p.add_argument("pod", metavar="POD")
    p.add_argument("-c", "--container", default="", help="container name (default: the first)")
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
    e.add_argument("-i", "--stdin", action="store_true", help="send this command's stdin to the process")
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


async def run_logs(ctx: Ctx, args: argparse.Namespace) -> int:
    container = await _container(ctx, args.pod, args.container)
    req = pod_pb2.LogsRequest(
        pod=meta_pb2.ObjectKey(namespace=ctx.namespace, name=args.pod),
        container=container,
        follow=args.follow,
        previous=args.previous,
        tail_lines=max(args.tail, 0),
        timestamps=args.timestamps,
        since_seconds=int(args.since) if args.since else 0,
    )
    if args.tail == 0:
        return 0
    try:
        stream = ctx.client.pods.Logs(req, timeout=None if args.follow else 120)
        async for chunk in stream:
            ctx.write_bytes(chunk.data)
    except grpc.RpcError as e:
        raise rpc_error(e, address=ctx.config.controller, what=f"logs of {what(POD, args.pod)}") from e
    return 0


async def run_exec(ctx: Ctx, args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise CliError("say which command to run: cowpod exec POD -- COMMAND [ARG...]", exit_code=2)
    container = await _container(ctx, args.pod, args.container)
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
