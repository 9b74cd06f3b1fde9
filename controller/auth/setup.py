"""Everything the controller's server needs for security, in one object.

    security = ServerSecurity.create(pki_dir=..., insecure=False, limits=Limits(), store=store, clock=clock)
    server = grpc.aio.server(interceptors=security.interceptors(), options=[*security.server_options()])
    for descriptor, servicer in security.servicers(): ...      # tokens, bootstrap, who-am-I
    port = security.add_port(server, "127.0.0.1:7070")         # TLS, client certificate required
    client = connect(security.self_client_settings(address))   # in-process components (VM manager)

Secure mode needs the cluster PKI directory (`cowpod.pki.ClusterPKI`): the
CA (its key signs node certificates) and the controller's certificate.
Insecure mode (`--insecure`) serves plaintext, treats every caller as admin
and keeps only the limits: for old scripts during the transition, never
for a cluster that runs other people's containers.
"""

from __future__ import annotations

import logging
import pathlib
from dataclasses import dataclass
from typing import Any

import grpc

from controller.auth.interceptor import AuthInterceptor
from controller.auth.jointoken import run_rotation
from controller.auth.services import BootstrapServicer, IdentityServicer, TokenServicer
from controller.auth.tokens import DEFAULT_TOKEN_TTL, StoreTokenRepository, TokenManager
from controller.limits import Limits, server_options
from controller.store import Store
from cowpod.api.phases import is_terminal
from cowpod.auth.config import ConnectionSettings
from cowpod.clock import Clock
from cowpod.configrefs import RefKind, references
from cowpod.pki import (
    CONTROLLER_SERVER_NAME,
    CertificateAuthority,
    ClusterPKI,
    PKIError,
    dns_names_of,
    write_join_bundle,
)
from cowpod.v1 import auth_pb2, pod_pb2

log = logging.getLogger(__name__)

SERVICES = (
    auth_pb2.DESCRIPTOR.services_by_name["TokenService"],
    auth_pb2.DESCRIPTOR.services_by_name["BootstrapService"],
    auth_pb2.DESCRIPTOR.services_by_name["IdentityService"],
)


class SecurityConfigError(Exception):
    """The PKI the controller was pointed at is missing or unreadable."""


class ReferenceCheck:
    """Kubernetes' node authorizer for ConfigMaps and Secrets: does a live (not terminal) pod
    bound to `node` in `namespace` reference the object? Read from the stored pods of the
    namespace; a yes is reused for `ttl` seconds (agents re-read what their pods use every
    few seconds), so a node may still read an object that long after its last pod let go."""

    def __init__(self, store: Store, clock: Clock, ttl: float = 10.0) -> None:
        self.store = store
        self.clock = clock
        self.ttl = ttl
        self._granted: dict[tuple[str, str, str, str], float] = {}

    async def __call__(self, node: str, namespace: str, kind: str, name: str) -> bool:
        key = (node, namespace, kind, name)
        now = self.clock.monotonic()
        if self._granted.get(key, 0.0) > now:
            return True
        pods, _ = await self.store.list(f"registry/pods/{namespace}/", pod_pb2.Pod)
        ref = RefKind(kind)
        ok = any(p.spec.node_name == node and not is_terminal(p.status.phase)
                 and references(p, ref, name) for p in pods)
        if ok:
            if len(self._granted) > 100_000:
                self._granted = {k: t for k, t in self._granted.items() if t > now}
            self._granted[key] = now + self.ttl
        return ok


@dataclass
class ServerSecurity:
    tokens: TokenManager
    limits: Limits
    clock: Clock
    store: Store
    pki: ClusterPKI | None
    ca: CertificateAuthority | None
    node_cert_days: float = 365

    @staticmethod
    def create(
        *,
        pki_dir: pathlib.Path | None,
        insecure: bool,
        limits: Limits,
        store: Store,
        clock: Clock,
        node_cert_days: float = 365,
        token_ttl: int = DEFAULT_TOKEN_TTL,
    ) -> ServerSecurity:
        tokens = TokenManager(StoreTokenRepository(store), clock, default_ttl=token_ttl)
        if insecure:
            log.warning("controller runs INSECURE: plaintext gRPC, no authentication, every caller is admin")
            return ServerSecurity(tokens, limits, clock, store, None, None, node_cert_days)
        if pki_dir is None:
            raise SecurityConfigError("no cluster PKI: pass --pki-dir (made by `cowpod up`) or --insecure")
        pki = ClusterPKI(pki_dir)
        try:
            ca = pki.load_ca()
            pki.load("controller")
        except (PKIError, OSError) as err:
            raise SecurityConfigError(f"cluster PKI at {pki_dir} unusable: {err}") from None
        return ServerSecurity(tokens, limits, clock, store, pki, ca, node_cert_days)

    @property
    def secure(self) -> bool:
        return self.pki is not None

    def server_options(self) -> list[tuple[str, Any]]:
        return server_options(self.limits)

    async def _pod_node(self, namespace: str, name: str) -> str:
        pod = await self.store.get(f"registry/pods/{namespace or 'default'}/{name}", pod_pb2.Pod)
        return str(pod.spec.node_name)

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [
            AuthInterceptor(
                tokens=self.tokens if self.secure else None,
                limits=self.limits,
                clock=self.clock,
                pod_node=self._pod_node,
                references=ReferenceCheck(self.store, self.clock),
                insecure=not self.secure,
            )
        ]

    def servicers(self) -> list[tuple[Any, object]]:
        return [
            (SERVICES[0], TokenServicer(self.tokens)),
            (SERVICES[1], BootstrapServicer(self.tokens, self.ca, self.clock, cert_days=self.node_cert_days,
                                            controller_names=self._controller_names())),
            (SERVICES[2], IdentityServicer()),
        ]

    def _controller_names(self) -> list[str]:
        """The names in the controller's serving certificate: no node may take one."""
        if self.pki is None:
            return []
        return dns_names_of(self.pki.load("controller").cert_pem)

    def credentials(self) -> grpc.ServerCredentials | None:
        if self.pki is None or self.ca is None:
            return None
        own = self.pki.load("controller")
        return grpc.ssl_server_credentials(
            [(own.key_pem, own.cert_pem)], root_certificates=self.ca.cert_pem, require_client_auth=True
        )

    def agent_channel_credentials(self) -> grpc.ChannelCredentials | None:
        """For logs/exec proxied to agents: the controller's certificate, the cluster CA."""
        if self.pki is None or self.ca is None:
            return None
        own = self.pki.load("controller")
        return grpc.ssl_channel_credentials(self.ca.cert_pem, own.key_pem, own.cert_pem)

    def add_port(self, server: grpc.aio.Server, address: str) -> int:
        creds = self.credentials()
        if creds is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, creds)

    def join_run_dir(self, data_dir: pathlib.Path | None) -> pathlib.Path | None:
        """Publish the join bundle in `<data_dir>/run` (what VMs mount) when secure;
        returns that directory, where `run_join_tokens` keeps the join token."""
        if self.pki is None or data_dir is None:
            return None
        run_dir = data_dir / "run"
        write_join_bundle(self.pki, run_dir)
        return run_dir

    async def run_join_tokens(self, run_dir: pathlib.Path) -> None:
        await run_rotation(self.tokens, run_dir, self.clock)

    def self_client_settings(self, address: str) -> ConnectionSettings:
        """How components inside the controller process (the VM manager) call its API."""
        if self.pki is None:
            return ConnectionSettings(server=address, insecure=True)
        own = self.pki.load("controller")
        return ConnectionSettings(
            server=address,
            user="system:controller",
            ca_pem=self.pki.ca_cert.read_bytes(),
            tls_server_name=CONTROLLER_SERVER_NAME,
            client_cert_pem=own.cert_pem,
            client_key_pem=own.key_pem,
        )


__all__ = ["SERVICES", "SecurityConfigError", "ServerSecurity"]
