"""The webhooks' serving certificate: made once, kept while good, renewed before it
expires or when the host changes; a mounted (cert-manager) one is used untouched."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from keyledger.admission.certificates import LIFETIME, RENEW_BEFORE, serving_certificate

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def _certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_made_for_the_host_signed_by_its_ca_and_loadable_by_tls(tmp_path: Path) -> None:
    made = serving_certificate(tmp_path, ["127.0.0.1"], NOW)
    assert made.made_here
    certificate = _certificate(made.certfile)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    certificate.verify_directly_issued_by(_certificate(made.cafile))
    assert made.keyfile.stat().st_mode & 0o077 == 0  # the private key is the owner's only
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(made.certfile, made.keyfile)


def test_kept_while_good_and_renewed_before_expiry_or_for_a_new_host(tmp_path: Path) -> None:
    first = _certificate(serving_certificate(tmp_path, ["webhook.example"], NOW).certfile)
    again = serving_certificate(tmp_path, ["webhook.example"], NOW + timedelta(days=100))
    assert _certificate(again.certfile).serial_number == first.serial_number

    late = NOW + LIFETIME - RENEW_BEFORE + timedelta(days=1)
    renewed = _certificate(serving_certificate(tmp_path, ["webhook.example"], late).certfile)
    assert renewed.serial_number != first.serial_number

    moved = serving_certificate(tmp_path, ["keyledger.keyledger-system.svc"], late)
    names = _certificate(moved.certfile).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert [str(n) for n in names.value.get_values_for_type(x509.DNSName)] == [
        "keyledger.keyledger-system.svc"
    ]


def test_a_mounted_certificate_is_used_as_it_is(tmp_path: Path) -> None:
    elsewhere = serving_certificate(tmp_path / "issuer", ["webhook.example"], NOW)
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    for source in (elsewhere.certfile, elsewhere.keyfile, elsewhere.cafile):
        (mounted / source.name).write_bytes(source.read_bytes())
    used = serving_certificate(mounted, ["another.host"], NOW + LIFETIME)
    assert not used.made_here
    assert used.certfile.read_bytes() == elsewhere.certfile.read_bytes()
