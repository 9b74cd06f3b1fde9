"""Tokens: format, hashing at rest, expiry, revocation, single-use bootstrap tokens."""

from __future__ import annotations

import asyncio
import pathlib
import stat

import pytest

from controller.auth.identity import Role, Via
from controller.auth.tokens import MemoryTokenRepository, TokenManager
from cowpod.auth import tokens as tok
from cowpod.clock import FakeClock
from cowpod.errors import Invalid, NotFound, PermissionDenied, Unauthenticated


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def repo() -> MemoryTokenRepository:
    return MemoryTokenRepository()


@pytest.fixture
def mgr(repo: MemoryTokenRepository, clock: FakeClock) -> TokenManager:
    return TokenManager(repo, clock)


def test_token_format_roundtrip_and_repr_hides_secret() -> None:
    t = tok.generate()
    assert tok.parse(str(t)) == t
    assert t.secret not in repr(t)
    assert tok.token_id(str(t)) == t.id == tok.token_id(t.id)


@pytest.mark.parametrize(
    "text", ["", "abc", "ABCDEFGH." + "a" * 32, "abcdefgh." + "a" * 31, "abcdefgh" + "a" * 33]
)
def test_malformed_tokens(text: str) -> None:
    with pytest.raises(tok.MalformedToken):
        tok.parse(text)


async def test_secret_is_stored_only_as_hash(mgr: TokenManager, repo: MemoryTokenRepository) -> None:
    created = await mgr.create(role="view")
    bearer = tok.parse(created.token)
    stored = await repo.get(bearer.id)
    assert stored is not None
    assert bearer.secret not in stored.SerializeToString().decode("latin-1")
    assert stored.secret_sha256 == tok.hash_secret(bearer.secret)
    assert created.secret_sha256 == ""
    listed = await mgr.list()
    assert [t.metadata.name for t in listed] == [bearer.id]
    assert listed[0].secret_sha256 == "" and listed[0].token == ""


async def test_authenticate_gives_role(mgr: TokenManager) -> None:
    created = await mgr.create(role="edit")
    ident = await mgr.authenticate(created.token)
    assert ident.role is Role.EDIT and ident.via is Via.TOKEN
    assert ident.user == f"token:{created.metadata.name}"


async def test_wrong_secret_and_unknown_id_look_the_same(mgr: TokenManager) -> None:
    created = await mgr.create(role="admin")
    bearer = tok.parse(created.token)
    wrong = f"{bearer.id}.{'x' * 32}"
    with pytest.raises(Unauthenticated) as e1:
        await mgr.authenticate(wrong)
    with pytest.raises(Unauthenticated) as e2:
        await mgr.authenticate(str(tok.generate()))
    assert str(e1.value) == str(e2.value)
    assert bearer.secret not in str(e1.value)


async def test_expired_token_is_refused(mgr: TokenManager, clock: FakeClock) -> None:
    created = await mgr.create(role="view", ttl_seconds=60)
    await mgr.authenticate(created.token)
    await clock.advance(61)
    with pytest.raises(Unauthenticated, match="expired"):
        await mgr.authenticate(created.token)


async def test_revoked_token_is_refused(mgr: TokenManager) -> None:
    created = await mgr.create(role="view")
    await mgr.revoke(created.metadata.name)
    with pytest.raises(Unauthenticated):
        await mgr.authenticate(created.token)
    with pytest.raises(NotFound):
        await mgr.revoke(created.metadata.name)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"role": "root"}, "role"),
        ({"role": "view", "ttl_seconds": -1}, "ttlSeconds"),
        ({"role": "view", "single_use": True}, "singleUse"),
        ({"role": "edit", "node_name": "n1"}, "nodeName"),
        ({"role": "bootstrap", "node_name": "Bad_Name"}, "nodeName"),
    ],
)
async def test_create_rejects_bad_input(mgr: TokenManager, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(Invalid) as e:
        await mgr.create(**kwargs)  # type: ignore[arg-type]
    assert e.value.field == field


async def test_bootstrap_token_defaults_to_an_hour(mgr: TokenManager, clock: FakeClock) -> None:
    created = await mgr.create(role="bootstrap")
    await clock.advance(3599)
    await mgr.redeem_bootstrap(created.token, "n1")
    await clock.advance(2)
    with pytest.raises(Unauthenticated, match="expired"):
        await mgr.redeem_bootstrap(created.token, "n1")


async def test_single_use_bootstrap_token_is_consumed_once(mgr: TokenManager) -> None:
    created = await mgr.create(role="bootstrap", single_use=True, node_name="n1")
    results = await asyncio.gather(
        mgr.redeem_bootstrap(created.token, "n1"), mgr.redeem_bootstrap(created.token, "n1"),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert any(isinstance(r, Unauthenticated) for r in results)


async def test_bootstrap_token_bound_to_node(mgr: TokenManager) -> None:
    created = await mgr.create(role="bootstrap", node_name="n1")
    with pytest.raises(PermissionDenied, match="may only join node 'n1'"):
        await mgr.redeem_bootstrap(created.token, "n2")


async def test_user_token_cannot_bootstrap(mgr: TokenManager) -> None:
    created = await mgr.create(role="admin")
    with pytest.raises(PermissionDenied, match="not bootstrap"):
        await mgr.redeem_bootstrap(created.token, "n1")


async def test_join_token_rotation_publishes_and_prunes(
    mgr: TokenManager, clock: FakeClock, tmp_path: pathlib.Path
) -> None:
    from controller.auth.jointoken import JOIN_TOKEN_FILE, rotate_once

    first = await rotate_once(mgr, tmp_path, ttl=100)
    text = (tmp_path / JOIN_TOKEN_FILE).read_text().strip()
    assert tok.parse(text).id == first
    await mgr.redeem_bootstrap(text, "any-node")
    other = await mgr.create(role="view", ttl_seconds=10)
    await clock.advance(101)
    second = await rotate_once(mgr, tmp_path, ttl=100)
    names = {t.metadata.name for t in await mgr.list()}
    # The expired join token is gone; an expired token of another kind is not ours to prune.
    assert names == {second, other.metadata.name}
    assert stat.S_IMODE((tmp_path / JOIN_TOKEN_FILE).stat().st_mode) == 0o600
