"""controller.etcdwire writes a TxnRequest's bytes directly: they must be exactly the bytes
of the upb message the store used to build field by field (kept here as the reference),
for every kind of compare and op and the edge cases of the wire format."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from aetcd import rpc

from controller.etcdwire import txn_request, varint
from controller.store_types import Compare, Delete, Get, Op, Put, Target

_TARGET = {Target.MOD: rpc.Compare.MOD, Target.CREATE: rpc.Compare.CREATE,
           Target.VERSION: rpc.Compare.VERSION}
_FIELD = {Target.MOD: "mod_revision", Target.CREATE: "create_revision", Target.VERSION: "version"}
_RESULT = {"=": rpc.Compare.EQUAL, "!=": rpc.Compare.NOT_EQUAL, "<": rpc.Compare.LESS,
           ">": rpc.Compare.GREATER}


def reference(prefix: bytes, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op],
              encrypt: Callable[[str, bytes], bytes] | None = None) -> bytes:
    """The request as `EtcdStore._send` built it before, as a upb message, serialized."""
    req = rpc.TxnRequest()
    for c in compares:
        rc = req.compare.add()
        rc.key = prefix + c.key.encode()
        rc.target = _TARGET[c.target]
        rc.result = _RESULT[c.op]
        setattr(rc, _FIELD[c.target], c.value)

    def ops(into: Any, ops: Sequence[Op]) -> None:
        for op in ops:
            if isinstance(op, Put):
                put = into.add().request_put
                put.key = prefix + op.key.encode()
                put.value = op.value if encrypt is None else encrypt(op.key, op.value)
                if op.lease:
                    put.lease = op.lease
            elif isinstance(op, Delete):
                into.add().request_delete_range.key = prefix + op.key.encode()
            else:
                into.add().request_range.key = prefix + op.key.encode()

    ops(req.success, success)
    ops(req.failure, failure)
    return bytes(req.SerializeToString())


INT64 = [0, 1, 127, 128, 300, 16383, 16384, 2**21, 123_456_789, 2**63 - 1, -1, -300, -(2**63)]
LONG_KEY = "registry/pods/default/" + "x" * 200  # lengths over one and two varint bytes
HUGE_KEY = "k" * 20000


@pytest.mark.parametrize("value", INT64)
def test_varint_is_protobufs(value: int) -> None:
    # an int64 field (Compare.version, field 4) as upb writes it: its tag, then the varint
    assert b"\x20" + varint(value) == rpc.Compare(version=value).SerializeToString()
    assert rpc.Compare.FromString(b"\x20" + varint(value)).version == value


@pytest.mark.parametrize("target", list(Target))
@pytest.mark.parametrize("op", ["=", "!=", "<", ">"])
@pytest.mark.parametrize("value", INT64)
def test_every_compare_is_written_as_upb_writes_it(target: Target, op: str, value: int) -> None:
    c = [Compare("registry/pods/default/web", target, op, value)]
    assert txn_request(b"/cowpod/", c, [], []) == reference(b"/cowpod/", c, [], [])


@pytest.mark.parametrize("key", ["a", "registry/pods/default/wéb", LONG_KEY, HUGE_KEY])
@pytest.mark.parametrize("value", [b"", b"v", b"x" * 127, b"x" * 128, b"x" * 16383, b"x" * 16384,
                                   b"y" * 70000])
@pytest.mark.parametrize("lease", [0, 7, 2**62, -5])
def test_every_put_is_written_as_upb_writes_it(key: str, value: bytes, lease: int) -> None:
    for branch in ("success", "failure"):
        ops: list[Op] = [Put(key, value, lease)]
        s, f = (ops, []) if branch == "success" else ([], ops)
        assert txn_request(b"/p/", [], s, f) == reference(b"/p/", [], s, f), branch


@pytest.mark.parametrize("key", ["a", LONG_KEY, HUGE_KEY])
def test_gets_and_deletes_are_written_as_upb_writes_them(key: str) -> None:
    ops: list[Op] = [Get(key), Delete(key), Get(key + "2")]
    assert txn_request(b"/p/", [], ops, ops) == reference(b"/p/", [], ops, ops)


def test_every_length_around_the_one_and_two_byte_boundaries() -> None:
    """Key and value lengths where a length, or an enclosing message's length, needs one
    more varint byte (127/128 and 16383/16384 bytes, at every level of nesting)."""
    for kl in [*range(1, 300), *range(16250, 16400)]:
        key = "k" * kl
        for value in (b"", b"v" * (256 - kl % 256), b"w" * (16384 - kl % 16384)):
            ops: list[Op] = [Get(key), Delete(key), Put(key, value), Put(key, value, 99)]
            compares = [Compare.at(key, 5), Compare.absent(key)]
            assert txn_request(b"/", compares, ops, ops) == reference(b"/", compares, ops, ops), kl


def test_a_merged_transaction_is_written_as_upb_writes_it() -> None:
    """A group commit merge: creates, lease renewals, binds, reads; and an empty one."""
    compares = [Compare.absent(f"registry/pods/default/p{i}") for i in range(16)]
    compares += [Compare.exists("registry/nodes/n1"), Compare.at("registry/leases/n1", 987_654_321),
                 Compare.created_at("registry/nodes/n2", 5), Compare("k", Target.MOD, "<", 3)]
    success: list[Op] = [Put(f"registry/pods/default/p{i}", b"pod" * 150) for i in range(16)]
    success += [Put("registry/leases/n1", b"lease", 12345), Get("registry/nodes/n2"), Delete("gone")]
    failure: list[Op] = [Get(c.key) for c in compares]
    failure.append(Get("registry/nodes/n1"))
    for prefix in (b"/", b"/cowpod/", b"/t-" + b"z" * 200 + b"/"):
        want = reference(prefix, compares, success, failure)
        assert txn_request(prefix, compares, success, failure) == want
    assert txn_request(b"/", [], [], []) == reference(b"/", [], [], []) == b""


def test_values_are_encrypted_with_their_key() -> None:
    def encrypt(key: str, value: bytes) -> bytes:
        return b"enc:" + key.encode() + b":" + value[::-1]

    ops: list[Op] = [Put("registry/secrets/default/s", b"top secret"), Put("registry/secrets/default/e", b""),
                     Get("registry/secrets/default/s")]
    got = txn_request(b"/c/", [], ops, ops, encrypt)
    assert got == reference(b"/c/", [], ops, ops, encrypt)
    put = rpc.TxnRequest.FromString(got).success[0].request_put
    assert put.value == b"enc:registry/secrets/default/s:terces pot"
