"""Who may call a *node's* agent: only the controller.

The agent serves logs and exec on a socket in the run directory every VM
mounts. With TLS, the agent presents its node *serving* certificate (server
use only, named after the node, which the controller checks) and requires a
client certificate from the cluster CA — but the shared transport
certificate is from that CA too, so the server also checks the caller's
identity: `PeerCheck` lets only the listed users (CN) through, for every
method, and answers PERMISSION_DENIED otherwise.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import grpc

from cowpod.pki import CONTROLLER_USER, CertKey, subject_of

Ctx = grpc.aio.ServicerContext[Any, Any]


def peer_user(context: Ctx) -> str | None:
    pems = list(context.auth_context().get("x509_pem_cert") or ())
    if not pems:
        return None
    return subject_of(pems[0]).common_name


class PeerCheck(grpc.aio.ServerInterceptor):
    def __init__(self, allowed_users: Collection[str] = (CONTROLLER_USER,)) -> None:
        self._allowed = frozenset(allowed_users)

    async def _check(self, context: Ctx) -> None:
        user = peer_user(context)
        if user not in self._allowed:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{user or 'a caller without a certificate'} may not call this agent; "
                f"only {', '.join(sorted(self._allowed))}",
            )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        kw = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
        if handler.unary_unary is not None:
            inner_uu: Any = handler.unary_unary

            async def uu(request: Any, context: Ctx) -> Any:
                await self._check(context)
                return await inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(uu, **kw)
        if handler.unary_stream is not None:
            inner_us: Any = handler.unary_stream

            async def us(request: Any, context: Ctx) -> AsyncIterator[Any]:
                await self._check(context)
                result: Any = inner_us(request, context)
                if inspect.isasyncgen(result):
                    async for item in result:
                        yield item
                else:
                    await result

            return grpc.unary_stream_rpc_method_handler(us, **kw)
        return handler  # the agent has no client-streaming methods


def node_server_credentials(pair: CertKey, ca_pem: bytes) -> grpc.ServerCredentials:
    """TLS for an agent's server: its serving certificate; callers need a cluster certificate."""
    return grpc.ssl_server_credentials([(pair.key_pem, pair.cert_pem)], root_certificates=ca_pem,
                                       require_client_auth=True)
