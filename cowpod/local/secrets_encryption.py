"""`cowpod up --secrets-encryption`: the local cluster's encryption config, made once.

Why a file of its own in the data dir: the controller reads it on every start
(`--encryption-config`, controller/encryption.py), and losing or regenerating it
would make every stored Secret unreadable. So it is created only when missing,
never rewritten, and a cluster that has one keeps using it on every later `up`,
with or without the flag (as k3s keeps `--secrets-encryption` on once set).
`cowpod down --purge` deletes it with the etcd data it protects.
"""

from __future__ import annotations

import base64
import os
import pathlib

FILE_NAME = "encryption.yaml"
KEY_BYTES = 32  # AES-256: what the controller's aesgcm provider requires


def render(secret: bytes) -> str:
    """A Kubernetes-shaped EncryptionConfiguration: Secrets with one aesgcm key, then identity
    (so Secrets stored before the flag was given still read)."""
    return (
        "# Made by `cowpod up --secrets-encryption`. Keep it: without it the cluster's Secrets\n"
        "# cannot be read. Rotating the key: docs/security.md, \"Encryption at rest\".\n"
        "apiVersion: apiserver.config.k8s.io/v1\n"
        "kind: EncryptionConfiguration\n"
        "resources:\n"
        "  - resources: [secrets]\n"
        "    providers:\n"
        "      - aesgcm:\n"
        "          keys:\n"
        "            - name: key1\n"
        f"              secret: {base64.b64encode(secret).decode()}\n"
        "      - identity: {}\n"
    )


def ensure(path: pathlib.Path) -> bool:
    """Create the file with a fresh random key (mode 0600) unless it exists; True if created.
    Written under a temporary name first, so a crash never leaves half a key behind."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(render(os.urandom(KEY_BYTES)))
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if another `up` made one meanwhile: theirs stays
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True
