"""The gRPC server interceptor that puts every call through the gate.

For each call, before the servicer runs:

    1. who: the bearer token if the call carries one (checked: UNAUTHENTICATED,
       or RESOURCE_EXHAUSTED once its source address failed too often), else
       the client certificate the TLS handshake verified (insecure: admin)
    2. rate limit for that client, now proven          -> RESOURCE_EXHAUSTED
    3. object limits on the request                    -> INVALID_ARGUMENT
    4. authorize(identity, method, request)            -> UNAUTHENTICATED / PERMISSION_DENIED
    5. for nodes: is the pod bound to this node?       -> PERMISSION_DENIED
    6. stream cap for watches and logs                 -> RESOURCE_EXHAUSTED

A grpc.aio interceptor only sees the method name and metadata, so it wraps
the method handler it is given: the wrapper sees the decoded request and the
servicer context (whose auth context holds the verified peer certificate).
The identity is published in a ContextVar for servicers that need it
(`WhoAmI`). Denials are logged with the user and method, never a secret.

grpc.aio asks the interceptor for a handler on every call, so the wrapped handler
is built once per method and kept (`_handlers`); each call reads its metadata from
its own servicer context (the same tuple gRPC put in the call details). Within
`_caller` (step 1) and `_gate` (steps 2-5) only the steps that may read the store
(a bearer token, a node's pod or reference check) are awaited; the rest are plain
calls, without a coroutine per step.

A stream that carries many requests (`NodeService.HeartbeatStream`) is opened
through steps 1-4 on the method alone, then steps 2-5 run again on every message
as on the unary call the message stands for (`_MESSAGES_AS`): its own rate-limit
charge, limits and authorization. Who the caller is stays what it was at the
open (a Kubernetes watch or an etcd keep-alive stream does not re-authenticate
either). A refused message does not end the stream: the servicer answers it with
the refusal, as etcd answers a refused watch on a shared watch stream.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from google.protobuf.message import Message

from controller.auth.authorizer import PodCheck, Requirement, decide, split_method
from controller.auth.identity import INSECURE, Identity, Role, identity_from_subject
from controller.auth.tokens import TokenManager
from controller.limits import Limits, RateLimiter, StreamCounter, check_message, source_address
from controller.rpc import RefusedMessage
from cowpod.auth import tokens as tok
from cowpod.auth.podsecurity import pod_violations
from cowpod.clock import Clock
from cowpod.errors import CowpodError, Invalid, NotFound, PermissionDenied, Unauthenticated
from cowpod.pki import CONTROLLERS_GROUP, PKIError, subject_of

log = logging.getLogger(__name__)

current_identity: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "cowpod_identity", default=None
)


class PodNodeLookup(Protocol):
    async def __call__(self, namespace: str, name: str) -> str:
        """The node the stored pod is bound to ('' if unbound); raises NotFound."""


class ReferenceLookup(Protocol):
    async def __call__(self, node: str, namespace: str, kind: str, name: str) -> bool:
        """Does a pod bound to `node` in `namespace` reference the ConfigMap/Secret `kind` `name`?"""


Behavior = Callable[..., Any]
# Pod isolation rules (cowpod.auth.podsecurity) are checked on these, for every role.
# Writes of pods and of pod templates, checked against the pod security rules (podsecurity.py).
_POD_WRITES = frozenset({"/cowpod.v1.PodService/Create", "/cowpod.v1.PodService/Update"} | {
    f"/cowpod.v1.{kind}Service/{verb}" for kind in ("ReplicaSet", "Deployment", "Job", "DaemonSet")
    for verb in ("Create", "Update")})
Ctx = grpc.aio.ServicerContext[Any, Any]
if TYPE_CHECKING:  # generic only to the type checker
    Handler = grpc.RpcMethodHandler[Any, Any]

# Streams whose every message is admitted as a call of a unary method: the stream is
# opened on its own rule (the authorizer's), then each message passes steps 2-5 as that
# call would, so a node's HeartbeatStream renews only that node. A refused message reaches
# the servicer as a `RefusedMessage` (it answers with the error and the stream goes on).
_MESSAGES_AS = {"/cowpod.v1.NodeService/HeartbeatStream": "/cowpod.v1.NodeService/Heartbeat"}


@dataclass(frozen=True)
class _Caller:
    """A proven caller and the rate-limit budget its requests are charged to."""

    identity: Identity
    key: str  # rate-limit key; "" = not limited (insecure mode)
    system: bool  # components get the system budget


_INSECURE_CALLER = _Caller(INSECURE, "", False)


@dataclass(frozen=True)
class _Method:
    """What the gate needs of a method's name, worked out once per method."""

    name: str  # "/cowpod.v1.PodService/Create"
    service: str  # "cowpod.v1.PodService"
    verb: str  # "Create"
    last: str  # the name after its last "/" (what a malformed request is named by)
    pod_write: bool  # checked against the pod security rules

    @staticmethod
    def of(name: str) -> _Method:
        service, verb = split_method(name)
        return _Method(name, service, verb, name.rpartition("/")[2], name in _POD_WRITES)


class _Undecodable:
    """Stands in for a request whose bytes are not the method's message.

    gRPC reports a deserializer exception as UNKNOWN; a malformed request is
    the caller's fault, so the wrapper answers INVALID_ARGUMENT instead."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class _Received:
    """A request as the method's deserializer made it, with the length of the bytes it came
    from: `check_message` bounds the request by it instead of serializing it again."""

    __slots__ = ("message", "size")

    def __init__(self, message: Any, size: int) -> None:
        self.message = message
        self.size = size


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return _Received(deserialize(data), len(data))
        except Exception as err:  # any parse failure is the caller's malformed input
            return _Undecodable(err)

    return parse


async def _answers(result: Any) -> AsyncIterator[Any]:
    """A streaming handler's answers: its async generator's items, or none when the
    handler is a coroutine that writes them itself."""
    if inspect.isasyncgen(result):
        async for item in result:
            yield item
    else:
        await result


def _unwrap(received: Any) -> tuple[Any, int | None]:
    """The request a tolerant deserializer handed over and the length of its bytes (None when
    the method has no deserializer: the request is the bytes, or when it is `_Undecodable`)."""
    if isinstance(received, _Received):
        return received.message, received.size
    return received, None


class _CertCache:
    """Callers by certificate PEM: parsing X.509 per call would be wasteful. The caller's
    rate-limit key and budget follow from the certificate alone, except an anonymous one's
    (its key names the source address: `AuthInterceptor._proven`)."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._items: OrderedDict[bytes, _Caller] = OrderedDict()

    def caller(self, pem: bytes) -> _Caller:
        caller = self._items.get(pem)
        if caller is None:
            try:
                peer = identity_from_subject(subject_of(pem))
            except PKIError:
                raise Unauthenticated("client certificate could not be read") from None
            # Components and the cluster's own admin certificate (benchmarks, supervisors)
            # get the system budget; people with tokens the user budget.
            system = peer.role in (Role.NODE, Role.SCHEDULER, Role.ADMIN) or CONTROLLERS_GROUP in peer.groups
            caller = _Caller(peer, peer.user if peer.authenticated else "", system)
            self._items[pem] = caller
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return caller


def _bearer(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("the authorization header must be 'Bearer <token>'")
            return token.strip()
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        *,
        tokens: TokenManager | None,
        limits: Limits,
        clock: Clock,
        pod_node: PodNodeLookup | None,
        insecure: bool = False,
        references: ReferenceLookup | None = None,
    ) -> None:
        self._tokens = tokens
        self._limits = limits
        self._rate = RateLimiter(limits, clock)
        self._failures = RateLimiter.for_failures(limits, clock)
        # Ids of tokens that authenticated here lately (ids only: they are not secret). A
        # source over its failure budget may still present these, so an attacker sharing
        # the victim's address (NAT, the VMs' unix socket) cannot lock the victim out.
        self._known_tokens: OrderedDict[str, None] = OrderedDict()
        self._streams = StreamCounter(limits.max_streams)
        self._pod_node = pod_node
        self._references = references
        self._insecure = insecure
        self._certs = _CertCache()
        # Per method: the handler gRPC found and its wrapped stand-in (both made once).
        self._handlers: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        known = self._handlers.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(_Method.of(method), handler)
        if len(self._handlers) >= 4096:  # a server has a few hundred methods; never grow without end
            self._handlers.clear()
        self._handlers[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, m: _Method, handler: Handler) -> Handler:
        kw = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        unary_kw = {**kw, "request_deserializer": _tolerant(handler.request_deserializer)}
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._unary(m, handler.unary_unary), **unary_kw)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._unary_stream(m, handler.unary_stream), **unary_kw
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._stream_in(m, handler.stream_unary, streaming_out=False), **kw
            )
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(
            self._stream_in(m, handler.stream_stream, streaming_out=True), **kw
        )

    # -- the gate

    async def _caller(self, metadata: Any, context: Ctx) -> _Caller:
        """Step 1: who calls, proven (once per call, streams included)."""
        pems = list(context.auth_context().get("x509_pem_cert") or ())
        peer = self._certs.caller(pems[0]) if pems else None
        if peer is None and not self._insecure:
            # TLS with required client certificates makes this unreachable; never fail open.
            raise Unauthenticated("no client certificate")
        token = self._bearer_or_failure(metadata, context)
        if token is not None:
            identity = await self._authenticate(token, source_address(context.peer()))
            return _Caller(identity, identity.user, False)
        if peer is None:
            return _INSECURE_CALLER
        if peer.identity.authenticated:
            return peer
        return _Caller(peer.identity, f"anonymous@{source_address(context.peer())}", peer.system)

    async def _gate(
        self, caller: _Caller, m: _Method, request: Any, size: int | None = None
    ) -> PodCheck | None:
        """Steps 2 to 5 for one request of a proven caller: once per call, and once per
        message of a stream admitted message by message (`_MESSAGES_AS`). Returns the decision's
        check (one for after the call is the caller's: `_check_response`).
        `size`: the length of the bytes the request was read from, if known."""
        identity = caller.identity
        # Charged only now that the caller is proven: junk under a user's token id costs
        # the junk's source, never the user (issue #15).
        if caller.key:  # insecure mode trusts every caller: no rate limit, only the object limits
            self._rate.check(caller.key, system=caller.system)
        if isinstance(request, Message):
            check_message(request, self._limits, wire_size=size)
            if m.pod_write:
                for field, why in pod_violations(request):
                    raise Invalid(field, why)
        decision = decide(identity, m.service, m.verb, request)
        if not decision.allowed:
            log.info("denied %s %s: %s", identity.user, m.name, decision.reason)
            if decision.unauthenticated:
                raise Unauthenticated(decision.reason)
            raise PermissionDenied(decision.reason)
        check = decision.check
        if check is not None:
            if check.requirement is Requirement.BOUND_BEFORE:
                await self._check_bound(check, identity)
            elif check.requirement is Requirement.REFERENCED:
                await self._check_referenced(check, identity)
        return check

    def _failed(self, source: str) -> None:
        """Charge a failed authentication to its source; RESOURCE_EXHAUSTED when over budget."""
        self._failures.check(f"failed-auth@{source}")

    def _bearer_or_failure(self, metadata: Any, context: Ctx) -> str | None:
        try:
            return _bearer(metadata)
        except Unauthenticated:
            self._failed(source_address(context.peer()))
            raise

    async def _authenticate(self, token: str, source: str) -> Identity:
        """The token's identity; failures are charged to `source`, not to the token's id."""
        if self._tokens is None:
            raise Unauthenticated("this controller does not accept bearer tokens (it runs --insecure)")
        try:
            token_id = tok.parse(token).id
        except tok.MalformedToken:
            self._failed(source)
            raise Unauthenticated("invalid bearer token: not in the <id>.<secret> form") from None
        if token_id not in self._known_tokens and self._failures.exhausted(f"failed-auth@{source}"):
            # Over its failure budget, a source costs no store read for tokens never seen to work.
            self._failed(source)
        try:
            identity = await self._tokens.authenticate(token)
        except Unauthenticated:
            self._failed(source)
            raise
        self._known_tokens[token_id] = None
        self._known_tokens.move_to_end(token_id)
        while len(self._known_tokens) > self._limits.max_clients:
            self._known_tokens.popitem(last=False)
        return identity

    async def _check_bound(self, check: PodCheck, identity: Identity) -> None:
        if self._pod_node is None:
            raise PermissionDenied(f"{identity.describe()}: pod ownership cannot be checked")
        try:
            node = await self._pod_node(check.namespace, check.name)
        except NotFound:
            node = ""
        if node != check.node:
            # Not found and bound elsewhere look the same: a node learns nothing about others' pods.
            whose = f"bound to node {check.node!r}" if check.node else "not bound to a node yet"
            raise PermissionDenied(
                f"{identity.describe()} may only touch pods {whose}; "
                f"pod {check.namespace}/{check.name} is not"
            )

    async def _check_referenced(self, check: PodCheck, identity: Identity) -> None:
        """Kubernetes' node authorizer for ConfigMaps and Secrets: only what its pods use."""
        ok = self._references is not None and await self._references(
            check.node, check.namespace or "default", check.kind, check.name)
        if not ok:
            # Missing and unreferenced look the same: a node learns nothing about others' objects.
            raise PermissionDenied(
                f"{identity.describe()} may only get a {check.kind} that a pod bound to it references; "
                f"{check.namespace or 'default'}/{check.name} is not referenced by one"
            )

    @staticmethod
    def _check_response(check: PodCheck | None, identity: Identity, response: Any) -> None:
        if check is None or check.requirement is not Requirement.BOUND_RESPONSE:
            return
        node = getattr(getattr(response, "spec", None), "node_name", None)
        if node != check.node:
            meta = getattr(response, "metadata", None)
            what = f"{meta.namespace}/{meta.name}" if meta is not None else "this pod"
            raise PermissionDenied(
                f"{identity.describe()} may only read pods bound to node {check.node!r}; {what} is not"
            )

    @staticmethod
    async def _abort(context: Ctx, err: CowpodError) -> None:
        await context.abort(err.code, str(err))

    # -- wrappers per call shape

    def _unary(self, m: _Method, inner: Behavior) -> Behavior:
        async def call(received: Any, context: Ctx) -> Any:
            request, size = _unwrap(received)
            try:
                if isinstance(request, _Undecodable):
                    raise Invalid("", f"request is not a valid message for {m.last}: {request.error}")
                caller = await self._caller(context.invocation_metadata(), context)
                check = await self._gate(caller, m, request, size)
            except CowpodError as err:
                await self._abort(context, err)
                raise AssertionError("unreachable") from None
            identity = caller.identity
            # gRPC runs each call in a task of its own, whose context dies with it: no reset
            # (a reset from an async generator's finally may run in another context).
            current_identity.set(identity)
            response = await inner(request, context)
            if check is not None:
                try:
                    self._check_response(check, identity, response)
                except CowpodError as err:
                    await self._abort(context, err)
            return response

        return call

    async def _open_stream(
        self, context: Ctx, m: _Method, request: Any, size: int | None = None
    ) -> tuple[_Caller, contextlib.AbstractContextManager[None]]:
        """Admit a streaming call of `m` (its request, if it has one) and take one of its
        user's `max_streams` places, which the caller releases when the stream ends."""
        try:
            if isinstance(request, _Undecodable):
                raise Invalid("", f"request is not a valid message for {m.last}: {request.error}")
            caller = await self._caller(context.invocation_metadata(), context)
            await self._gate(caller, m, request, size)
            opened = self._streams.opened(caller.identity.user)
            opened.__enter__()
        except CowpodError as err:
            await self._abort(context, err)
            raise AssertionError("unreachable") from None
        return caller, opened

    def _unary_stream(self, m: _Method, inner: Behavior) -> Behavior:
        async def call(received: Any, context: Ctx) -> AsyncIterator[Any]:
            request, size = _unwrap(received)
            caller, opened = await self._open_stream(context, m, request, size)
            current_identity.set(caller.identity)
            try:
                async for item in _answers(inner(request, context)):
                    yield item
            finally:
                opened.__exit__(None, None, None)

        return call

    async def _gated(self, caller: _Caller, m: _Method, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """`requests`, each admitted as a call of `m`; a refused one as a RefusedMessage."""
        async for request in requests:
            try:
                await self._gate(caller, m, request)
            except CowpodError as err:
                yield RefusedMessage(request, err)
                continue
            yield request

    def _stream_in(self, m: _Method, inner: Behavior, *, streaming_out: bool) -> Behavior:
        """Client-streaming methods: admitted on the method alone (server reflection,
        ExecStream), and those in `_MESSAGES_AS` then message by message too. Each open one
        counts against its user's `max_streams`, as server-streaming calls do: a
        heartbeat or exec stream holds server resources for as long as a watch."""

        as_method = _MESSAGES_AS.get(m.name)
        per_message = _Method.of(as_method) if as_method is not None else None
        if streaming_out:

            async def call_stream(requests: Any, context: Ctx) -> AsyncIterator[Any]:
                caller, opened = await self._open_stream(context, m, None)
                try:
                    if per_message is not None:
                        requests = self._gated(caller, per_message, requests)
                    async for item in _answers(inner(requests, context)):
                        yield item
                finally:
                    opened.__exit__(None, None, None)

            return call_stream

        async def call_unary(request_iterator: Any, context: Ctx) -> Any:
            _, opened = await self._open_stream(context, m, None)
            with opened:
                return await inner(request_iterator, context)

        return call_unary
