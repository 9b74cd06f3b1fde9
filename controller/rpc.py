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
from cowpod.errors import CowpodError

log = logging.getLogger(__name__)

Ctx = grpc.aio.ServicerContext[Any, Any]

# Codes a client caused; logged quietly. Anything else a CowpodError carries is logged as a warning.
_CLIENT_CODES = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE,
})


def status_for(err: CowpodError) -> grpc.StatusCode:
    """The gRPC code for a domain error; an unclassified CowpodError is an internal error."""
    code = err.code
    return grpc.StatusCode.INTERNAL if code == grpc.StatusCode.UNKNOWN else code


def _serialize(m: Any) -> bytes:
    return m if isinstance(m, bytes) else bytes(m.SerializeToString())


class _Call:
    def __init__(self, method: str, metrics: Metrics) -> None:
        self.method = method
        self.metrics = metrics
        self.start = time.perf_counter()
        self.code = "OK"

    async def fail(self, context: Ctx, err: BaseException) -> None:
        if isinstance(err, CowpodError):
            code = status_for(err)
            self.code = code.name
            if code in _CLIENT_CODES:
                log.debug("%s -> %s: %s", self.method, code.name, err)
            else:
                log.warning("%s -> %s: %s", self.method, code.name, err)
            await context.abort(code, str(err))
        self.code = "INTERNAL"
        log.error("%s failed with a bug: %r", self.method, err, exc_info=err)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {self.method}: {err!r}")

    def done(self) -> None:
        self.metrics.requests.labels(self.method, self.code).inc()


def _wrap_unary(method: str, fn: Callable[[Any, Any], Awaitable[Any]], metrics: Metrics) -> Any:
    async def handler(request: Any, context: Ctx) -> Any:
        call = _Call(method, metrics)
        try:
            return await fn(request, context)
        except grpc.aio.AbortError:
            call.code = "ABORTED_BY_HANDLER"
            raise
        except Exception as err:
            await call.fail(context, err)
        finally:
            metrics.latency.labels(method).observe(time.perf_counter() - call.start)
            call.done()

    return handler


def _wrap_stream(method: str, fn: Callable[[Any, Any], AsyncIterator[Any]], metrics: Metrics) -> Any:
    async def handler(request: Any, context: Ctx) -> AsyncIterator[Any]:
        call = _Call(method, metrics)
        first = True
        try:
            async for item in fn(request, context):
                if first:
                    first = False
                    metrics.latency.labels(method).observe(time.perf_counter() - call.start)
                yield item
        except grpc.aio.AbortError:
            call.code = "ABORTED_BY_HANDLER"
            raise
        except Exception as err:
            await call.fail(context, err)
        finally:
            call.done()

    return handler


def service_handler(service: ServiceDescriptor, servicer: object, metrics: Metrics) -> grpc.GenericRpcHandler:
    """Build the gRPC handler for `service` from `servicer`'s same-named async methods."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for m in service.methods:
        fn = getattr(servicer, m.name, None)
        if fn is None:
            raise TypeError(f"{type(servicer).__name__} does not implement {service.full_name}.{m.name}")
        req_cls = message_factory.GetMessageClass(m.input_type)
        full = f"{service.name}.{m.name}"
        if m.client_streaming:
            raise TypeError(f"{full}: client streaming is not supported")
        if m.server_streaming:
            handlers[m.name] = grpc.unary_stream_rpc_method_handler(
                _wrap_stream(full, fn, metrics),
                request_deserializer=req_cls.FromString,
                response_serializer=_serialize,
            )
        else:
            handlers[m.name] = grpc.unary_unary_rpc_method_handler(
                _wrap_unary(full, fn, metrics),
                request_deserializer=req_cls.FromString,
                response_serializer=_serialize,
            )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
