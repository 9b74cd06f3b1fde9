"""HeartbeatStream: node lease renewals over one long-lived stream (etcd's LeaseKeepAlive).

Why a stream: a unary Heartbeat costs the controller a whole gRPC call (~250 µs in
grpc.aio, plus the interceptor); 5,000 nodes every 10 s made that ~0.2 of a core
whatever the pod rate (docs/scheduler.md, issue #17). On a stream a renewal is one
message in and one out.

Each message gets what the unary call would give: the renewal is the same
`Nodes.heartbeat`, and the auth interceptor admits every message as a `Heartbeat`
call (rate limit, object limits, a node renews only itself). A renewal that fails or
is refused is answered with the unary call's status code and message
(`cowpod.heartbeats`) and the stream goes on, as etcd's watch stream answers a refused
watch and keeps serving the others.

    requests ──► reader: one task per renewal (≤ max_in_flight not yet answered)
                   └─► Nodes.heartbeat / RefusedMessage ──► answers (deque) ──► stream out

Renewals on one stream run concurrently: a renewal may wait 50 ms for company in the
etcd group commit (`RENEWAL_LINGER_SECONDS`), so a stream shared by many nodes (the
hollow fleet's, an admin tool's) renewed one at a time would manage ~20 a second.
Answers may therefore come out of order; each names its node. No more than
`max_in_flight` requests are read ahead of the answers the client has taken, so a
client that stops reading stops being read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

from controller.rpc import RefusedMessage
from cowpod.errors import CowpodError
from cowpod.heartbeats import answer_error, answer_ok
from cowpod.v1 import node_pb2

log = logging.getLogger(__name__)

METHOD = "NodeService.HeartbeatStream"
# Renewals of one stream in progress or answered but not yet sent. A node's own stream
# has one at a time; a fleet's shared stream needs enough to fill a group commit.
MAX_IN_FLIGHT = 256

Renew = Callable[[node_pb2.HeartbeatRequest], Awaitable[node_pb2.HeartbeatResponse]]
Item = node_pb2.HeartbeatRequest | RefusedMessage


async def answer(item: Item, renew: Renew) -> node_pb2.HeartbeatResponse:
    """The response to one message of the stream; never raises (but for cancellation)."""
    if isinstance(item, RefusedMessage):
        return answer_error(str(getattr(item.request, "node_name", "")), item.error, where=METHOD)
    try:
        return answer_ok(item.node_name, await renew(item))
    except Exception as err:
        if isinstance(err, CowpodError):
            log.debug("%s %s -> %s", METHOD, item.node_name, err)
        else:
            log.error("%s %s failed with a bug: %r", METHOD, item.node_name, err, exc_info=err)
        return answer_error(item.node_name, err, where=METHOD)


async def serve(
    requests: AsyncIterator[Item],
    renew: Renew,
    *,
    max_in_flight: int = MAX_IN_FLIGHT,
) -> AsyncGenerator[node_pb2.HeartbeatResponse, None]:
    """Answer every request of `requests` with `renew`'s outcome, until the client closes
    its side and every answer is out. The reader task is this generator's: cancelled
    and awaited when the stream ends, however it ends.

    Answers wait in a deque, and the writer (this generator) sleeps on a future of its
    own when there is none: an `asyncio.Queue` did the same with more Python per answer
    and asked for the running loop on every empty `get` (a getpid() system call on
    Python 3.11), once per renewal (issue #17)."""
    loop = asyncio.get_running_loop()
    ready: deque[node_pb2.HeartbeatResponse] = deque()
    writer: asyncio.Future[None] | None = None  # set while the writer waits for an answer
    finished = False  # the reader is done (every renewal answered) or failed
    slots = asyncio.Semaphore(max_in_flight)

    def wake() -> None:
        if writer is not None and not writer.done():
            writer.set_result(None)

    async def one(item: Item) -> None:
        ready.append(await answer(item, renew))
        wake()

    async def read() -> None:
        nonlocal finished
        try:
            async with asyncio.TaskGroup() as tg:
                async for item in requests:
                    await slots.acquire()
                    tg.create_task(one(item), name="heartbeat-stream-renewal")
        finally:
            finished = True  # after every answer: done, or failed (re-raised below)
            wake()

    reader = loop.create_task(read(), name="heartbeat-stream-reader")
    try:
        while True:
            if ready:
                yield ready.popleft()
                slots.release()
            elif finished:
                break
            else:
                writer = loop.create_future()
                await writer
                writer = None
        await reader
    finally:
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
