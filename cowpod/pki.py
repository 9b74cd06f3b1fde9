"""The cluster's certificate authority and the certificates it issues.

Every cowpod component speaks gRPC over TLS and checks its peer against one
cluster CA, created by `cowpod up` in the data directory (`<data>/pki/`). A
certificate's subject *is* the identity the controller authorizes, as in
Kubernetes: the common name is the user (`admin`, `system:scheduler`,
`system:node:<name>`) and the organizations are its groups
(`system:masters`, `system:nodes`).

Keys are ECDSA P-256: small, fast to generate (an agent makes one at boot),
and accepted by every gRPC TLS stack. Time comes in as epoch seconds (from a
`Clock`) so tests can issue certificates that are already expired.

Agents never see the CA key: they send a certificate signing request with a
bootstrap token and get back a certificate for `system:node:<their name>`
(see `controller/auth/bootstrap.py`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import pathlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cowpod.safefile import write_atomic

# The name every controller certificate carries, so clients can verify the
# controller whatever address (IP, unix socket, NAT) they reach it by.
CONTROLLER_SERVER_NAME = "cowpod-controller"

NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
MASTERS_GROUP = "system:masters"
SCHEDULER_USER = "system:scheduler"
CONTROLLER_USER = "system:controller"
CONTROLLERS_GROUP = "system:controllers"
# The shared, deliberately non-secret client certificate that gets a caller
# through the TLS handshake (gRPC's Python server can only require a client
# certificate or not ask for one); it grants nothing, a bearer token must follow.
ANONYMOUS_USER = "system:anonymous"
UNAUTHENTICATED_GROUP = "system:unauthenticated"

CA_DAYS = 3650
LEAF_DAYS = 365
# Clocks of different hosts disagree a little; a certificate valid "from now"
# would be rejected by a peer whose clock is a few seconds behind.
_BACKDATE = dt.timedelta(minutes=5)


class PKIError(Exception):
    """A certificate, key or CSR is malformed, or does not match what was asked."""


@dataclass(frozen=True)
class Subject:
    common_name: str
    organizations: tuple[str, ...] = ()


@dataclass(frozen=True)
class CertKey:
    """A PEM certificate and its PEM private key (PKCS#8, unencrypted)."""

    cert_pem: bytes
    key_pem: bytes


def _when(now: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(now, dt.UTC)


def _name(subject: Subject) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in subject.organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, subject.common_name))
    return x509.Name(attrs)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise PKIError(f"not a PEM private key: {err}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError("private key is not an EC key")
    return key


def load_certificate(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as err:
        raise PKIError(f"not a PEM certificate: {err}") from None


def subject_of(cert: x509.Certificate | bytes) -> Subject:
    """The identity a certificate names: CN is the user, O are the groups."""
    c = load_certificate(cert) if isinstance(cert, bytes) else cert
    cns = c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = c.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return Subject(
        common_name=str(cns[0].value) if cns else "",
        organizations=tuple(str(o.value) for o in orgs),
    )


@dataclass(frozen=True)
class CertificateAuthority:
    cert_pem: bytes
    key_pem: bytes

    @staticmethod
    def create(name: str, *, now: float, days: int = CA_DAYS) -> CertificateAuthority:
        key = new_key()
        subject = _name(Subject(name))
        start = _when(now) - _BACKDATE
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return CertificateAuthority(cert.public_bytes(serialization.Encoding.PEM), key_to_pem(key))

    @property
    def certificate(self) -> x509.Certificate:
        return load_certificate(self.cert_pem)

    def _sign(
        self,
        public_key: ec.EllipticCurvePublicKey,
        subject: Subject,
        *,
        now: float,
        days: float,
        client: bool,
        server: bool,
        dns_names: Sequence[str],
        ip_addresses: Sequence[str],
    ) -> bytes:
        if not subject.common_name:
            raise PKIError("a certificate needs a common name")
        ca_cert = self.certificate
        ca_key = _load_key(self.key_pem)
        start = _when(now) - _BACKDATE
        end = min(_when(now) + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
        usages = []
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if not usages:
            raise PKIError("a certificate must be for client or server use")
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(ca_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        subject: Subject,
        *,
        now: float,
        days: float = LEAF_DAYS,
        client: bool = True,
        server: bool = False,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
    ) -> CertKey:
        """A new key and a certificate for it, signed by this CA."""
        key = new_key()
        cert = self._sign(
            key.public_key(), subject, now=now, days=days, client=client, server=server,
            dns_names=dns_names, ip_addresses=ip_addresses,
        )
        return CertKey(cert, key_to_pem(key))

    def sign_csr(
        self,
        csr_pem: bytes,
        *,
        subject: Subject,
        now: float,
        days: float = LEAF_DAYS,
        client: bool = True,
        server: bool = False,
        dns_names: Sequence[str] = (),
    ) -> bytes:
        """Sign a CSR's public key for `subject`, which the *caller* decides.

        The CSR's own subject must equal `subject`: a requester cannot ask
        for an identity other than the one its credential entitles it to,
        and an accidental mismatch is reported rather than silently fixed.
        """
        csr = load_csr(csr_pem)
        asked = subject_of_csr(csr)
        if asked != subject:
            raise PKIError(
                f"CSR asks for CN={asked.common_name!r} O={list(asked.organizations)}, "
                f"expected CN={subject.common_name!r} O={list(subject.organizations)}"
            )
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise PKIError("CSR public key must be an EC key")
        return self._sign(
            public_key, subject, now=now, days=days, client=client, server=server,
            dns_names=dns_names, ip_addresses=(),
        )


def make_csr(key_pem: bytes, subject: Subject) -> bytes:
    key = _load_key(key_pem)
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name(subject)).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def load_csr(pem: bytes) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError as err:
        raise PKIError(f"not a PEM certificate signing request: {err}") from None
    if not csr.is_signature_valid:
        raise PKIError("CSR signature is invalid")
    return csr


def subject_of_csr(csr: x509.CertificateSigningRequest) -> Subject:
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return Subject(str(cns[0].value) if cns else "", tuple(str(o.value) for o in orgs))


def verify_issued_by(ca_cert_pem: bytes, cert_pem: bytes, *, now: float) -> None:
    """Raise `PKIError` unless `cert` is signed by the CA and valid at `now`.

    TLS does this during the handshake; this is for checks outside one (a
    loaded certificate still current? a test asserting who signed what).
    """
    ca = load_certificate(ca_cert_pem)
    cert = load_certificate(cert_pem)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as err:
        raise PKIError(f"certificate not issued by the cluster CA: {err}") from None
    when = _when(now)
    if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
        raise PKIError(
            f"certificate for {subject_of(cert).common_name!r} is not valid now "
            f"(valid {cert.not_valid_before_utc:%Y-%m-%d %H:%M} "
            f"to {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)"
        )


def node_subject(node_name: str) -> Subject:
    return Subject(NODE_USER_PREFIX + node_name, (NODES_GROUP,))


# Names no node may take. An agent's serving certificate is named after its node, and
# clients find the controller by name: a node called `cowpod-controller` (or `localhost`,
# or an address) would hold a certificate that passes for the controller's.
RESERVED_NODE_NAMES = frozenset({CONTROLLER_SERVER_NAME, "localhost"})


def node_name_conflict(name: str, controller_names: Collection[str] = ()) -> str | None:
    """Why `name` may not be a node's name (it is the controller's or an address), or None.

    `controller_names` are the names in the controller's own serving certificate
    (`dns_names_of`), so names an operator added with `--host` are reserved too."""
    if name in RESERVED_NODE_NAMES or name in controller_names:
        return f"{name!r} is a name of the controller, reserved"
    if name.endswith(".localhost") or name.endswith("." + CONTROLLER_SERVER_NAME):
        return f"{name!r} is under a name reserved for the controller"
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return None
    return f"{name!r} is an IP address, not a node name"


def dns_names_of(cert: x509.Certificate | bytes) -> list[str]:
    """The DNS names a certificate's subjectAltName lists (none: an empty list)."""
    c = load_certificate(cert) if isinstance(cert, bytes) else cert
    try:
        san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n) for n in san.get_values_for_type(x509.DNSName)]


def extended_key_usages(cert: x509.Certificate | bytes) -> frozenset[str]:
    """'client' and/or 'server': what TLS will accept the certificate for."""
    c = load_certificate(cert) if isinstance(cert, bytes) else cert
    try:
        eku = c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return frozenset({"client", "server"})
    names = {ExtendedKeyUsageOID.CLIENT_AUTH: "client", ExtendedKeyUsageOID.SERVER_AUTH: "server"}
    return frozenset(names[u] for u in eku if u in names)


# --- the files of a cluster ------------------------------------------------------------------------


def _write_private(path: pathlib.Path, data: bytes) -> None:
    """Write a secret readable by its owner only, atomically, following no link
    (the join bundle's directory is writable by every VM: cowpod/safefile.py)."""
    write_atomic(path, data, 0o600)


def _write_public(path: pathlib.Path, data: bytes) -> None:
    write_atomic(path, data, 0o644)


def save_cert_key(directory: pathlib.Path, name: str, pair: CertKey) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    _write_private(directory / f"{name}.key", pair.key_pem)
    _write_public(directory / f"{name}.crt", pair.cert_pem)


@dataclass(frozen=True)
class ClusterPKI:
    """The PKI files of one cluster, under `<data dir>/pki/`.

        ca.crt ca.key               the cluster CA (the key never leaves this directory)
        controller.crt/.key         serving certificate + the controller's own client identity
        admin.crt/.key              CN=admin O=system:masters, for the CLI
        scheduler.crt/.key          CN=system:scheduler
        transport.crt/.key          CN=system:anonymous: not secret, grants nothing; lets a
                                    token holder or a joining agent complete the handshake
        etcd/                       etcd's own CA and certificates (`EtcdPKI`)
    """

    directory: pathlib.Path

    @staticmethod
    def of(data_dir: pathlib.Path) -> ClusterPKI:
        return ClusterPKI(data_dir / "pki")

    @property
    def ca_cert(self) -> pathlib.Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> pathlib.Path:
        return self.directory / "ca.key"

    def cert(self, name: str) -> pathlib.Path:
        return self.directory / f"{name}.crt"

    def key(self, name: str) -> pathlib.Path:
        return self.directory / f"{name}.key"

    def load_ca(self) -> CertificateAuthority:
        try:
            return CertificateAuthority(self.ca_cert.read_bytes(), self.ca_key.read_bytes())
        except FileNotFoundError as err:
            raise PKIError(f"no cluster CA at {self.directory} ({err.filename} missing)") from None

    def load(self, name: str) -> CertKey:
        return CertKey(self.cert(name).read_bytes(), self.key(name).read_bytes())

    @property
    def etcd(self) -> EtcdPKI:
        return EtcdPKI(self.directory / "etcd")

    def ensure(self, *, now: float, hosts: Sequence[str] = (), cluster_name: str = "cowpod") -> None:
        """Create the CA and the standard certificates that are missing.

        Idempotent: an existing CA is kept (re-creating it would lock out
        every agent that already joined). `hosts` are extra names or IPs the
        controller is reached by; loopback and `cowpod-controller` are
        always in its certificate.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        if self.ca_cert.exists() and self.ca_key.exists():
            ca = self.load_ca()
        else:
            ca = CertificateAuthority.create(f"{cluster_name}-ca", now=now)
            _write_private(self.ca_key, ca.key_pem)
            _write_public(self.ca_cert, ca.cert_pem)
        dns, ips = split_hosts(["localhost", CONTROLLER_SERVER_NAME, "127.0.0.1", "::1", *hosts])
        wanted = {
            "controller": (Subject(CONTROLLER_USER, (CONTROLLERS_GROUP,)), True),
            "admin": (Subject("admin", (MASTERS_GROUP,)), False),
            "scheduler": (Subject(SCHEDULER_USER), False),
            "transport": (Subject(ANONYMOUS_USER, (UNAUTHENTICATED_GROUP,)), False),
        }
        for name, (subject, server) in wanted.items():
            if self.cert(name).exists() and self.key(name).exists():
                continue
            pair = ca.issue(
                subject, now=now, server=server,
                dns_names=dns if server else (), ip_addresses=ips if server else (),
            )
            save_cert_key(self.directory, name, pair)


# --- etcd's own PKI ---------------------------------------------------------------------------------

# The name every etcd member certificate carries, so the controller verifies its members
# whatever address it reaches them by (as clients do with `cowpod-controller`).
ETCD_SERVER_NAME = "cowpod-etcd"


@dataclass(frozen=True)
class TLSFiles:
    """A CA certificate to verify the peer with, and our own certificate and key."""

    ca: pathlib.Path
    cert: pathlib.Path
    key: pathlib.Path


@dataclass(frozen=True)
class EtcdPKI:
    """etcd's certificates, under `<pki>/etcd/`, from a CA of their own.

        ca.crt ca.key             the etcd CA: signs nothing else
        member.crt/.key           each member's serving and peer certificate (client + server,
                                  names cowpod-etcd, localhost, loopback and the hosts given)
        controller.crt/.key       the controller's etcd client certificate (client only)

    Why not the cluster CA: etcd with `--client-cert-auth` lets in *any* certificate
    its trusted CA signed, and the cluster CA signs node certificates and the public
    transport certificate. Kubernetes (kubeadm) keeps an etcd CA apart for this reason.
    """

    directory: pathlib.Path

    @property
    def ca_cert(self) -> pathlib.Path:
        return self.directory / "ca.crt"

    def files(self, name: str) -> TLSFiles:
        return TLSFiles(self.ca_cert, self.directory / f"{name}.crt", self.directory / f"{name}.key")

    @property
    def member(self) -> TLSFiles:
        return self.files("member")

    @property
    def controller(self) -> TLSFiles:
        return self.files("controller")

    def exists(self) -> bool:
        return all(f.exists() for f in (self.ca_cert, self.member.cert, self.controller.cert))

    def ensure(self, *, now: float, hosts: Sequence[str] = ()) -> None:
        """Create the etcd CA and the member and controller certificates that are missing."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        ca_key = self.directory / "ca.key"
        if self.ca_cert.exists() and ca_key.exists():
            ca = CertificateAuthority(self.ca_cert.read_bytes(), ca_key.read_bytes())
        else:
            ca = CertificateAuthority.create("cowpod-etcd-ca", now=now)
            _write_private(ca_key, ca.key_pem)
            _write_public(self.ca_cert, ca.cert_pem)
        dns, ips = split_hosts(["localhost", ETCD_SERVER_NAME, "127.0.0.1", "::1", *hosts])
        if not self.member.cert.exists() or not self.member.key.exists():
            pair = ca.issue(Subject("cowpod-etcd-member"), now=now, client=True, server=True,
                            dns_names=dns, ip_addresses=ips)
            save_cert_key(self.directory, "member", pair)
        if not self.controller.cert.exists() or not self.controller.key.exists():
            save_cert_key(self.directory, "controller", ca.issue(Subject(CONTROLLER_USER), now=now))


def split_hosts(hosts: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split host names from IP addresses (deduplicated, order kept)."""
    dns: list[str] = []
    ips: list[str] = []
    for h in hosts:
        try:
            ip = str(ipaddress.ip_address(h))
        except ValueError:
            if h and h not in dns:
                dns.append(h)
            continue
        if ip not in ips:
            ips.append(ip)
    return dns, ips


def write_join_bundle(pki: ClusterPKI, directory: pathlib.Path) -> None:
    """What a joining agent needs and may see: the CA certificate and the transport pair.

    Written into the directory VMs mount (`/run/cowpod/`); never the CA key."""
    directory.mkdir(parents=True, exist_ok=True)
    _write_public(directory / "ca.crt", pki.ca_cert.read_bytes())
    _write_public(directory / "transport.crt", pki.cert("transport").read_bytes())
    # Readable by the agent whatever its uid: this key is public by design.
    _write_public(directory / "transport.key", pki.key("transport").read_bytes())
