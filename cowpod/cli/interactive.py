"""`cowpod exec -i/-t`: an interactive session over PodService.ExecStream.

With `-t` on a terminal, the terminal goes raw (keys reach the remote shell as
typed, Ctrl-C included) and is restored on the way out; its size is sent first
and again on every SIGWINCH. Without a terminal, `-t` is dropped with kubectl's
warning. Stdin is read as it comes (a file descriptor through the event loop;
any other stream in a thread) and its end is passed on, so `cat` ends. The exit
code of the command is `cowpod`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty as ttymod
from collections.abc import AsyncIterator
from typing import Any

import grpc

from cowpod.cli.context import Ctx
from cowpod.cli.errors import rpc_error
from cowpod.cli.resources import what
from cowpod.manifest.kinds import POD
from cowpod.v1 import meta_pb2, pod_pb2

NO_TTY = "Unable to use a TTY - input is not a terminal or the right kind of file\n"


def _fd(stream: Any) -> int | None:
    try:
        return int(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None


def _size(fd: int | None) -> pod_pb2.TerminalSize:
    for candidate in (fd, _fd(sys.stdout)):  # the size of the terminal we are in
        if candidate is not None:
            with contextlib.suppress(OSError):
                cols, rows = os.get_terminal_size(candidate)
                return pod_pb2.TerminalSize(width=cols, height=rows)
    return pod_pb2.TerminalSize()


async def run(ctx: Ctx, pod: str, container: str, command: list[str], *, stdin: bool, tty: bool) -> int:
    fd = _fd(ctx.stdin) if stdin else None
    if tty and (fd is None or not os.isatty(fd)):
        ctx.err.write(NO_TTY)  # as kubectl: a terminal needs -i and a terminal on stdin
        tty = False
    loop = asyncio.get_running_loop()
    outbox: asyncio.Queue[pod_pb2.ExecStreamRequest | None] = asyncio.Queue()
    start = pod_pb2.ExecStreamRequest(
        start=pod_pb2.ExecRequest(pod=meta_pb2.ObjectKey(namespace=ctx.namespace, name=pod),
                                  container=container, command=command),
        tty=tty, size=_size(fd) if tty else None, stdin_closed=not stdin,
    )
    await outbox.put(start)

    async def requests() -> AsyncIterator[pod_pb2.ExecStreamRequest]:
        while (msg := await outbox.get()) is not None:
            yield msg

    def on_input() -> None:
        assert fd is not None
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if data:
            outbox.put_nowait(pod_pb2.ExecStreamRequest(stdin=data))
        else:
            loop.remove_reader(fd)
            outbox.put_nowait(pod_pb2.ExecStreamRequest(stdin_closed=True))

    async def read_stream() -> None:  # stdin that is no file descriptor (tests, wrappers)
        buffer: Any = getattr(ctx.stdin, "buffer", None)
        data = await asyncio.to_thread(buffer.read if buffer is not None else ctx.stdin.read)
        if data:
            raw = data if isinstance(data, bytes) else data.encode()
            outbox.put_nowait(pod_pb2.ExecStreamRequest(stdin=raw))
        outbox.put_nowait(pod_pb2.ExecStreamRequest(stdin_closed=True))

    saved = termios.tcgetattr(fd) if tty and fd is not None else None
    reader: asyncio.Task[None] | None = None
    try:
        if saved is not None and fd is not None:
            ttymod.setraw(fd, termios.TCSANOW)  # TCSAFLUSH would drop keys typed ahead
            loop.add_signal_handler(signal.SIGWINCH, lambda: outbox.put_nowait(
                pod_pb2.ExecStreamRequest(size=_size(fd))))
        if stdin and fd is not None:
            loop.add_reader(fd, on_input)
        elif stdin:
            reader = asyncio.create_task(read_stream())
        code = 0
        try:
            async for resp in ctx.client.pods.ExecStream(requests(), timeout=None):
                if resp.stdout:
                    ctx.write_bytes(resp.stdout)
                if resp.stderr:
                    ctx.write_bytes(resp.stderr, err=True)
                if resp.HasField("exit_code"):
                    code = int(resp.exit_code)
        except grpc.RpcError as e:
            raise rpc_error(e, address=ctx.config.controller, what=what(POD, pod)) from e
        return code
    finally:
        await outbox.put(None)
        if reader is not None:
            reader.cancel()
        if stdin and fd is not None:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(fd)
        if saved is not None and fd is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signal.SIGWINCH)
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)

