"""A CA and a serving certificate for the webhook, made with `cryptography`.

The API server calls the webhook over TLS and checks its certificate against the
`caBundle` of the webhook configuration; this module makes both and says when the
serving certificate is due for rotation.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = dt.timedelta(days=3650)
SERVING_VALIDITY = dt.timedelta(days=365)
ROTATE_BEFORE = dt.timedelta(days=30)
# Tolerate clocks a little behind ours.
_BACKDATE = dt.timedelta(minutes=5)

CA_CERT, CA_KEY, TLS_CERT, TLS_KEY = "ca.crt", "ca.key", "tls.crt", "tls.key"


@dataclass(frozen=True)
class KeyPair:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


def issue(
    issuer: KeyPair | None,
    common_name: str,
    *,
    organization: str | None = None,
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
    is_ca: bool = False,
    server: bool = False,
    client: bool = False,
    validity: dt.timedelta | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
    now: dt.datetime | None = None,
) -> KeyPair:
    """A certificate for `common_name` (and `organization`), signed by `issuer`.

    With no issuer the certificate is self-signed. A CA gets basic constraints with path
    length 0, certificate- and CRL-signing key usage and a subject key identifier; a leaf
    gets the DNS and IP SANs, the serverAuth/clientAuth extended key usages asked for, and
    an authority key identifier when it has an issuer. The key is a new P-256 one unless
    given; validity defaults to CA_VALIDITY for a CA and SERVING_VALIDITY otherwise, from
    `now` less a few minutes for clock skew.
    """
    now = now or dt.datetime.now(dt.UTC)
    key = key or ec.generate_private_key(ec.SECP256R1())
    if validity is None:
        validity = CA_VALIDITY if is_ca else SERVING_VALIDITY
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    subject = x509.Name(attrs)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(
            x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True
        )
    )
    if is_ca:
        builder = builder.add_extension(_CA_KEY_USAGE, critical=True)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if is_ca:
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        builder = builder.add_extension(ski, critical=False)
    if issuer:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
        builder = builder.add_extension(aki, critical=False)
    return KeyPair(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


def new_ca(common_name: str = "imagestreams-webhook-ca", now: dt.datetime | None = None) -> KeyPair:
    return issue(None, common_name, is_ca=True, now=now)


def new_serving_cert(
    ca: KeyPair,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str] = (),
    now: dt.datetime | None = None,
    validity: dt.timedelta = SERVING_VALIDITY,
) -> KeyPair:
    """A serving certificate signed by `ca`, valid for the given names and addresses."""
    if not dns_names and not ip_addresses:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    common_name = dns_names[0] if dns_names else ip_addresses[0]
    return issue(
        ca, common_name, dns=dns_names, ips=ip_addresses, server=True, validity=validity, now=now
    )


def ca_bundle(ca: KeyPair) -> str:
    """The base64 PEM that goes into a webhook configuration's `caBundle`."""
    return base64.b64encode(ca.cert_pem).decode()


def needs_rotation(
    cert: x509.Certificate, now: dt.datetime | None = None, before: dt.timedelta = ROTATE_BEFORE
) -> bool:
    now = now or dt.datetime.now(dt.UTC)
    return cert.not_valid_after_utc - now < before


def load_pair(cert_file: Path, key_file: Path) -> KeyPair:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_file}: expected an EC private key")
    return KeyPair(cert, key)


def write_certificates(
    out_dir: Path, dns_names: Sequence[str], ip_addresses: Sequence[str] = ()
) -> KeyPair:
    """Write ca.crt/ca.key (reusing an existing CA) and a fresh tls.crt/tls.key.

    Files are replaced atomically, key before certificate, so a server reloading on
    change never pairs a new certificate with an old key for long.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = out_dir / CA_CERT, out_dir / CA_KEY
    if ca_cert.exists() and ca_key.exists():
        ca = load_pair(ca_cert, ca_key)
    else:
        ca = new_ca()
        _write_atomic(ca_key, ca.key_pem, private=True)
        _write_atomic(ca_cert, ca.cert_pem)
    serving = new_serving_cert(ca, dns_names, ip_addresses)
    _write_atomic(out_dir / TLS_KEY, serving.key_pem, private=True)
    _write_atomic(out_dir / TLS_CERT, serving.cert_pem)
    return ca


def _write_atomic(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
