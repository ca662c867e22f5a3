"""The webhook's serving certificate: the operator's own, or one cert-manager mounts.

The API server calls the webhooks over TLS and trusts the CA bundle the webhook
configuration carries. With no certificate given, the operator makes a small CA
and a serving certificate for the webhook's host names in its certificate
directory, and replaces them well before they expire. With `tls.crt`, `tls.key`
and `ca.crt` already there (a cert-manager Certificate's Secret mounted at the
directory), it uses those and makes nothing; kopf re-reads them when they change.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERTIFICATE = "tls.crt"
PRIVATE_KEY = "tls.key"
CA_CERTIFICATE = "ca.crt"
# Made certificates live a year and are replaced once less than a month is left.
LIFETIME = timedelta(days=365)
RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True)
class ServingCertificate:
    certfile: Path
    keyfile: Path
    cafile: Path
    made_here: bool


def serving_certificate(
    directory: Path, hosts: Sequence[str], now: datetime | None = None
) -> ServingCertificate:
    """The certificate to serve the webhooks with, made (or renewed) if needed."""
    paths = ServingCertificate(
        directory / CERTIFICATE, directory / PRIVATE_KEY, directory / CA_CERTIFICATE, True
    )
    now = now or datetime.now(UTC)
    marker = directory / ".made-by-keyledger"
    present = all(p.is_file() for p in (paths.certfile, paths.keyfile, paths.cafile))
    if present and not marker.is_file():
        return ServingCertificate(paths.certfile, paths.keyfile, paths.cafile, made_here=False)
    if present and _still_good(paths.certfile, hosts, now):
        return paths
    directory.mkdir(parents=True, exist_ok=True)
    _make(paths, hosts, now)
    marker.write_text("certificates in this directory are made and renewed by keyledger\n")
    return paths


def _still_good(certfile: Path, hosts: Sequence[str], now: datetime) -> bool:
    certificate = x509.load_pem_x509_certificate(certfile.read_bytes())
    if certificate.not_valid_after_utc - now < RENEW_BEFORE:
        return False
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    covered = {str(n) for n in names.get_values_for_type(x509.DNSName)} | {
        str(n) for n in names.get_values_for_type(x509.IPAddress)
    }
    return set(hosts) <= covered


def _make(paths: ServingCertificate, hosts: Sequence[str], now: datetime) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyledger webhook CA")])
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    certificate = (
        _builder(subject, ca_name, key.public_key(), now)
        .add_extension(x509.SubjectAlternativeName([_general_name(h) for h in hosts]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(paths.cafile, ca.public_bytes(serialization.Encoding.PEM), private=False)
    _write(paths.certfile, certificate.public_bytes(serialization.Encoding.PEM), private=False)
    _write(
        paths.keyfile,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        private=True,
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + LIFETIME)
    )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write(path: Path, data: bytes, *, private: bool) -> None:
    # Written aside and renamed: kopf re-reads the files and must never see half of one.
    staging = path.with_suffix(path.suffix + ".new")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    staging.replace(path)
