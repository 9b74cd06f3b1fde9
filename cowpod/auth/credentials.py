"""gRPC credentials from `ConnectionSettings`, and `connect`, the one way
every cowpod process and the CLI open a `Client`.

The controller's certificate always carries the name `cowpod-controller`,
and clients verify *that* name (unless the config says otherwise), so the
same certificate serves 127.0.0.1, a LAN address and the unix socket the
VMs use.
"""

from __future__ import annotations

import pathlib
from typing import Any

import grpc

from cowpod.auth.config import ConfigError, ConnectionSettings, UserConfig
from cowpod.client import Client
from cowpod.clock import Clock
from cowpod.pki import CONTROLLER_SERVER_NAME, ClusterPKI


def channel_credentials(
    settings: ConnectionSettings,
) -> tuple[grpc.ChannelCredentials | None, grpc.CallCredentials | None, list[tuple[str, Any]]]:
    """(channel credentials, call credentials, channel options); all None/empty when insecure."""
    if settings.insecure:
        if settings.token:
            # gRPC refuses call credentials on a plaintext channel, and sending a
            # secret in clear text would be wrong anyway.
            raise ConfigError("a bearer token needs TLS; this cluster is marked insecure")
        return None, None, []
    if settings.ca_pem is None:
        raise ConfigError("TLS needs the cluster's CA certificate (certificate-authority)")
    creds = grpc.ssl_channel_credentials(
        root_certificates=settings.ca_pem,
        private_key=settings.client_key_pem,
        certificate_chain=settings.client_cert_pem,
    )
    call = grpc.access_token_call_credentials(settings.token) if settings.token else None
    name = settings.tls_server_name or CONTROLLER_SERVER_NAME
    return creds, call, [("grpc.ssl_target_name_override", name)]


def connect(
    config: UserConfig | ConnectionSettings,
    *,
    context: str | None = None,
    clock: Clock | None = None,
    options: list[tuple[str, Any]] | None = None,
) -> Client:
    """A `Client` for the config's current (or the named) context."""
    settings = config if isinstance(config, ConnectionSettings) else config.settings(context)
    creds, call, opts = channel_credentials(settings)
    return Client(
        settings.server,
        credentials=creds,
        call_credentials=call,
        options=[*opts, *(options or [])],
        clock=clock,
    )


def settings_from_pki(server: str, pki_dir: pathlib.Path, identity: str) -> ConnectionSettings:
    """Connect as one of a cluster PKI's own identities (`admin`, `controller`, `scheduler`,
    `transport`); plaintext when the directory holds no PKI (an insecure cluster)."""
    pki = ClusterPKI(pki_dir)
    if not (pki.ca_cert.exists() and pki.cert(identity).exists()):
        return ConnectionSettings(server=server, insecure=True)
    pair = pki.load(identity)
    return ConnectionSettings(
        server=server, user=identity, ca_pem=pki.ca_cert.read_bytes(), tls_server_name=CONTROLLER_SERVER_NAME,
        client_cert_pem=pair.cert_pem, client_key_pem=pair.key_pem,
    )
