"""An agent's side of TLS bootstrapping (like the kubelet's).

On first start a node has a bootstrap token, the cluster CA certificate and
the shared transport certificate, but no identity. It makes its own key
(which never leaves the node), sends a CSR for `system:node:<name>` with the
token, and keeps the certificate it gets back in its state directory as
`<name>.crt` / `<name>.key`. Later starts reuse them while they are valid.

The node certificate is for calling the controller only (client use). The
agent's logs/exec server presents a second certificate, for server use only
and named after the node, which the agent asks for with its node
certificate (`ensure_serving_certificate`) and keeps in `<cert dir>/serving/`.
Kubernetes separates kubelet client and serving certificates the same way: a
bootstrap token must never buy a certificate that can serve as the controller.

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
    extended_key_usages,
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


# Serving certificates live in a directory of their own: a name suffix could collide
# with another node's name (node names may contain dots and dashes).
SERVING_DIR = "serving"


def load_node_certificate(
    cert_dir: pathlib.Path, node_name: str, ca_pem: bytes, *, now: float, usage: str = "client"
) -> CertKey | None:
    """The stored certificate for `node_name` if it is ours, for this node, for `usage`
    ('client' or 'server'), and valid for a while."""
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
    if usage not in extended_key_usages(pair.cert_pem):
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


async def request_serving_certificate(node: ConnectionSettings, *, node_name: str,
                                      timeout: float = 30.0) -> CertKey:
    """Ask, as the node, for the certificate its agent serves with (a new key is made here)."""
    key_pem = key_to_pem(new_key())
    csr = make_csr(key_pem, node_subject(node_name))
    async with connect(node) as client:
        stub = auth_pb2_grpc.BootstrapServiceStub(client.channel)
        req = auth_pb2.ServingCertificateRequest(csr_pem=csr)
        resp = await client.call(stub.SignServingCertificate, req, timeout=timeout)
    return CertKey(resp.certificate_pem, key_pem)


async def ensure_serving_certificate(
    node: ConnectionSettings, *, node_name: str, cert_dir: pathlib.Path, clock: Clock
) -> CertKey:
    """A valid serving certificate for the agent: the stored one, or a new one signed for
    the node `node` (settings with its client certificate) authenticates as."""
    assert node.ca_pem is not None, "a serving certificate needs the cluster CA"
    directory = cert_dir / SERVING_DIR
    pair = load_node_certificate(directory, node_name, node.ca_pem, now=clock.now(), usage="server")
    if pair is not None:
        return pair
    pair = await request_serving_certificate(node, node_name=node_name)
    save_cert_key(directory, node_name, pair)
    log.info("node %s: serving certificate stored in %s", node_name, directory)
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


async def agent_serving_certificate(
    connection: ConnectionSettings, args: argparse.Namespace, *, node_name: str, clock: Clock
) -> CertKey | None:
    """What `cowpod-agent` serves logs/exec with: None under --insecure (plaintext)."""
    if connection.insecure:
        return None
    return await ensure_serving_certificate(
        connection, node_name=node_name, cert_dir=pathlib.Path(args.cert_dir), clock=clock
    )
