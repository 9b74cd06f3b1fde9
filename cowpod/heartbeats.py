"""How a HeartbeatStream answer carries a renewal's outcome: one rule for both ends.

`NodeService.HeartbeatStream` renews node leases over one long-lived stream (as
etcd's `LeaseKeepAlive`), one response per request. A gRPC call ends with one
status, so a stream that should outlive a refused renewal cannot say "this one
failed" with its status: the answer carries the status code and message the
unary `Heartbeat` would have ended with (`error_code`, `error_message`; 0 = OK),
and the node it is about (`node_name`: a stream whose credential may renew many
nodes answers them out of order). The controller builds answers with
`answer_ok` / `answer_error`; agents read them back with `error_in`, into the
same `cowpod.errors` exception a failed unary call maps to.
"""

from __future__ import annotations

import grpc

from cowpod.errors import CowpodError, error_of, status_of
from cowpod.v1 import node_pb2

# gRPC status codes by their number on the wire (StatusCode's value is (number, name)).
_CODES: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


def answer_ok(node_name: str, response: node_pb2.HeartbeatResponse) -> node_pb2.HeartbeatResponse:
    """The unary call's response, named for its node."""
    response.node_name = node_name
    return response


def answer_error(node_name: str, err: BaseException, *, where: str) -> node_pb2.HeartbeatResponse:
    """What a unary Heartbeat failing with `err` would have told the caller, as a response.
    An unclassified exception is a bug: INTERNAL naming `where`, as controller.rpc says."""
    code = status_of(err)
    message = str(err) if isinstance(err, CowpodError) else f"internal error in {where}: {err!r}"
    return node_pb2.HeartbeatResponse(node_name=node_name, error_code=code.value[0], error_message=message)


def error_in(response: node_pb2.HeartbeatResponse) -> CowpodError | None:
    """The failure an answer reports (None for a renewal that succeeded)."""
    if not response.error_code:
        return None
    code = _CODES.get(response.error_code, grpc.StatusCode.UNKNOWN)
    return error_of(code, response.error_message)
