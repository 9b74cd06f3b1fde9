"""The TLS flags every cowpod process takes, and the settings they make.

    parser = argparse.ArgumentParser()
    add_tls_arguments(parser)
    args = parser.parse_args()
    client = connect(settings_from_args(args.controller, args))

    --ca-file PATH          the cluster CA certificate (verifies the controller)
    --cert-file / --key-file   this process's client certificate and key
    --token-file PATH       a bearer token (used with --cert-file/--key-file being the
                            cluster's transport certificate)
    --tls-server-name NAME  the name to verify in the controller's certificate
                            (default cowpod-controller)
    --insecure              plaintext, for a controller started with --insecure

`COWPOD_CA_FILE`, `COWPOD_CERT_FILE`, `COWPOD_KEY_FILE`, `COWPOD_TOKEN_FILE` and
`COWPOD_INSECURE=1` give defaults, so a supervisor can pass credentials without flags.
"""

from __future__ import annotations

import argparse
import os
import pathlib
from collections.abc import Mapping

from cowpod.auth.config import ConfigError, ConnectionSettings

# Where an agent keeps its node key and certificate. VM providers keep this
# directory off the VM's disk (the docker provider mounts a tmpfs there), so a
# snapshot of the disk never holds the key.
DEFAULT_CERT_DIR = "/var/lib/cowpod/pki"


def add_tls_arguments(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    env = os.environ if environ is None else environ
    g = parser.add_argument_group("TLS and identity")
    g.add_argument("--ca-file", default=env.get("COWPOD_CA_FILE", ""), help="cluster CA certificate (PEM)")
    g.add_argument("--cert-file", default=env.get("COWPOD_CERT_FILE", ""), help="client certificate (PEM)")
    g.add_argument("--key-file", default=env.get("COWPOD_KEY_FILE", ""), help="client private key (PEM)")
    g.add_argument("--token-file", default=env.get("COWPOD_TOKEN_FILE", ""), help="bearer token file")
    g.add_argument("--tls-server-name", default="", help="name in the controller's certificate")
    g.add_argument(
        "--insecure", action="store_true", default=env.get("COWPOD_INSECURE") == "1",
        help="plaintext gRPC, only for a controller started with --insecure (env COWPOD_INSECURE=1)",
    )


def _read(flag: str, path: str) -> bytes | None:
    if not path:
        return None
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(f"{flag} {path}: {err.strerror}") from None


def settings_from_args(address: str, args: argparse.Namespace) -> ConnectionSettings:
    if args.insecure:
        return ConnectionSettings(server=address, insecure=True)
    ca = _read("--ca-file", args.ca_file)
    if ca is None:
        raise ConfigError("--ca-file is required (the cluster CA; or --insecure for an insecure controller)")
    cert = _read("--cert-file", args.cert_file)
    key = _read("--key-file", args.key_file)
    if (cert is None) != (key is None):
        raise ConfigError("--cert-file and --key-file go together")
    token_raw = _read("--token-file", args.token_file)
    return ConnectionSettings(
        server=address,
        ca_pem=ca,
        client_cert_pem=cert,
        client_key_pem=key,
        token=token_raw.decode().strip() if token_raw else "",
        tls_server_name=args.tls_server_name,
    )


def add_node_arguments(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    """The agent's extra flags: how it gets (and where it keeps) its node certificate."""
    env = os.environ if environ is None else environ
    g = parser.add_argument_group("node identity (TLS bootstrapping)")
    g.add_argument(
        "--bootstrap-token-file", default=env.get("COWPOD_BOOTSTRAP_TOKEN_FILE", ""),
        help="file with a bootstrap token, exchanged for a node certificate on first start",
    )
    g.add_argument(
        "--cert-dir", default=env.get("COWPOD_CERT_DIR", DEFAULT_CERT_DIR),
        help="where the node keeps its key and certificate (<node>.key, <node>.crt)",
    )
