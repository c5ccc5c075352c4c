"""Certificates: a CA, a serving certificate that verifies against it, rotation timing."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from webhook.tls.certs import (
    ca_bundle,
    issue,
    needs_rotation,
    new_ca,
    new_serving_cert,
    write_certificates,
)


def test_serving_certificate_has_the_names_and_verifies(tmp_path: Path) -> None:
    ca = write_certificates(
        tmp_path, ["webhook.imagestreams-system.svc", "localhost"], ["127.0.0.1"]
    )
    cert = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "webhook.imagestreams-system.svc",
        "localhost",
    ]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    cert.verify_directly_issued_by(ca.cert)
    # The standard library accepts the pair and the CA, as gunicorn will.
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    assert client.get_ca_certs()[0]["subject"]
    assert (tmp_path / "tls.key").stat().st_mode & 0o077 == 0


def test_existing_ca_is_reused(tmp_path: Path) -> None:
    first = write_certificates(tmp_path, ["a"])
    second = write_certificates(tmp_path, ["a"])
    assert first.cert == second.cert
    assert base64.b64decode(ca_bundle(first)) == (tmp_path / "ca.crt").read_bytes()


def test_rotation_is_due_thirty_days_before_expiry() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    ca = new_ca(now=now)
    cert = new_serving_cert(ca, ["a"], now=now, validity=dt.timedelta(days=90)).cert
    assert not needs_rotation(cert, now=now + dt.timedelta(days=59))
    assert needs_rotation(cert, now=now + dt.timedelta(days=61))


def test_issue_makes_a_client_certificate_with_an_organization(tmp_path: Path) -> None:
    ca = issue(None, "test-ca", is_ca=True)
    admin = issue(ca, "admin", organization="system:masters", client=True)
    cert = admin.cert
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "admin"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "system:masters"
    )
    assert cert.issuer == ca.cert.subject
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(ca.cert)
    # The standard library accepts the pair, as a client presenting it would.
    (tmp_path / "admin.crt").write_bytes(admin.cert_pem)
    (tmp_path / "admin.key").write_bytes(admin.key_pem)
    ssl.create_default_context().load_cert_chain(tmp_path / "admin.crt", tmp_path / "admin.key")


def test_issue_makes_a_self_signed_ca_that_signs_only_leaves() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    ca = issue(None, "test-ca", is_ca=True, now=now).cert
    assert ca.issuer == ca.subject
    ca.verify_directly_issued_by(ca)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert (constraints.value.ca, constraints.value.path_length) == (True, 0)
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert ca.not_valid_after_utc == now + dt.timedelta(days=3650)
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    with pytest.raises(x509.ExtensionNotFound):
        ca.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
