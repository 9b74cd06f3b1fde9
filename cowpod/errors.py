"""Domain errors, kept apart from bugs, and their one mapping to gRPC codes.

Servicers raise these (or let the store raise them); `grpc_code` is the only
place that decides which status a client sees. Anything else is a bug and
surfaces as INTERNAL with a log line.
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


def grpc_code(err: CowpodError) -> grpc.StatusCode:
    return err.code


def from_rpc_error(err: grpc.RpcError) -> CowpodError:
    """Turn a client-side RpcError back into the domain error it stands for."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field, _, reason = (details or "").partition(": ")
        return Invalid(field, reason) if reason else Invalid("", details or "")
    cls = _BY_CODE.get(code, CowpodError)
    e = cls(details or str(code))
    if cls is CowpodError:
        e.code = code
    return e
