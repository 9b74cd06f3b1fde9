"""Domain errors, kept apart from bugs, and their one mapping to and from gRPC codes.

Servicers raise these (or let the store raise them); `status_of` is the only
place that decides which status a client sees: a domain error's own code, and
INTERNAL for anything unclassified (a bug, as docs/api.md says), never UNKNOWN.
`from_rpc_error` is the way back, for callers of the API; `rpc_code` and
`rpc_details` read a failed call without caring which gRPC error class it is.
"""

from __future__ import annotations

import grpc


class CowpodError(Exception):
    """An expected failure with a message fit for the user."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN


class Invalid(CowpodError):
    """Bad input. The message names the field path and the reason."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


class NotFound(CowpodError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CowpodError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Conflict(CowpodError):
    """A compare-and-swap lost: the object changed since the caller read it."""

    code = grpc.StatusCode.ABORTED


class FailedPrecondition(CowpodError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(CowpodError):
    """A dependency (etcd, an agent) cannot be reached right now; retry."""

    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(CowpodError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(CowpodError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(CowpodError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class OutOfRange(CowpodError):
    """A watch asked for a revision that etcd has compacted: relist."""

    code = grpc.StatusCode.OUT_OF_RANGE


_BY_CODE: dict[grpc.StatusCode, type[CowpodError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        AlreadyExists,
        Conflict,
        FailedPrecondition,
        Unavailable,
        Unauthenticated,
        PermissionDenied,
        ResourceExhausted,
        OutOfRange,
    )
}


def status_of(err: BaseException) -> grpc.StatusCode:
    """Exception -> gRPC status: a domain error's code; an unclassified one, or any
    other exception (a bug), is INTERNAL."""
    if isinstance(err, CowpodError) and err.code != grpc.StatusCode.UNKNOWN:
        return err.code
    return grpc.StatusCode.INTERNAL


def rpc_code(err: BaseException) -> grpc.StatusCode | None:
    """The status a failed gRPC call carries; None for anything that is not one."""
    code = getattr(err, "code", None) if isinstance(err, grpc.RpcError) else None
    got = code() if callable(code) else None
    return got if isinstance(got, grpc.StatusCode) else None


def rpc_details(err: BaseException) -> str:
    """What the server said about a failed gRPC call (the exception's text for anything else)."""
    details = getattr(err, "details", None) if isinstance(err, grpc.RpcError) else None
    got = details() if callable(details) else None
    return str(got) if got is not None else str(err)


def from_rpc_error(err: grpc.RpcError) -> CowpodError:
    """Turn a client-side RpcError back into the domain error it stands for."""
    return error_of(rpc_code(err) or grpc.StatusCode.UNKNOWN, rpc_details(err))


def error_of(code: grpc.StatusCode, details: str) -> CowpodError:
    """The domain error a status code and message stand for (a failed call's, or a
    renewal's answered in a HeartbeatStream response)."""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field, _, reason = (details or "").partition(": ")
        return Invalid(field, reason) if reason else Invalid("", details or "")
    cls = _BY_CODE.get(code, CowpodError)
    e = cls(details or str(code))
    if cls is CowpodError:
        e.code = code
    return e
