"""What the user reads when something fails: one line, no traceback.

`CliError` is an expected failure with its message and exit code. `rpc_error`
turns a gRPC failure into words that say what to do (`is the cluster up?`),
naming the object the command was about when it knows it.
"""

from __future__ import annotations

import grpc

from cowpod.errors import rpc_code


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


_UNREACHABLE_HINTS = (
    "failed to connect",
    "connection refused",
    "connect failed",
    "no such file or directory",
    "name resolution",
    "dns resolution failed",
    "socket closed",
    "empty address list",
    "connection reset",
    "unavailable",
)


def _details(err: grpc.RpcError) -> str:
    """The server's words on one line; the code's name when it said nothing."""
    details = err.details() if hasattr(err, "details") else None
    return " ".join(str(details or "").split()) or str(_code(err).name.lower())


def _code(err: grpc.RpcError) -> grpc.StatusCode:
    return rpc_code(err) or grpc.StatusCode.UNKNOWN


def rpc_message(err: grpc.RpcError, *, address: str, what: str = "") -> str:
    """One line for a failed call to the controller at `address` about `what` (e.g. `pod "web"`)."""
    code = _code(err)
    details = _details(err)
    if code == grpc.StatusCode.UNAVAILABLE:
        lowered = details.lower()
        if any(h in lowered for h in _UNREACHABLE_HINTS) and "etcd" not in lowered:
            return f"cannot reach the controller at {address}: is the cluster up? (`cowpod up`)"
        return f"the controller at {address} is unavailable: {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"the controller at {address} did not answer in time"
    if code == grpc.StatusCode.NOT_FOUND:
        # "metadata.namespace: namespaces "x" not found": what is missing is not the object itself.
        return f"{what} not found" if what and not details.startswith("metadata.") else details
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return f"{what} already exists" if what else details
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return f"invalid {what}: {details}" if what else f"invalid request: {details}"
    if code == grpc.StatusCode.ABORTED:
        target = what or "the object"
        return f"{target} was changed by someone else meanwhile; try again ({details})"
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return (
            f"the controller at {address} does not implement this call ({details}); "
            "are the CLI and the controller the same version?"
        )
    if code == grpc.StatusCode.CANCELLED:
        return "cancelled"
    if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE):
        return f"{what}: {details}" if what else details
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return f"{code.name.lower().replace('_', ' ')}: {details}"
    return f"{code.name.lower()}: {details}"


def rpc_error(err: grpc.RpcError, *, address: str, what: str = "") -> CliError:
    return CliError(rpc_message(err, address=address, what=what))


def is_not_found(err: BaseException) -> bool:
    return isinstance(err, grpc.RpcError) and _code(err) == grpc.StatusCode.NOT_FOUND


def code_of(err: grpc.RpcError) -> grpc.StatusCode:
    return _code(err)
