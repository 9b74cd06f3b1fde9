"""The CLI's early manifest check and the controller's validation apply one rule.

Both read cowpod.api.validation (they once each retyped the patterns); these
tables feed the same values to both and require the same verdict, so a name the
CLI lets through is never refused by the controller for a rule the CLI spelled
differently, and the other way round."""

from __future__ import annotations

import pytest

from controller import validation as server
from cowpod.manifest import validate as cli
from cowpod.manifest.errors import FieldError
from cowpod.manifest.kinds import POD
from cowpod.v1 import meta_pb2

NAMES = ["web", "web-1", "a.b.c", "a" * 63, "a" * 64, "x." + "a" * 250, "Web", "-web", "web-", "we_b", "1"]
KEYS = [
    "app", "cowpod.io/class", "a/b/c", "/x", "x/", "Tier_1.x", "-x", "a" * 63, "a" * 64, "UPPER.example/x",
]
VALUES = ["", "v", "v-1.2_3", "-v", "v-", "a" * 63, "a" * 64, "has space"]


def _server_ok(check: object, value: str) -> bool:
    errs = server.Errors()
    check(errs, "f", value)  # type: ignore[operator]
    return not errs.items


def _cli_ok(check: object, value: str) -> bool:
    try:
        check(value, "f")  # type: ignore[operator]
    except FieldError:
        return False
    return True


@pytest.mark.parametrize("name", NAMES)
def test_dns_subdomain(name: str) -> None:
    assert _server_ok(server.dns_subdomain, name) == _cli_ok(cli.check_dns_subdomain, name)


@pytest.mark.parametrize("name", NAMES)
def test_dns_label(name: str) -> None:
    assert _server_ok(server.dns_label, name) == _cli_ok(cli.check_dns_label, name)


@pytest.mark.parametrize("key", KEYS)
def test_label_keys(key: str) -> None:
    assert _server_ok(server.qualified_name, key) == _cli_ok(cli._check_key, key)


@pytest.mark.parametrize("value", VALUES)
def test_label_values(value: str) -> None:
    def cli_check(v: str, path: str) -> None:
        cli.validate_meta(meta_pb2.ObjectMeta(name="x", namespace="default", labels={"k": v}), POD, path)

    assert _server_ok(server.label_value, value) == _cli_ok(cli_check, value)


def test_both_sides_refuse_and_accept_something() -> None:
    # The tables above are not vacuous: each rule has both verdicts in them.
    verdicts = {_server_ok(server.dns_subdomain, n) for n in NAMES}
    assert verdicts == {True, False}
    assert {_server_ok(server.qualified_name, k) for k in KEYS} == {True, False}
    assert {_server_ok(server.label_value, v) for v in VALUES} == {True, False}
