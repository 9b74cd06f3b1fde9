"""`<data-dir>/cluster.json`: what `cowpod up` started, for `status`, `down` and the CLI.

The file is the only link between `up` and later commands: the controller
address the CLI talks to by default, each component's pid, address and log,
and the cluster id that labels the cluster's Docker containers. It is written
atomically (temp file + rename), so a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

from cowpod.auth.config import ConnectionSettings
from cowpod.pki import ClusterPKI

STATE_FILE = "cluster.json"


@dataclass(frozen=True)
class ComponentState:
    name: str  # etcd | controller | scheduler
    pid: int
    address: str  # where its health is checked (gRPC / etcd client / metrics)
    log: str
    command: list[str] = field(default_factory=list)
    health: str = "pid"  # grpc | etcd | etcd-tls (etcd requiring client certificates) | http | pid


@dataclass(frozen=True)
class ClusterState:
    cluster_id: str
    data_dir: str
    controller: str
    controller_socket: str = ""
    provider: str = "docker"
    etcd: str = ""
    started_at: str = ""
    detached: bool = False
    supervisor_pid: int = 0
    components: list[ComponentState] = field(default_factory=list)
    # TLS: the controller requires client certificates from <pki_dir> (see cowpod.pki).
    secure: bool = False
    pki_dir: str = ""

    def component(self, name: str) -> ComponentState | None:
        for c in self.components:
            if c.name == name:
                return c
        return None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return {
            "clusterId": d["cluster_id"],
            "dataDir": d["data_dir"],
            "controller": d["controller"],
            "controllerSocket": d["controller_socket"],
            "provider": d["provider"],
            "etcd": d["etcd"],
            "startedAt": d["started_at"],
            "detached": d["detached"],
            "supervisorPid": d["supervisor_pid"],
            "components": d["components"],
            "secure": d["secure"],
            "pkiDir": d["pki_dir"],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ClusterState:
        return cls(
            cluster_id=str(d["clusterId"]),
            data_dir=str(d["dataDir"]),
            controller=str(d["controller"]),
            controller_socket=str(d.get("controllerSocket", "")),
            provider=str(d.get("provider", "docker")),
            etcd=str(d.get("etcd", "")),
            started_at=str(d.get("startedAt", "")),
            detached=bool(d.get("detached", False)),
            supervisor_pid=int(d.get("supervisorPid", 0)),
            components=[
                ComponentState(
                    name=str(c["name"]),
                    pid=int(c["pid"]),
                    address=str(c.get("address", "")),
                    log=str(c.get("log", "")),
                    command=[str(a) for a in c.get("command", [])],
                    health=str(c.get("health", "pid")),
                )
                for c in d.get("components", [])
            ],
            secure=bool(d.get("secure", False)),
            pki_dir=str(d.get("pkiDir", "")),
        )


class StateError(Exception):
    """cluster.json exists but cannot be read: the message says which file and why."""


def state_path(data_dir: pathlib.Path) -> pathlib.Path:
    return data_dir / STATE_FILE


def read_state(data_dir: pathlib.Path) -> ClusterState | None:
    """The recorded cluster, or None when there is no cluster.json."""
    path = state_path(data_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StateError(f"cannot read {path}: {e.strerror}") from None
    try:
        return ClusterState.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as e:
        raise StateError(f"{path} is damaged ({e}); remove it or run `cowpod down`") from None


def write_state(data_dir: pathlib.Path, state: ClusterState) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = state_path(data_dir)
    fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".cluster.", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state.to_json(), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def remove_state(data_dir: pathlib.Path) -> None:
    state_path(data_dir).unlink(missing_ok=True)


def connection_for(state: ClusterState, server: str | None = None) -> ConnectionSettings:
    """How to reach this cluster's controller: as its admin over TLS, or plaintext when insecure."""
    address = server or state.controller
    if not state.secure:
        return ConnectionSettings(server=address, insecure=True)
    pki = ClusterPKI(pathlib.Path(state.pki_dir))
    try:
        admin = pki.load("admin")
        ca = pki.ca_cert.read_bytes()
    except OSError as e:
        raise StateError(
            f"cannot read the cluster's admin credentials in {pki.directory}: {e.strerror}"
        ) from None
    return ConnectionSettings(
        server=address, ca_pem=ca, client_cert_pem=admin.cert_pem, client_key_pem=admin.key_pem
    )
