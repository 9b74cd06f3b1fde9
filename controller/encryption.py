"""Encryption at rest: Kubernetes' EncryptionConfiguration, reduced to what cowpod needs.

Why: etcd's data directory, its snapshots and backups hold every Secret. With
`--encryption-config FILE` the controller encrypts the whole stored value of the
listed resources before it goes to etcd and decrypts it as it comes back, in
`controller.store.EtcdStore` (the one place bytes meet etcd), so everything
above the store (get, list, watch hubs, informers, transactions, group commit)
sees plaintext and etcd sees only ciphertext.

The file has Kubernetes' shape (a Kubernetes user's file works when it uses
these providers)::

    apiVersion: apiserver.config.k8s.io/v1
    kind: EncryptionConfiguration
    resources:
      - resources: [secrets]          # secrets and/or configmaps
        providers:                    # the first encrypts; every one may decrypt
          - aesgcm:
              keys:
                - {name: key2, secret: <base64 of 32 random bytes>}   # encrypts
                - {name: key1, secret: <base64 ...>}                  # still decrypts
          - identity: {}              # reads values stored before encryption was on

A stored value is `k8s:enc:aesgcm:v1:<key name>:` + a random 12-byte nonce +
AES-256-GCM ciphertext and tag, with the object's etcd key (relative, so
`--etcd-prefix` may change) as associated data: a ciphertext copied under
another key does not decrypt. Values without the `k8s:enc:` prefix are plaintext,
readable only while `identity` is listed (as in Kubernetes).

Only the first key of the first provider encrypts; the rest decrypt. So a key is
rotated in four steps: add the new key second, restart every controller; move it
first, restart; rewrite every object (`cowpod-controller --encryption-rewrite`);
drop the old key, restart. See docs/security.md.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from controller.configs import CONFIGMAPS, SECRETS
from controller.kinds import Kind
from controller.store import Compare, Put, Store
from controller.store import _describe as _describe
from cowpod.configfile import parse_yaml, read_config
from cowpod.errors import FailedPrecondition, Invalid

log = logging.getLogger(__name__)

# Every encrypted value starts with this, then `<provider>:v1:<key name>:` (Kubernetes' layout).
ENVELOPE_PREFIX = b"k8s:enc:"
AESGCM_PROVIDER = "aesgcm"
IDENTITY_PROVIDER = "identity"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce, random per write
# The kinds whose objects only ever reach etcd through the generic store path (no raw
# byte shortcuts elsewhere), so encrypting them in the store is complete.
ENCRYPTABLE: Mapping[str, Kind[Any]] = {SECRETS.resource: SECRETS, CONFIGMAPS.resource: CONFIGMAPS}
# Providers Kubernetes has that cowpod does not implement: named in the error.
_UNSUPPORTED = ("aescbc", "secretbox", "kms")


class Undecryptable(FailedPrecondition):
    """A stored value this controller's encryption config cannot read: the message names
    the object and the key it needs; the operator fixes the config (or deletes the object)."""


@dataclass(frozen=True)
class AESGCMKey:
    name: str
    secret: bytes = b""

    def __repr__(self) -> str:  # never print key material
        return f"AESGCMKey(name={self.name!r})"


@dataclass(frozen=True)
class Provider:
    """`aesgcm` with its keys (the first encrypts), or `identity` (no keys)."""

    kind: str
    keys: tuple[AESGCMKey, ...] = ()


class Chain:
    """One resource's providers: writes with the first, reads with whichever wrote."""

    def __init__(self, providers: Sequence[Provider]) -> None:
        self.providers = tuple(providers)
        self.identity = any(p.kind == IDENTITY_PROVIDER for p in self.providers)
        first = self.providers[0]
        self._write_key = first.keys[0] if first.kind == AESGCM_PROVIDER else None
        self._write_aead = AESGCM(self._write_key.secret) if self._write_key is not None else None
        self._write_prefix = _prefix(self._write_key.name) if self._write_key is not None else b""
        # Key name -> AEAD; a name listed twice: the first listing wins, as providers are ordered.
        self._read: dict[str, AESGCM] = {}
        for p in self.providers:
            for k in p.keys:
                self._read.setdefault(k.name, AESGCM(k.secret))

    @property
    def write_key(self) -> str:
        """`aesgcm:<name>` or `identity`: what new writes are stored with."""
        return f"{AESGCM_PROVIDER}:{self._write_key.name}" if self._write_key else IDENTITY_PROVIDER

    def encrypt(self, key: str, value: bytes) -> bytes:
        if self._write_aead is None:
            return value
        nonce = os.urandom(NONCE_BYTES)
        return self._write_prefix + nonce + self._write_aead.encrypt(nonce, value, key.encode())

    def decrypt(self, key: str, value: bytes) -> bytes:
        if not value.startswith(ENVELOPE_PREFIX):
            if self.identity:
                return value
            raise Undecryptable(
                f"{_describe(key)} is stored unencrypted and the encryption config lists no "
                f"`{IDENTITY_PROVIDER}` provider for it: add `- identity: {{}}` last to read it"
            )
        provider, name, body = _parse(value)
        if provider != AESGCM_PROVIDER or name is None:
            raise Undecryptable(f"{_describe(key)} is stored by provider {provider!r}, which cowpod "
                                "cannot read")
        aead = self._read.get(name)
        if aead is None:
            raise Undecryptable(
                f"{_describe(key)} is encrypted with aesgcm key {name!r}, which the encryption config "
                "no longer lists: add that key back (not first) to read it, or delete the object"
            )
        if len(body) < NONCE_BYTES:
            raise Undecryptable(f"{_describe(key)}: encrypted value is truncated (key {name!r})")
        try:
            return aead.decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], key.encode())
        except InvalidTag:
            raise Undecryptable(
                f"{_describe(key)} does not decrypt with aesgcm key {name!r}: the key's secret differs "
                "from the one it was written with, or the stored value was altered"
            ) from None


class EncryptionConfig:
    """Which stored keys are encrypted and how: what `EtcdStore` calls on every value of
    an encrypted resource (and only those: `applies` is a prefix test)."""

    def __init__(self, chains: Mapping[str, Chain]) -> None:
        self.chains = dict(chains)
        self._prefixes = tuple(ENCRYPTABLE[r].prefix() for r in self.chains)
        self._by_prefix = {ENCRYPTABLE[r].prefix(): c for r, c in self.chains.items()}

    @property
    def resources(self) -> list[str]:
        return sorted(self.chains)

    def applies(self, key: str) -> bool:
        return key.startswith(self._prefixes)

    def _chain(self, key: str) -> Chain:
        return self._by_prefix["/".join(key.split("/", 2)[:2]) + "/"]

    def encrypt(self, key: str, value: bytes) -> bytes:
        """The bytes to store under `key` (relative: `registry/secrets/ns/name`)."""
        return self._chain(key).encrypt(key, value) if self.applies(key) else value

    def decrypt(self, key: str, value: bytes) -> bytes:
        """The object bytes stored under `key`; raises `Undecryptable` naming it."""
        return self._chain(key).decrypt(key, value) if self.applies(key) else value

    def describe(self) -> str:
        return ", ".join(f"{r} with {self.chains[r].write_key}" for r in self.resources)


def _prefix(name: str) -> bytes:
    return ENVELOPE_PREFIX + f"{AESGCM_PROVIDER}:v1:{name}:".encode()


def _parse(value: bytes) -> tuple[str, str | None, bytes]:
    """`k8s:enc:<provider>:v1:<name>:<body>` -> (provider, name, body); name None if malformed."""
    parts = value[len(ENVELOPE_PREFIX):].split(b":", 3)
    provider = parts[0].decode(errors="replace")
    if len(parts) < 4 or parts[1] != b"v1":
        return provider, None, b""
    return provider, parts[2].decode(errors="replace"), parts[3]


# --- the file ---------------------------------------------------------------------------------------


def new_key() -> str:
    """A fresh base64 secret for an aesgcm key (what `head -c 32 /dev/urandom | base64` gives)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def parse(doc: Any) -> EncryptionConfig:
    """Validate a parsed file; every problem is an `Invalid` naming its field path."""
    if not isinstance(doc, dict):
        raise Invalid("", "must be a mapping with `resources:` (an EncryptionConfiguration)")
    _no_unknown("", doc, ("apiVersion", "kind", "resources"))
    if doc.get("kind", "EncryptionConfiguration") != "EncryptionConfiguration":
        raise Invalid("kind", f"must be EncryptionConfiguration (got {doc.get('kind')!r})")
    entries = doc.get("resources")
    if not isinstance(entries, list) or not entries:
        raise Invalid("resources", "required: a list of {resources: [...], providers: [...]}")
    chains: dict[str, Chain] = {}
    for i, entry in enumerate(entries):
        path = f"resources[{i}]"
        if not isinstance(entry, dict):
            raise Invalid(path, "must be a mapping with `resources` and `providers`")
        _no_unknown(path, entry, ("resources", "providers"))
        names = entry.get("resources")
        if not isinstance(names, list) or not names:
            raise Invalid(f"{path}.resources", "required: a list of resource names, e.g. [secrets]")
        chain = Chain(_providers(f"{path}.providers", entry.get("providers")))
        for j, name in enumerate(names):
            rpath = f"{path}.resources[{j}]"
            if name not in ENCRYPTABLE:
                raise Invalid(rpath, f"cowpod encrypts only {', '.join(sorted(ENCRYPTABLE))} (got {name!r})")
            if name in chains:
                raise Invalid(rpath, f"{name} is already listed in an earlier entry")
            chains[name] = chain
    return EncryptionConfig(chains)


def _no_unknown(path: str, mapping: dict[Any, Any], known: tuple[str, ...]) -> None:
    """`Invalid` for the first (sorted) field of `mapping` not in `known`."""
    for field in sorted(set(mapping) - set(known)):
        raise Invalid(f"{path}.{field}" if path else str(field), f"unknown field (known: {', '.join(known)})")


def _providers(path: str, raw: Any) -> list[Provider]:
    if not isinstance(raw, list) or not raw:
        raise Invalid(path, "required: a list of providers (aesgcm, identity), the first encrypts")
    out: list[Provider] = []
    for i, p in enumerate(raw):
        ppath = f"{path}[{i}]"
        if not isinstance(p, dict) or len(p) != 1:
            raise Invalid(ppath, "must name exactly one provider: aesgcm or identity")
        (kind, body), = p.items()
        if kind == IDENTITY_PROVIDER:
            if body not in (None, {}):
                raise Invalid(f"{ppath}.identity", "takes no settings: write `identity: {}`")
            out.append(Provider(IDENTITY_PROVIDER))
        elif kind == AESGCM_PROVIDER:
            out.append(Provider(AESGCM_PROVIDER, _keys(f"{ppath}.aesgcm", body)))
        elif kind in _UNSUPPORTED:
            raise Invalid(f"{ppath}.{kind}", "not supported by cowpod: use aesgcm (or identity)")
        else:
            raise Invalid(f"{ppath}.{kind}", "unknown provider (known: aesgcm, identity)")
    return out


def _keys(path: str, body: Any) -> tuple[AESGCMKey, ...]:
    if not isinstance(body, dict) or set(body) != {"keys"}:
        raise Invalid(f"{path}.keys", "required: aesgcm takes `keys:`, a list of {name, secret}")
    raw = body["keys"]
    if not isinstance(raw, list) or not raw:
        raise Invalid(f"{path}.keys", "required: at least one {name, secret}; the first encrypts")
    keys: list[AESGCMKey] = []
    for i, k in enumerate(raw):
        kpath = f"{path}.keys[{i}]"
        if not isinstance(k, dict):
            raise Invalid(kpath, "must be a mapping with `name` and `secret`")
        _no_unknown(kpath, k, ("name", "secret"))
        name = k.get("name")
        if not isinstance(name, str) or not name:
            raise Invalid(f"{kpath}.name", "required")
        if ":" in name or len(name) > 64 or not name.isprintable():
            raise Invalid(f"{kpath}.name", "must be at most 64 printable characters without ':' "
                          "(it is written into every stored value)")
        if any(name == other.name for other in keys):
            raise Invalid(f"{kpath}.name", f"duplicate key name {name!r}")
        secret = k.get("secret")
        try:
            if not isinstance(secret, str):
                raise ValueError
            material = base64.b64decode(secret, validate=True)
        except (ValueError, binascii.Error):
            raise Invalid(f"{kpath}.secret", f"must be {KEY_BYTES} bytes base64") from None
        if len(material) != KEY_BYTES:
            raise Invalid(f"{kpath}.secret", f"must be {KEY_BYTES} bytes base64 (got {len(material)} bytes)")
        keys.append(AESGCMKey(name, material))
    return tuple(keys)


def loads(text: str) -> EncryptionConfig:
    return parse(parse_yaml(text))


def load(path: str | pathlib.Path) -> EncryptionConfig:
    return loads(read_config(path, "encryption config"))


async def rewrite(store: Store, config: EncryptionConfig) -> tuple[int, int]:
    """Store every object of the encrypted resources again, so each is encrypted with the
    current first key (Kubernetes: `kubectl get secrets -A -o json | kubectl replace -f -`).

    Each write is a compare-and-swap on the revision read: an object changed meanwhile
    was just written with the current key anyway. Objects this config cannot read are
    left as they are (listing skips them, naming each in the log). Returns (rewritten,
    changed meanwhile)."""
    rewritten = raced = 0
    for resource in config.resources:
        kvs, _ = await store.list_raw(ENCRYPTABLE[resource].prefix())
        for kv in kvs:
            res = await store.txn([Compare.at(kv.key, kv.mod_revision)], [Put(kv.key, kv.value, kv.lease)])
            if res.succeeded:
                rewritten += 1
            else:
                raced += 1
    log.info("encryption rewrite: %d objects of %s stored again (%s), %d changed meanwhile",
             rewritten, ", ".join(config.resources), config.describe(), raced)
    return rewritten, raced
