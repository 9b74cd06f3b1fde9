"""Service registration: the one place where domain errors become gRPC status codes.

Every method of every service is wrapped here, so servicers stay thin (decode ->
domain -> encode) and raise `cowpod.errors` exceptions. The wrapper also counts
requests and latencies, logs failures, and lets streaming methods yield
pre-encoded bytes (watch fan-out encodes an event once for all streams).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor

from controller.metrics import Metrics
from cowpod.errors import CowpodError, status_of

log = logging.getLogger(__name__)

Ctx = grpc.aio.ServicerContext[Any, Any]

WARNING_KEY = "warning"
"""Trailing-metadata key of the server's warnings (one entry each, as the Kubernetes API
server's `Warning:` headers): fields accepted with no effect (cowpod.api.podfields)."""


def send_warnings(ctx: Ctx, warnings: list[str]) -> None:
    """Attach `warnings` to the answer as trailing metadata (ASCII, as gRPC requires)."""
    if warnings:
        ctx.set_trailing_metadata(tuple((WARNING_KEY, w.encode("ascii", "replace").decode())
                                        for w in warnings))


class RefusedMessage:
    """A message of a stream the auth interceptor admits message by message
    (`NodeService.HeartbeatStream`), refused by it: the servicer answers it with `error`
    and the stream goes on. Handed over in place of the request, never dropped, so a
    servicer that does not expect one fails loudly rather than serving it."""

    __slots__ = ("error", "request")

    def __init__(self, request: Any, error: CowpodError) -> None:
        self.request = request
        self.error = error


# Codes a client caused; logged quietly. Anything else a CowpodError carries is logged as a warning.
_CLIENT_CODES = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE,
})


def _serialize(m: Any) -> bytes:
    """A response as bytes: pre-encoded ones (watch events) as they are, messages encoded."""
    if isinstance(m, bytes):
        return m
    out: bytes = m.SerializeToString()
    return out


class _Call:
    """One method's metric children, looked up once (a labels() call per request is a lock
    and a dict walk), and how a failed call is reported."""

    def __init__(self, method: str, metrics: Metrics) -> None:
        self.method = method
        self.metrics = metrics
        self.latency = metrics.latency.labels(method)
        self._counts: dict[str, Any] = {}

    def count(self, code: str) -> None:
        c = self._counts.get(code)
        if c is None:
            c = self._counts[code] = self.metrics.requests.labels(self.method, code)
        c.inc()

    @staticmethod
    def code_of(err: BaseException) -> str:
        return status_of(err).name

    async def fail(self, context: Ctx, err: BaseException) -> None:
        """Abort the call with the status `err` stands for (logged by how much it matters)."""
        if isinstance(err, CowpodError):
            code = status_of(err)
            if code in _CLIENT_CODES:
                log.debug("%s -> %s: %s", self.method, code.name, err)
            else:
                log.warning("%s -> %s: %s", self.method, code.name, err)
            await context.abort(code, str(err))
        log.error("%s failed with a bug: %r", self.method, err, exc_info=err)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {self.method}: {err!r}")


# An admission step every unary call passes before its servicer runs ("PodService.Create",
# request): raises a CowpodError to refuse (controller/namespaces.py: NamespaceLifecycle).
Admit = Callable[[str, Any], Awaitable[None]]


def _wrap_unary(method: str, fn: Callable[[Any, Any], Awaitable[Any]], metrics: Metrics,
                admit: Admit | None = None) -> Any:
    call = _Call(method, metrics)
    observe = call.latency.observe
    perf = time.perf_counter

    async def handler(request: Any, context: Ctx) -> Any:
        start = perf()
        code = "OK"
        try:
            if admit is not None:
                await admit(method, request)
            return await fn(request, context)
        except grpc.aio.AbortError:
            code = "ABORTED_BY_HANDLER"
            raise
        except Exception as err:
            code = call.code_of(err)
            await call.fail(context, err)
        finally:
            observe(perf() - start)
            call.count(code)

    return handler


def _wrap_stream(method: str, fn: Callable[[Any, Any], AsyncIterator[Any]], metrics: Metrics) -> Any:
    call = _Call(method, metrics)

    async def handler(request: Any, context: Ctx) -> AsyncIterator[Any]:
        start = time.perf_counter()
        first = True
        code = "OK"
        try:
            async for item in fn(request, context):
                if first:
                    first = False
                    call.latency.observe(time.perf_counter() - start)
                yield item
        except grpc.aio.AbortError:
            code = "ABORTED_BY_HANDLER"
            raise
        except Exception as err:
            code = call.code_of(err)
            await call.fail(context, err)
        finally:
            call.count(code)

    return handler


def service_handler(service: ServiceDescriptor, servicer: object, metrics: Metrics,
                    admit: Admit | None = None) -> grpc.GenericRpcHandler:
    """Build the gRPC handler for `service` from `servicer`'s same-named async methods."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for m in service.methods:
        fn = getattr(servicer, m.name, None)
        if fn is None:
            raise TypeError(f"{type(servicer).__name__} does not implement {service.full_name}.{m.name}")
        req_cls = message_factory.GetMessageClass(m.input_type)
        full = f"{service.name}.{m.name}"
        if m.client_streaming and not m.server_streaming:
            raise TypeError(f"{full}: client streaming is not supported")
        if m.client_streaming:  # both ways (interactive exec): the handler gets the request iterator
            handlers[m.name] = grpc.stream_stream_rpc_method_handler(
                _wrap_stream(full, fn, metrics),
                request_deserializer=req_cls.FromString,
                response_serializer=_serialize,
            )
        elif m.server_streaming:
            handlers[m.name] = grpc.unary_stream_rpc_method_handler(
                _wrap_stream(full, fn, metrics),
                request_deserializer=req_cls.FromString,
                response_serializer=_serialize,
            )
        else:
            handlers[m.name] = grpc.unary_unary_rpc_method_handler(
                _wrap_unary(full, fn, metrics, admit),
                request_deserializer=req_cls.FromString,
                response_serializer=_serialize,
            )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
