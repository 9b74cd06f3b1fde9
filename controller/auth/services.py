"""TokenService, BootstrapService and IdentityService: thin servicers over
`TokenManager` and the cluster CA. Errors are `cowpod.errors` exceptions;
`controller.rpc` maps them to status codes like every other servicer's."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from controller.auth.identity import ANONYMOUS, Role
from controller.auth.interceptor import current_identity
from controller.auth.tokens import TokenManager
from cowpod.api.validation import is_dns_subdomain
from cowpod.clock import Clock
from cowpod.errors import FailedPrecondition, Invalid, PermissionDenied
from cowpod.pki import (
    CertificateAuthority,
    PKIError,
    Subject,
    load_csr,
    node_name_conflict,
    node_subject,
    subject_of_csr,
)
from cowpod.v1 import auth_pb2, meta_pb2

MAX_CSR_BYTES = 16 * 1024


class TokenServicer:
    def __init__(self, tokens: TokenManager) -> None:
        self.tokens = tokens

    async def Create(self, req: auth_pb2.CreateTokenRequest, ctx: Any) -> auth_pb2.Token:
        return await self.tokens.create(
            role=req.role, ttl_seconds=req.ttl_seconds, single_use=req.single_use,
            node_name=req.node_name, description=req.description,
        )

    async def List(self, req: meta_pb2.ListOptions, ctx: Any) -> auth_pb2.TokenList:
        return auth_pb2.TokenList(items=await self.tokens.list())

    async def Revoke(self, req: auth_pb2.RevokeTokenRequest, ctx: Any) -> auth_pb2.Token:
        if not req.name:
            raise Invalid("name", "required")
        return await self.tokens.revoke(req.name)


class BootstrapServicer:
    """Signs a node's certificates: the client one for `system:node:<name>` in exchange for a
    bootstrap token, then, asked with that certificate, the one its agent serves with.

    The two are kept apart as Kubernetes keeps kubelet client and serving certificates:
    the client certificate cannot serve (no serverAuth), so a bootstrap token never buys
    a certificate a client would take for the controller's; the serving certificate cannot
    call the controller (no clientAuth) and names only its node, which may not be a name of
    the controller (`cowpod.pki.node_name_conflict`).
    """

    def __init__(self, tokens: TokenManager, ca: CertificateAuthority | None, clock: Clock,
                 *, cert_days: float = 365, controller_names: Collection[str] = ()) -> None:
        self.tokens = tokens
        self.ca = ca
        self.clock = clock
        self.cert_days = cert_days
        self.controller_names = frozenset(controller_names)

    def _signer(self) -> CertificateAuthority:
        if self.ca is None:
            raise FailedPrecondition("this controller has no cluster CA (it runs --insecure)")
        return self.ca

    def _check_csr(self, csr_pem: bytes, subject: Subject) -> None:
        if not csr_pem:
            raise Invalid("csrPem", "required")
        if len(csr_pem) > MAX_CSR_BYTES:
            raise Invalid("csrPem", f"must be no more than {MAX_CSR_BYTES} bytes")
        try:
            asked = subject_of_csr(load_csr(csr_pem))
        except PKIError as err:
            raise Invalid("csrPem", str(err)) from None
        if asked != subject:
            raise Invalid(
                "csrPem",
                f"must ask for CN={subject.common_name}, O={subject.organizations[0]} "
                f"(asks for CN={asked.common_name!r}, O={list(asked.organizations)})",
            )

    def _check_name(self, name: str) -> None:
        if not name:
            raise Invalid("nodeName", "required")
        if not is_dns_subdomain(name):
            raise Invalid("nodeName", f"{name[:64]!r} is not a valid node name (RFC 1123 subdomain)")
        conflict = node_name_conflict(name, self.controller_names)
        if conflict is not None:
            raise Invalid("nodeName", conflict)

    async def ExchangeToken(
        self, req: auth_pb2.ExchangeTokenRequest, ctx: Any
    ) -> auth_pb2.ExchangeTokenResponse:
        ca = self._signer()
        name = req.node_name
        self._check_name(name)
        if not req.token:
            raise Invalid("token", "required")
        subject = node_subject(name)
        # Check the CSR before redeeming: a malformed request must not burn a single-use token.
        self._check_csr(req.csr_pem, subject)
        await self.tokens.redeem_bootstrap(req.token, name)
        try:
            cert = ca.sign_csr(
                req.csr_pem, subject=subject, now=self.clock.now(), days=self.cert_days,
                client=True, server=False,
            )
        except PKIError as err:
            raise Invalid("csrPem", str(err)) from None
        return auth_pb2.ExchangeTokenResponse(certificate_pem=cert, ca_certificate_pem=ca.cert_pem)

    async def SignServingCertificate(
        self, req: auth_pb2.ServingCertificateRequest, ctx: Any
    ) -> auth_pb2.ExchangeTokenResponse:
        ca = self._signer()
        ident = current_identity.get()
        if ident is None or ident.role is not Role.NODE or not ident.node_name:
            # The authorizer lets only nodes here; never sign for anyone else.
            raise PermissionDenied("only a node's own certificate may ask for its serving certificate")
        name = ident.node_name
        self._check_name(name)
        subject = node_subject(name)
        self._check_csr(req.csr_pem, subject)
        try:
            cert = ca.sign_csr(
                req.csr_pem, subject=subject, now=self.clock.now(), days=self.cert_days,
                client=False, server=True, dns_names=[name],
            )
        except PKIError as err:
            raise Invalid("csrPem", str(err)) from None
        return auth_pb2.ExchangeTokenResponse(certificate_pem=cert, ca_certificate_pem=ca.cert_pem)


class IdentityServicer:
    async def WhoAmI(self, req: auth_pb2.WhoAmIRequest, ctx: Any) -> auth_pb2.WhoAmIResponse:
        ident = current_identity.get() or ANONYMOUS
        return auth_pb2.WhoAmIResponse(
            user=ident.user, groups=list(ident.groups), role=ident.role.value,
            authenticated_by=ident.via.value, node_name=ident.node_name,
        )
