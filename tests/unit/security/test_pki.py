"""The cluster CA: what it issues, what it refuses, and the files `cowpod up` keeps."""

from __future__ import annotations

import pathlib
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from cowpod.pki import (
    CertificateAuthority,
    ClusterPKI,
    PKIError,
    Subject,
    key_to_pem,
    make_csr,
    new_key,
    node_subject,
    subject_of,
    verify_issued_by,
)

NOW = 1_700_000_000.0
DAY = 86400.0


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("test-ca", now=NOW)


def test_issued_certificate_carries_identity_and_verifies(ca: CertificateAuthority) -> None:
    pair = ca.issue(Subject("alice", ("team-a", "team-b")), now=NOW)
    assert subject_of(pair.cert_pem) == Subject("alice", ("team-a", "team-b"))
    verify_issued_by(ca.cert_pem, pair.cert_pem, now=NOW)


def test_other_ca_certificate_is_rejected(ca: CertificateAuthority) -> None:
    other = CertificateAuthority.create("other", now=NOW)
    pair = other.issue(Subject("mallory", ("system:masters",)), now=NOW)
    with pytest.raises(PKIError, match="not issued by the cluster CA"):
        verify_issued_by(ca.cert_pem, pair.cert_pem, now=NOW)


def test_expired_certificate_is_rejected(ca: CertificateAuthority) -> None:
    pair = ca.issue(Subject("bob"), now=NOW, days=1)
    verify_issued_by(ca.cert_pem, pair.cert_pem, now=NOW + DAY / 2)
    with pytest.raises(PKIError, match="not valid now"):
        verify_issued_by(ca.cert_pem, pair.cert_pem, now=NOW + 2 * DAY)


def test_server_certificate_has_names_and_usage(ca: CertificateAuthority) -> None:
    pair = ca.issue(
        Subject("srv"), now=NOW, server=True, dns_names=["cowpod-controller"], ip_addresses=["127.0.0.1"]
    )
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["cowpod-controller"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku


def test_leaf_never_outlives_ca() -> None:
    short = CertificateAuthority.create("short", now=NOW, days=10)
    pair = short.issue(Subject("x"), now=NOW, days=365)
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    assert cert.not_valid_after_utc <= short.certificate.not_valid_after_utc


def test_csr_signed_for_the_subject_it_asks(ca: CertificateAuthority) -> None:
    key = key_to_pem(new_key())
    csr = make_csr(key, node_subject("n1"))
    cert = ca.sign_csr(csr, subject=node_subject("n1"), now=NOW)
    assert subject_of(cert) == Subject("system:node:n1", ("system:nodes",))


def test_csr_for_another_identity_is_refused(ca: CertificateAuthority) -> None:
    key = key_to_pem(new_key())
    csr = make_csr(key, Subject("system:node:n2", ("system:masters",)))
    with pytest.raises(PKIError, match="expected CN='system:node:n1'"):
        ca.sign_csr(csr, subject=node_subject("n1"), now=NOW)


BAD_PEM = b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"


@pytest.mark.parametrize("junk", [b"", b"hello", BAD_PEM])
def test_malformed_csr_is_a_pki_error(ca: CertificateAuthority, junk: bytes) -> None:
    with pytest.raises(PKIError):
        ca.sign_csr(junk, subject=node_subject("n1"), now=NOW)


def test_cluster_pki_files_are_created_once_with_private_keys(tmp_path: pathlib.Path) -> None:
    pki = ClusterPKI.of(tmp_path)
    pki.ensure(now=NOW, hosts=["10.0.0.5", "ctl.example"])
    first_ca = pki.ca_cert.read_bytes()
    for name in ("controller", "admin", "scheduler"):
        verify_issued_by(first_ca, pki.cert(name).read_bytes(), now=NOW)
        assert stat.S_IMODE(pki.key(name).stat().st_mode) == 0o600
    assert stat.S_IMODE(pki.ca_key.stat().st_mode) == 0o600
    assert subject_of(pki.cert("admin").read_bytes()).organizations == ("system:masters",)
    ctl = x509.load_pem_x509_certificate(pki.cert("controller").read_bytes())
    san = ctl.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "cowpod-controller", "ctl.example"} <= set(san.get_values_for_type(x509.DNSName))
    assert {"127.0.0.1", "10.0.0.5"} <= {str(i) for i in san.get_values_for_type(x509.IPAddress)}
    pki.ensure(now=NOW + 10)
    assert pki.ca_cert.read_bytes() == first_ca


def test_missing_ca_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(PKIError, match="no cluster CA"):
        ClusterPKI.of(tmp_path).load_ca()
