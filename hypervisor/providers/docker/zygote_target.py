"""Resolve a Docker container id or name to the host pid of its init process.

The zygote must stay single-threaded and hold no long-lived connections
(anything open at fork time is inherited by every clone), so instead of the
`docker` SDK's pooled session it makes one plain HTTP request per lookup over
the engine's unix socket and closes it.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from typing import Any, Protocol


class TargetNotFound(LookupError):
    """No such container, or it is not running."""


class TargetResolver(Protocol):
    def init_pid(self, container: str) -> int:
        """Host pid of the container's init; TargetNotFound if missing or not running."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class DockerSocketResolver:
    """Ask the Docker engine (`GET /containers/<ref>/json`) for `State.Pid`."""

    def __init__(self, socket_path: str = "/var/run/docker.sock", timeout: float = 5.0) -> None:
        self._socket_path = socket_path
        self._timeout = timeout

    def init_pid(self, container: str) -> int:
        state = self.inspect(container).get("State", {})
        pid = int(state.get("Pid") or 0)
        if not state.get("Running") or pid <= 0:
            raise TargetNotFound(
                f"target.container: container {container!r} is not running (status {state.get('Status')!r})"
            )
        return pid

    def labels(self, container: str) -> dict[str, str]:
        labels = self.inspect(container).get("Config", {}).get("Labels") or {}
        return {str(k): str(v) for k, v in labels.items()}

    def inspect(self, container: str) -> dict[str, Any]:
        """`docker inspect` of one container; TargetNotFound when there is none."""
        conn = _UnixHTTPConnection(self._socket_path, self._timeout)
        try:
            conn.request("GET", f"/containers/{urllib.parse.quote(container, safe='')}/json")
            resp = conn.getresponse()
            body = resp.read()
        except OSError as e:
            raise OSError(e.errno, f"docker engine at {self._socket_path}: {e.strerror or e}") from e
        finally:
            conn.close()
        if resp.status == 404:
            raise TargetNotFound(f"target.container: no such container {container!r}")
        if resp.status != 200:
            raise OSError(f"docker engine: inspect {container!r} answered HTTP {resp.status}: {body[:200]!r}")
        obj = json.loads(body)
        if not isinstance(obj, dict):
            raise OSError(f"docker engine: inspect {container!r}: unexpected answer")
        return obj
