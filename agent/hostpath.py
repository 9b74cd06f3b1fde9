"""hostPath volumes, as the Pod Security Standards' baseline has them: none by default.

A node's admin may allow them under configured prefixes only
(`--allow-host-path /srv/data` read-only, `--allow-host-path /srv/scratch:rw`):

- the path must be clean (`cowpod.auth.podsecurity`: absolute, no `.`/`..`
  components, never the engine's socket, cowpod's state or kernel interfaces)
  and lie under one of the prefixes;
- the mount is read-only unless its prefix is `:rw`, whatever the pod's
  `readOnly` says, so a pod cannot plant anything (say a symlink) in a shared
  read-only prefix;
- every component below the prefix is looked at on the host, where the bind is
  resolved, without following links (the runtime's `lstat`, e.g. Docker's
  container path stat): a symlink anywhere below the prefix — planted by a pod
  with a writable mount, pointing at `/var/run/docker.sock` — is refused, as a
  missing path is.

The admin's prefixes themselves are trusted as written.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class HostPathPrefix:
    """A host directory under which pods may mount hostPath volumes."""

    path: str
    writable: bool = False

    @staticmethod
    def parse(text: str) -> HostPathPrefix:
        """`/srv/data` (read-only), `/srv/data:ro` or `/srv/data:rw`."""
        path, sep, mode = text.rpartition(":")
        if not sep or mode not in ("ro", "rw"):
            path, mode = text, "ro"
        if not path.startswith("/") or posixpath.normpath(path) != path or path == "/" or "//" in path:
            raise ValueError(f"{text!r}: a host path prefix is a clean absolute path other than /")
        return HostPathPrefix(path, writable=mode == "rw")

    def __str__(self) -> str:
        return f"{self.path}:{'rw' if self.writable else 'ro'}"


def prefix_for(path: str, prefixes: Sequence[HostPathPrefix]) -> HostPathPrefix | None:
    """The longest allowed prefix `path` lies under (or is), or None."""
    best: HostPathPrefix | None = None
    for p in prefixes:
        inside = path == p.path or path.startswith(p.path + "/")
        if inside and (best is None or len(p.path) > len(best.path)):
            best = p
    return best


def not_allowed(path: str, prefixes: Sequence[HostPathPrefix]) -> str | None:
    """Why this node does not mount `path`, or None."""
    if not prefixes:
        return "this node allows no hostPath volumes (its agent has no --allow-host-path PREFIX)"
    if prefix_for(path, prefixes) is None:
        return f"not under a prefix this node allows ({', '.join(str(p) for p in prefixes)})"
    return None
