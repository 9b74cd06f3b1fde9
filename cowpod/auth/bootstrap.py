"""An agent's side of TLS bootstrapping (like the kubelet's).

On first start a node has a bootstrap token, the cluster CA certificate and
the shared transport certificate, but no identity. It makes its own key
(which never leaves the node), sends a CSR for `system:node:<name>` with the
token, and keeps the certificate it gets back in its state directory as
`<name>.crt` / `<name>.key`. Later starts reuse them while they are valid.

Files are named by node name on purpose: an instant-cloned VM starts from a
copy of its parent's disk, and must not come up as its parent. The child
has a different name, finds no certificate for it, and bootstraps its own.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import pathlib
from dataclasses import replace

from cowpod.auth.config import ConnectionSettings
from cowpod.auth.credentials import connect
from cowpod.auth.flags import settings_from_args
from cowpod.clock import Clock
from cowpod.pki import (
    CertKey,
    PKIError,
    key_to_pem,
    make_csr,
    new_key,
    node_subject,
    save_cert_key,
    subject_of,
    verify_issued_by,
)
from cowpod.v1 import auth_pb2, auth_pb2_grpc

log = logging.getLogger(__name__)

# Renew (re-bootstrap) when less than this is left.
RENEW_BEFORE_SECONDS = 7 * 86400


def load_node_certificate(
    cert_dir: pathlib.Path, node_name: str, ca_pem: bytes, *, now: float
) -> CertKey | None:
    """The stored certificate for `node_name` if it is ours, for this node, and valid for a while."""
    crt, key = cert_dir / f"{node_name}.crt", cert_dir / f"{node_name}.key"
    if not (crt.exists() and key.exists()):
        return None
    pair = CertKey(crt.read_bytes(), key.read_bytes())
    try:
        verify_issued_by(ca_pem, pair.cert_pem, now=now + RENEW_BEFORE_SECONDS)
    except PKIError as err:
        log.info("stored certificate for %s not usable (%s); bootstrapping again", node_name, err)
        return None
    if subject_of(pair.cert_pem) != node_subject(node_name):
        return None
    return pair


async def request_node_certificate(
    transport: ConnectionSettings, *, token: str, node_name: str, timeout: float = 30.0
) -> CertKey:
    """Exchange a bootstrap token for a certificate (a new key is made here)."""
    key_pem = key_to_pem(new_key())
    csr = make_csr(key_pem, node_subject(node_name))
    async with connect(transport) as client:
        stub = auth_pb2_grpc.BootstrapServiceStub(client.channel)
        req = auth_pb2.ExchangeTokenRequest(token=token, node_name=node_name, csr_pem=csr)
        resp = await client.call(stub.ExchangeToken, req, timeout=timeout)
    return CertKey(resp.certificate_pem, key_pem)


async def ensure_node_certificate(
    transport: ConnectionSettings,
    *,
    node_name: str,
    cert_dir: pathlib.Path,
    token: str,
    clock: Clock,
) -> CertKey:
    """A valid node certificate: the stored one, or a new one via the bootstrap token.

    `transport` has the cluster CA and the transport certificate; the result
    replaces its client certificate for everything the agent does next.
    """
    assert transport.ca_pem is not None, "bootstrapping needs the cluster CA"
    pair = load_node_certificate(cert_dir, node_name, transport.ca_pem, now=clock.now())
    if pair is not None:
        return pair
    if not token:
        raise PKIError(
            f"node {node_name} has no certificate in {cert_dir} and no bootstrap token "
            "(create one with `cowpod token create --role bootstrap`)"
        )
    pair = await request_node_certificate(transport, token=token, node_name=node_name)
    save_cert_key(cert_dir, node_name, pair)
    log.info("node %s joined: certificate stored in %s", node_name, cert_dir)
    return pair


def node_settings(transport: ConnectionSettings, pair: CertKey) -> ConnectionSettings:
    """The transport settings with the node's own certificate instead of the shared one."""
    return replace(transport, client_cert_pem=pair.cert_pem, client_key_pem=pair.key_pem, token="")


async def agent_connection(
    controller: str,
    args: argparse.Namespace,
    *,
    node_name: str,
    clock: Clock,
) -> ConnectionSettings:
    """What `cowpod-agent` connects with: plaintext under --insecure, else TLS as
    `system:node:<name>`, bootstrapping the certificate on first start."""
    transport = settings_from_args(controller, args)
    if transport.insecure:
        return transport
    token = ""
    if args.bootstrap_token_file:
        try:
            text = await asyncio.to_thread(pathlib.Path(args.bootstrap_token_file).read_text)
            token = text.strip()
        except OSError as err:
            log.warning("bootstrap token file %s unreadable: %s", args.bootstrap_token_file, err.strerror)
    pair = await ensure_node_certificate(
        transport, node_name=node_name, cert_dir=pathlib.Path(args.cert_dir), token=token, clock=clock
    )
    return node_settings(transport, pair)
