"""Bearer and bootstrap tokens: create, list, revoke, check, redeem.

A token record lives at `registry/tokens/<id>` as a `Token` message holding
the sha256 of the secret, never the secret. Checking costs one read by id;
an unknown id and a wrong secret give the same answer, so the API is no
oracle for which ids exist. A single-use bootstrap token is consumed with a
compare-and-swap delete: two agents racing with one token cannot both win.

Secrets never reach a log line: only ids are logged.
"""

from __future__ import annotations

import logging
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from controller.auth.identity import Identity, Role, identity_from_token
from controller.store import Store
from cowpod.api.validation import is_dns_subdomain
from cowpod.auth import tokens as tok
from cowpod.clock import Clock
from cowpod.errors import Conflict, Invalid, NotFound, PermissionDenied, Unauthenticated
from cowpod.v1 import auth_pb2

log = logging.getLogger(__name__)

PREFIX = "registry/tokens/"
DEFAULT_BOOTSTRAP_TTL = 3600
DEFAULT_TOKEN_TTL = tok.DEFAULT_TOKEN_TTL
MAX_TTL = 10 * 365 * 86400


class TokenRepository(Protocol):
    async def create(self, token: auth_pb2.Token) -> auth_pb2.Token: ...

    async def get(self, token_id: str) -> auth_pb2.Token | None: ...

    async def list(self) -> list[auth_pb2.Token]: ...

    async def delete(self, token_id: str, *, expected_revision: int = 0) -> auth_pb2.Token:
        """Raises NotFound, or Conflict when `expected_revision` is stale."""


class StoreTokenRepository:
    """Tokens in the controller's etcd store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def create(self, token: auth_pb2.Token) -> auth_pb2.Token:
        return await self._store.create(PREFIX + token.metadata.name, token)

    async def get(self, token_id: str) -> auth_pb2.Token | None:
        try:
            return await self._store.get(PREFIX + token_id, auth_pb2.Token)
        except NotFound:
            return None

    async def list(self) -> list[auth_pb2.Token]:
        items, _ = await self._store.list(PREFIX, auth_pb2.Token)
        return items

    async def delete(self, token_id: str, *, expected_revision: int = 0) -> auth_pb2.Token:
        key = PREFIX + token_id
        return await self._store.delete(key, auth_pb2.Token, expected_revision=expected_revision)


class MemoryTokenRepository:
    """For unit tests: the same contract in a dict."""

    def __init__(self) -> None:
        self._items: dict[str, auth_pb2.Token] = {}
        self._rev = 0

    async def create(self, token: auth_pb2.Token) -> auth_pb2.Token:
        from cowpod.errors import AlreadyExists

        if token.metadata.name in self._items:
            raise AlreadyExists(f'tokens "{token.metadata.name}" already exists')
        self._rev += 1
        stored = auth_pb2.Token()
        stored.CopyFrom(token)
        stored.metadata.resource_version = self._rev
        self._items[token.metadata.name] = stored
        token.metadata.resource_version = self._rev
        return token

    async def get(self, token_id: str) -> auth_pb2.Token | None:
        t = self._items.get(token_id)
        if t is None:
            return None
        out = auth_pb2.Token()
        out.CopyFrom(t)
        return out

    async def list(self) -> list[auth_pb2.Token]:
        out = []
        for k in sorted(self._items):
            t = await self.get(k)
            if t is not None:
                out.append(t)
        return out

    async def delete(self, token_id: str, *, expected_revision: int = 0) -> auth_pb2.Token:
        t = self._items.get(token_id)
        if t is None:
            raise NotFound(f'tokens "{token_id}" not found')
        if expected_revision and t.metadata.resource_version != expected_revision:
            raise Conflict(f'tokens "{token_id}" was modified')
        del self._items[token_id]
        return t


def public_view(token: auth_pb2.Token) -> auth_pb2.Token:
    """A copy fit for the API: no hash, no secret."""
    out = auth_pb2.Token()
    out.CopyFrom(token)
    out.secret_sha256 = ""
    out.token = ""
    out.api_version = "v1"
    out.kind = "Token"
    return out


class TokenManager:
    def __init__(self, repo: TokenRepository, clock: Clock, *, default_ttl: int = DEFAULT_TOKEN_TTL) -> None:
        self._repo = repo
        self._clock = clock
        self.default_ttl = default_ttl

    # -- administration

    async def create(
        self,
        *,
        role: str,
        ttl_seconds: int = 0,
        single_use: bool = False,
        node_name: str = "",
        description: str = "",
    ) -> auth_pb2.Token:
        """Store a new token; the answer carries the whole token, the only time it is shown."""
        if role not in tok.ROLES:
            raise Invalid("role", f"must be one of {', '.join(tok.ROLES)} (got {role!r})")
        if ttl_seconds < 0 or ttl_seconds > MAX_TTL:
            raise Invalid("ttlSeconds", f"must be between 0 and {MAX_TTL} (got {ttl_seconds})")
        bootstrap = role == "bootstrap"
        if single_use and not bootstrap:
            raise Invalid("singleUse", "only bootstrap tokens can be single-use")
        if node_name and not bootstrap:
            raise Invalid("nodeName", "only bootstrap tokens are bound to a node")
        if node_name and not is_dns_subdomain(node_name):
            raise Invalid("nodeName", f"{node_name!r} is not a valid node name (RFC 1123 subdomain)")
        if len(description) > 1024:
            raise Invalid("description", "must be no more than 1024 characters")
        if ttl_seconds == 0:
            ttl_seconds = DEFAULT_BOOTSTRAP_TTL if bootstrap else self.default_ttl
        bearer = tok.generate()
        record = auth_pb2.Token(
            api_version="v1",
            kind="Token",
            spec=auth_pb2.TokenSpec(
                role=role, single_use=single_use, node_name=node_name, description=description
            ),
            secret_sha256=bearer.secret_sha256,
        )
        record.metadata.name = bearer.id
        record.metadata.creation_timestamp.FromNanoseconds(int(self._clock.now() * 1e9))
        if ttl_seconds:
            record.spec.expires_at.FromNanoseconds(int((self._clock.now() + ttl_seconds) * 1e9))
        stored = await self._repo.create(record)
        out = public_view(stored)
        out.token = str(bearer)
        log.info("created %s token %s (ttl %ss, single use %s)", role, bearer.id, ttl_seconds, single_use)
        return out

    async def list(self) -> list[auth_pb2.Token]:
        return [public_view(t) for t in await self._repo.list()]

    async def revoke(self, name: str) -> auth_pb2.Token:
        try:
            token_id = tok.token_id(name)
        except tok.MalformedToken as err:
            raise Invalid("name", str(err)) from None
        deleted = await self._repo.delete(token_id)
        log.info("revoked token %s", token_id)
        return public_view(deleted)

    async def prune_expired(self, *, description: str | None = None) -> int:
        """Delete expired records (only those with `description`, when given)."""
        n = 0
        for record in await self._repo.list():
            if description is not None and record.spec.description != description:
                continue
            if self._expired(record):
                try:
                    rv = record.metadata.resource_version
                    await self._repo.delete(record.metadata.name, expected_revision=rv)
                    n += 1
                except (NotFound, Conflict):
                    pass
        return n

    # -- checking

    def _expired(self, record: auth_pb2.Token) -> bool:
        return record.spec.HasField("expires_at") and record.spec.expires_at.ToNanoseconds() <= int(
            self._clock.now() * 1e9
        )

    async def _check(self, text: str) -> auth_pb2.Token:
        try:
            bearer = tok.parse(text)
        except tok.MalformedToken:
            raise Unauthenticated("invalid bearer token: not in the <id>.<secret> form") from None
        record = await self._repo.get(bearer.id)
        if record is None or not bearer.matches(record.secret_sha256):
            raise Unauthenticated("invalid bearer token (unknown, revoked or already used)")
        if self._expired(record):
            raise Unauthenticated(f"token {bearer.id} expired at {_iso(record.spec.expires_at)}")
        return record

    async def authenticate(self, text: str) -> Identity:
        """The identity a bearer token stands for, or `Unauthenticated`."""
        record = await self._check(text)
        return identity_from_token(record.metadata.name, record.spec.role)

    async def redeem_bootstrap(self, text: str, node_name: str) -> auth_pb2.Token:
        """Check a bootstrap token for joining `node_name`, consuming it if single-use."""
        record = await self._check(text)
        tid = record.metadata.name
        if record.spec.role != Role.BOOTSTRAP.value:
            raise PermissionDenied(f"token {tid} is a {record.spec.role} token, not bootstrap")
        if record.spec.node_name and record.spec.node_name != node_name:
            bound = record.spec.node_name
            raise PermissionDenied(f"token {tid} may only join node {bound!r}, not {node_name!r}")
        if record.spec.single_use:
            try:
                await self._repo.delete(tid, expected_revision=record.metadata.resource_version)
            except (NotFound, Conflict):
                raise Unauthenticated("invalid bearer token (unknown, revoked or already used)") from None
            log.info("bootstrap token %s used by node %s (consumed)", record.metadata.name, node_name)
        return record


def _iso(ts: Timestamp) -> str:
    return str(ts.ToJsonString())
