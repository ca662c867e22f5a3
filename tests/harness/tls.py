"""A self-signed certificate for the test servers of our own (127.0.0.1 and localhost)."""

from __future__ import annotations

import atexit
import functools
import ipaddress
import os
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# gRPC's own setting for the roots it trusts, read once per process at its first TLS channel.
GRPC_ROOTS_ENV = "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """Write cert.pem (also the CA file clients trust) and key.pem; return their paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyledger test server")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


@functools.cache
def grpc_trusted_certificate() -> tuple[Path, Path]:
    """The certificate (and key) of every TLS gRPC test server of this process, trusted
    by gRPC through GRPC_DEFAULT_SSL_ROOTS_FILE_PATH.

    gRPC reads that setting once per process, when its first TLS channel is made
    (by any test), so the certificate must exist before any test runs: the tests'
    conftest calls this at start-up, and a process trusts this one certificate
    only. Child processes (the operator) inherit the setting.
    """
    directory = Path(tempfile.mkdtemp(prefix="keyledger-grpc-tls-"))
    atexit.register(shutil.rmtree, directory, True)
    files = self_signed_certificate(directory)
    os.environ[GRPC_ROOTS_ENV] = str(files[0])
    return files
