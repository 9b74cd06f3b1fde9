"""The agent's end of `NodeService.HeartbeatStream`: lease renewals over one stream.

Why: a unary Heartbeat costs the controller a whole gRPC call; on a stream a
renewal is one message each way (docs/scheduler.md, issue #17). What a renewal
means is unchanged: one request, one answer, the same errors (`cowpod.heartbeats`
turns a refused renewal's answer back into the `cowpod.errors` exception the unary
call's status maps to: NotFound means "register again", as before).

    renew(req) ──► stream open? ──no──► open HeartbeatStream
                      │
                      ▼
               write req, read its answer (≤ timeout)
                      │
          answer ─────┼───── stream broke (UNAVAILABLE, ended, timed out)
            │         │          └─► drop it, back off (cowpod.backoff), reopen, resend
            ▼         └─ UNIMPLEMENTED: the controller predates the stream
     error_in(answer)       └─► unary Heartbeat for `unary_seconds`, then try again

One renewal at a time per `LeaseRenewer` (a lock): an agent renews one node, every
~10 s. Against an older controller (a VM image or snapshot may outlive the controller
version it was made with, and the other way round) the unary call is used; the stream
is tried again after `unary_seconds`, so an agent that outlives a controller upgrade
moves to the stream without a restart. The back-off runs on the injected clock.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from cowpod.backoff import Backoff, Retry
from cowpod.clock import Clock
from cowpod.errors import Unavailable, rpc_code
from cowpod.heartbeats import error_in
from cowpod.v1 import node_pb2, node_pb2_grpc

log = logging.getLogger(__name__)

# After UNIMPLEMENTED, how long the unary call is used before the stream is tried again.
UNARY_SECONDS = 600.0
# Reconnects of a broken stream, as `Client.call`'s retries of a unary call.
RECONNECT = Backoff(initial=0.1, cap=3.0, jitter=0.5)
# Transport failures of the stream worth reopening it for (the server's answer to a
# renewal comes in the response instead; a status ends the stream only when it broke).
_REOPEN_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED,
})

Unary = Callable[[node_pb2.HeartbeatRequest], Awaitable[node_pb2.HeartbeatResponse]]


class StreamBroken(Exception):
    """The stream ended or went silent without a status worth reporting."""


class LeaseRenewer:
    """Renews node leases over one HeartbeatStream, falling back to `unary`."""

    def __init__(
        self,
        stub: node_pb2_grpc.NodeServiceStub,
        unary: Unary,
        clock: Clock,
        *,
        timeout: float = 10.0,
        attempts: int = 3,
        backoff: Backoff = RECONNECT,
        unary_seconds: float = UNARY_SECONDS,
    ) -> None:
        self._stub = stub
        self._unary = unary
        self._clock = clock
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff
        self._unary_seconds = unary_seconds
        self._unary_until = -math.inf
        self._call: Any = None  # grpc.aio.StreamStreamCall while open
        self._lock = asyncio.Lock()
        self.streamed = 0  # renewals answered over the stream
        self.unary_calls = 0  # renewals sent as unary calls (fallback)
        self.opened = 0  # streams opened (the first, and each reopen)

    @property
    def on_unary(self) -> bool:
        return self._clock.monotonic() < self._unary_until

    async def renew(self, request: node_pb2.HeartbeatRequest) -> node_pb2.HeartbeatResponse:
        """The renewal's answer. Raises the `cowpod.errors` exception of an answered failure
        (NotFound: register again), a `grpc.RpcError` from the unary call, `Unavailable`
        or the stream's `grpc.RpcError` once `attempts` streams broke in a row."""
        async with self._lock:
            retry = Retry(self._backoff, self._clock)
            while True:
                if self.on_unary:
                    self.unary_calls += 1
                    return await self._unary(request)
                try:
                    response = await self._exchange(request)
                except grpc.RpcError as err:
                    self._drop()
                    code = rpc_code(err)
                    if code == grpc.StatusCode.UNIMPLEMENTED:
                        log.info("controller has no HeartbeatStream; unary heartbeats for %.0f s",
                                 self._unary_seconds)
                        self._unary_until = self._clock.monotonic() + self._unary_seconds
                        continue
                    if code not in _REOPEN_CODES or retry.failures + 1 >= self._attempts:
                        raise
                    log.info("heartbeat stream broke (%s); reopening", code.name if code else err)
                except (StreamBroken, TimeoutError) as err:
                    self._drop()
                    if retry.failures + 1 >= self._attempts:
                        raise Unavailable(f"heartbeat stream: {err or 'no answer in time'}") from err
                    log.info("heartbeat stream broke (%s); reopening", err or "no answer in time")
                else:
                    self.streamed += 1
                    failure = error_in(response)
                    if failure is not None:
                        raise failure
                    return response
                await retry.sleep()

    async def _exchange(self, request: node_pb2.HeartbeatRequest) -> node_pb2.HeartbeatResponse:
        if self._call is None:
            self.opened += 1
            self._call = self._stub.HeartbeatStream()
        call = self._call
        # Real time, as a unary call's gRPC deadline: the controller's silence is not
        # something a test's fake clock should decide.
        async with asyncio.timeout(self._timeout):
            try:
                await call.write(request)
            except asyncio.InvalidStateError as err:  # finished with OK before we wrote
                raise StreamBroken("the controller closed the stream") from err
            response = await call.read()
        if response is grpc.aio.EOF:
            raise StreamBroken("the controller closed the stream")
        if not isinstance(response, node_pb2.HeartbeatResponse):
            raise StreamBroken(f"unexpected message {type(response).__name__}")
        return response

    def _drop(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def close(self) -> None:
        """End the stream (the controller sees the client go away)."""
        self._drop()
