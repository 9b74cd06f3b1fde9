"""What the zygote runs once before it forks agents (`--warmup agent.warmup:run`).

A forked agent lives in its VM's mount namespace, where the host's
site-packages the zygote imported from do not exist. Whatever an agent would
import lazily after the fork therefore fails there: `cryptography` loads its
OpenSSL backend only when a key or certificate is first used, which a secure
agent does when it bootstraps its node certificate. Doing that work once in
the zygote loads every such module into memory that all clones share.

It must not start a thread: the zygote checks it is single-threaded before
it serves (fork copies only the calling thread).
"""

from __future__ import annotations

import time

# The modules the agent's TLS bootstrap uses, imported here for the zygote.
import cowpod.auth.bootstrap  # noqa: F401
from cowpod.pki import (
    CertificateAuthority,
    key_to_pem,
    make_csr,
    new_key,
    node_subject,
    subject_of,
    verify_issued_by,
)


def run(argv: list[str]) -> int:
    """A bootstrap in miniature: a key, a CSR, a CA signing it, the chain checked."""
    del argv
    now = time.time()
    ca = CertificateAuthority.create("cowpod-zygote-warmup", now=now)
    key_pem = key_to_pem(new_key())
    subject = node_subject("warmup")
    cert_pem = ca.sign_csr(make_csr(key_pem, subject), subject=subject, now=now)
    verify_issued_by(ca.cert_pem, cert_pem, now=now)
    if subject_of(cert_pem) != subject:
        raise RuntimeError("warm-up certificate has the wrong subject")
    return 0
