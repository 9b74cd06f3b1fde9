"""Bearer tokens: `<id>.<secret>`, like Kubernetes bootstrap tokens.

The id is public (it names the stored record, shows in `cowpod token list`
and in logs); the secret is 32 random characters, shown once at creation
and stored only as its sha256. Checking a token therefore needs one read by
id and one constant-time comparison of hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass

ID_LENGTH = 8
SECRET_LENGTH = 32
_ALPHABET = string.ascii_lowercase + string.digits
_TOKEN_RE = re.compile(rf"^([a-z0-9]{{{ID_LENGTH}}})\.([a-z0-9]{{{SECRET_LENGTH}}})$")

# Tokens of people and scripts expire too unless asked otherwise: a forgotten token is
# a standing credential (the controller's --default-token-ttl; 0 = never).
DEFAULT_TOKEN_TTL = 90 * 86400

ROLES = ("admin", "edit", "view", "bootstrap")


class MalformedToken(ValueError):
    """The string is not a cowpod token at all (never echo it back: it may be a secret)."""


@dataclass(frozen=True)
class BearerToken:
    id: str
    secret: str

    def __str__(self) -> str:
        return f"{self.id}.{self.secret}"

    def __repr__(self) -> str:
        # Never let a secret reach a log line by accident.
        return f"BearerToken(id={self.id!r}, secret=***)"

    @property
    def secret_sha256(self) -> str:
        return hash_secret(self.secret)

    def matches(self, secret_sha256: str) -> bool:
        return hmac.compare_digest(self.secret_sha256, secret_sha256)


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def generate() -> BearerToken:
    return BearerToken(_random(ID_LENGTH), _random(SECRET_LENGTH))


def parse(text: str) -> BearerToken:
    m = _TOKEN_RE.match(text.strip())
    if m is None:
        raise MalformedToken(
            f"a token is {ID_LENGTH} lowercase letters or digits, a dot, then {SECRET_LENGTH} more"
        )
    return BearerToken(m.group(1), m.group(2))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_id(text: str) -> str:
    """The id of a token or of a bare id (what `cowpod token revoke` accepts)."""
    text = text.strip()
    if re.fullmatch(rf"[a-z0-9]{{{ID_LENGTH}}}", text):
        return text
    return parse(text).id
