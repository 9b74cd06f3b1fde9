"""The rotating join token that VMs on this host bootstrap with.

VMs the controller creates (the docker provider) mount `<data dir>/run/` at
`/run/cowpod/`. The controller keeps a bootstrap token there, valid for
`ttl` seconds and replaced every `ttl / 2`, so an agent that starts (or an
instant clone that wakes up under a new name) finds a token that is still
valid, and a token copied out of a VM stops working within `ttl`. Old
records are deleted once expired.

Pods never mount this directory. What a holder of the token can do: join as
a node of any name while it is valid (the shared-token trade-off of
Kubernetes' bootstrap tokens; see docs/security.md).
"""

from __future__ import annotations

import logging
import pathlib

from controller.auth.tokens import TokenManager
from cowpod.clock import Clock
from cowpod.errors import CowpodError
from cowpod.safefile import write_atomic

log = logging.getLogger(__name__)

JOIN_TOKEN_FILE = "bootstrap-token"
DESCRIPTION = "VM join token (rotated by the controller)"


def _write(path: pathlib.Path, text: str) -> None:
    """Into the directory every VM can write: never through a link a VM planted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (text + "\n").encode(), 0o600)


async def rotate_once(tokens: TokenManager, run_dir: pathlib.Path, *, ttl: int) -> str:
    """Mint a fresh join token, publish it, delete expired join tokens; returns the new id."""
    created = await tokens.create(role="bootstrap", ttl_seconds=ttl, description=DESCRIPTION)
    _write(run_dir / JOIN_TOKEN_FILE, created.token)
    pruned = await tokens.prune_expired(description=DESCRIPTION)
    log.info("join token %s published in %s (%d expired removed)", created.metadata.name, run_dir, pruned)
    return str(created.metadata.name)


async def run_rotation(tokens: TokenManager, run_dir: pathlib.Path, clock: Clock, *, ttl: int = 7200) -> None:
    """Forever: publish a join token, sleep half its life. etcd outages are retried."""
    while True:
        try:
            await rotate_once(tokens, run_dir, ttl=ttl)
            await clock.sleep(ttl / 2)
        except CowpodError as err:
            log.warning("join token rotation failed (%s); retrying in 5s", err)
            await clock.sleep(5)
