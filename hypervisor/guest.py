"""The guest bootstrap: everything a VM's guest needs to become a node, in one value.

The VM manager builds one `GuestBootstrap` per VM and hands it to the provider
with `full_clone` / `instant_clone`; the provider only *transports* it into the
guest (docker: a file written into the container; qemu: a virtio-serial port
read after the fork; vsphere: `guestinfo.cowpod.bootstrap` extraConfig) and the
guest's init turns it into files and the agent's command line with the
functions below. So the agent's flags are written in exactly one place, and a
clone never comes up as its parent: its identity arrives after the fork.

Standard library only (and `cowpod.api.labels`, which is too): the guest's init
(which has nothing else) imports it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Node labels every VM's node carries (the autoscaler and scheduler read them).
from cowpod.api.labels import CLASS_LABEL, TEMPLATE_LABEL, VM_LABEL

# Where the guest keeps the join bundle and its sockets.
GUEST_RUN_DIR = "/run/cowpod"
# The key a provider uses when it carries the bootstrap as a string (guestinfo, env).
BOOTSTRAP_KEY = "cowpod.bootstrap"


@dataclass(frozen=True)
class JoinBundle:
    """What a joining agent may see: the cluster CA, the shared transport pair
    (public by design) and a bootstrap token it exchanges for its own certificate."""

    ca_pem: str
    transport_cert_pem: str
    transport_key_pem: str
    token: str

    @staticmethod
    def load(run_dir: pathlib.Path) -> JoinBundle | None:
        """The bundle the controller publishes in `<data>/run`; None when the cluster is insecure."""
        ca = run_dir / "ca.crt"
        if not ca.exists():
            return None
        token = run_dir / "bootstrap-token"
        return JoinBundle(
            ca_pem=ca.read_text(),
            transport_cert_pem=(run_dir / "transport.crt").read_text(),
            transport_key_pem=(run_dir / "transport.key").read_text(),
            token=token.read_text().strip() if token.exists() else "",
        )


@dataclass(frozen=True)
class GuestEndpoints:
    """How this VM's agent and the controller reach each other; the provider knows.

    `controller` is the controller's address *as seen from the guest*
    (docker: a unix socket mounted into the VM; qemu: the user-mode NAT's host
    address; vsphere: whatever the operator configured). `agent_listen` is where
    the agent serves inside the guest, `agent_advertise` where the controller
    dials it (a forwarded port, a shared socket, the VM's IP). `agent_args` are
    provider-specific agent flags (e.g. docker's `--vm-container`)."""

    controller: str
    agent_listen: str
    agent_advertise: str
    agent_args: tuple[str, ...] = ()
    # The name in the controller's certificate when `controller` is an address
    # the certificate does not carry (an IP through a NAT).
    tls_server_name: str = ""


@dataclass(frozen=True)
class GuestBootstrap:
    node_name: str
    hostname: str
    machine_id: str
    labels: Mapping[str, str]
    endpoints: GuestEndpoints
    # None: an insecure cluster (the agent runs with --insecure).
    join: JoinBundle | None = None
    agent_command: str = "cowpod-agent"
    # Kept after the fork: the guest's clock is stepped and its RNG reseeded from this.
    issued_at: float = 0.0
    entropy: str = field(default_factory=lambda: base64.b64encode(os.urandom(32)).decode())

    # ---- transport ---------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> GuestBootstrap:
        d: dict[str, Any] = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError("guest bootstrap: must be a JSON object")
        try:
            ep = _endpoints(d.pop("endpoints"))
        except (KeyError, TypeError) as err:
            raise ValueError(f"guest bootstrap: endpoints: {err}") from err
        join = d.pop("join", None)
        try:
            return GuestBootstrap(endpoints=ep, join=JoinBundle(**join) if join else None,
                                  labels=dict(d.pop("labels", {})), **d)
        except TypeError as err:
            raise ValueError(f"guest bootstrap: {err}") from err

    def to_b64(self) -> str:
        """One line of ASCII, for channels that carry strings (guestinfo, env, a serial port)."""
        return base64.b64encode(self.to_json().encode()).decode()

    @staticmethod
    def from_b64(text: str) -> GuestBootstrap:
        return GuestBootstrap.from_json(base64.b64decode(text.strip()).decode())

    # ---- the guest side ----------------------------------------------------------

    def agent_argv(self, run_dir: str = GUEST_RUN_DIR) -> list[str]:
        """The agent's command line: the one place its flags are written."""
        ep = self.endpoints
        argv = [
            self.agent_command,
            "--controller", ep.controller,
            "--node-name", self.node_name,
            "--listen", ep.agent_listen,
            "--advertise", ep.agent_advertise,
            "--labels", ",".join(f"{k}={v}" for k, v in self.labels.items()),
            *ep.agent_args,
        ]
        if ep.tls_server_name:
            argv += ["--tls-server-name", ep.tls_server_name]
        return argv + join_args(run_dir, secure=self.join is not None)

    def write_join_files(self, run_dir: pathlib.Path) -> None:
        """Put the join bundle where `agent_argv` points the agent (guest side)."""
        if self.join is None:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        for name, text, mode in (
            ("ca.crt", self.join.ca_pem, 0o644),
            ("transport.crt", self.join.transport_cert_pem, 0o644),
            ("transport.key", self.join.transport_key_pem, 0o600),
            ("bootstrap-token", self.join.token, 0o600),
        ):
            path = run_dir / name
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.chmod(mode)
            tmp.replace(path)


def _endpoints(d: Mapping[str, Any]) -> GuestEndpoints:
    return GuestEndpoints(
        controller=str(d["controller"]), agent_listen=str(d["agent_listen"]),
        agent_advertise=str(d["agent_advertise"]), agent_args=tuple(str(a) for a in d.get("agent_args", ())),
        tls_server_name=str(d.get("tls_server_name", "")),
    )


def join_args(run_dir: str, *, secure: bool) -> list[str]:
    """Agent flags for a guest whose `run_dir` holds the join bundle."""
    if not secure:
        return ["--insecure"]
    return [
        "--ca-file", f"{run_dir}/ca.crt",
        "--cert-file", f"{run_dir}/transport.crt",
        "--key-file", f"{run_dir}/transport.key",
        "--bootstrap-token-file", f"{run_dir}/bootstrap-token",
    ]


def node_labels(vm_name: str, class_name: str, template: bool, extra: Mapping[str, str]) -> dict[str, str]:
    """The labels a VM's node registers with, whatever the provider."""
    labels = {VM_LABEL: vm_name, CLASS_LABEL: class_name}
    if template:
        labels[TEMPLATE_LABEL] = "true"
    labels.update(extra)
    return labels

