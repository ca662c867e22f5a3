"""The client against the floor and two peers: 1 KiB and 1 MiB, cached data keys.

Per payload size, within one run, rounds interleaved:
- floor: bare AES-256-GCM from `cryptography` (a fresh nonce, seal, tag; and open);
- keyledger: `KeyledgerClient.encrypt` / `decrypt` with a cached data key (the
  local backend as the key source, held in memory after the first call);
- aws-encryption-sdk: its caching materials manager over an in-memory raw AES
  master key, the committing suite without signatures
  (AES_256_GCM_HKDF_SHA512_COMMIT_KEY), the same encryption context;
- tink: AEAD (AES256_GCM, the key in memory), and KmsEnvelopeAead (a fresh data
  key per message, wrapped by an in-memory AEAD as the "KMS").
Targets: within 1.1x of the floor at 1 MiB and 2x at 1 KiB, and faster than
every peer at both sizes, for encrypt and decrypt alike.

The peers come from the optional `bench` dependency group (`make bench` installs it).
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aws_encryption_sdk
import tink
from aws_encryption_sdk.identifiers import (
    Algorithm,
    CommitmentPolicy,
    EncryptionKeyType,
    WrappingAlgorithm,
)
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKeyProvider
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from tink import aead

from benchmarks.common import Figure, Report, interleaved
from keyledger.client import KeyledgerClient
from keyledger.lifecycle.spec import KeySpec
from keyledger.operations.keys import KeyOperations
from keyledger.operations.views import KeyResource
from keyledger.providers.local.backend import LocalBackend
from keyledger.store.engine import make_engine, make_session_factory, upgrade_database

SIZES = {"1 KiB": 1024, "1 MiB": 1024 * 1024}
FLOOR_TARGET = {"1 KiB": 2.0, "1 MiB": 1.1}
CONTEXT = {"table": "notes", "row": "42"}
CALLS = {"1 KiB": 4000, "1 MiB": 40}


class _InMemoryKeys(RawMasterKeyProvider):  # type: ignore[misc]  # untyped SDK base
    """The ESDK's key source: one AES-256 wrapping key held in memory."""

    provider_id = "bench"
    wrapping_key = os.urandom(32)

    def _get_raw_key(self, key_id: bytes) -> WrappingKey:
        return WrappingKey(
            wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
            wrapping_key=self.wrapping_key,
            wrapping_key_type=EncryptionKeyType.SYMMETRIC,
        )


def esdk(payload: bytes) -> tuple[Callable[[], object], Callable[[], object]]:
    keys = _InMemoryKeys()
    keys.add_master_key(b"bench")
    cmm = aws_encryption_sdk.CachingCryptoMaterialsManager(
        master_key_provider=keys,
        cache=aws_encryption_sdk.LocalCryptoMaterialsCache(capacity=100),
        max_age=600.0,
        max_messages_encrypted=2**32,
    )
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    suite = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY

    def seal() -> Any:
        return client.encrypt(
            source=payload, materials_manager=cmm, algorithm=suite, encryption_context=CONTEXT
        )[0]

    sealed = seal()

    def open_() -> Any:
        return client.decrypt(source=sealed, materials_manager=cmm)[0]

    assert open_() == payload
    return seal, open_


def tink_aead(payload: bytes) -> tuple[Callable[[], object], Callable[[], object]]:
    primitive = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM).primitive(aead.Aead)
    ad = b"table=notes;row=42"
    sealed = primitive.encrypt(payload, ad)
    assert primitive.decrypt(sealed, ad) == payload
    return (lambda: primitive.encrypt(payload, ad)), (lambda: primitive.decrypt(sealed, ad))


def tink_envelope(payload: bytes) -> tuple[Callable[[], object], Callable[[], object]]:
    kms = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM).primitive(aead.Aead)
    envelope = aead.KmsEnvelopeAead(aead.aead_key_templates.AES256_GCM, kms)
    ad = b"table=notes;row=42"
    sealed = envelope.encrypt(payload, ad)
    assert envelope.decrypt(sealed, ad) == payload
    return (lambda: envelope.encrypt(payload, ad)), (lambda: envelope.decrypt(sealed, ad))


def floor(payload: bytes) -> tuple[Callable[[], object], Callable[[], object]]:
    key = AESGCM(os.urandom(32))
    aad = b"table=notes;row=42"
    nonce = os.urandom(12)
    sealed = key.encrypt(nonce, payload, aad)
    return (lambda: key.encrypt(os.urandom(12), payload, aad)), (
        lambda: key.decrypt(nonce, sealed, aad)
    )


def keyledger_client(
    client: KeyledgerClient, payload: bytes
) -> tuple[Callable[[], object], Callable[[], object]]:
    sealed = client.encrypt("acme", "records", payload, CONTEXT)
    assert client.decrypt(sealed, CONTEXT, tenant="acme") == payload
    return (lambda: client.encrypt("acme", "records", payload, CONTEXT)), (
        lambda: client.decrypt(sealed, CONTEXT, tenant="acme")
    )


def main() -> int:
    aead.register()
    report = Report("bench_client_peers")
    with tempfile.TemporaryDirectory(prefix="keyledger-bench-client-") as workdir:
        url = f"sqlite:///{Path(workdir) / 'ledger.db'}"
        upgrade_database(url)
        sessions = make_session_factory(make_engine(url))
        backend = LocalBackend(Path(workdir) / "bench.json")
        spec = KeySpec.from_resource(
            "records",
            {
                "tenant": "acme",
                "keyType": "PHI_DATA",
                "providerRef": {"kind": "ClusterKeyProvider", "name": "bench"},
            },
        )
        key = KeyResource(str(uuid.uuid4()), "bench", "records", 1, spec, {})
        KeyOperations(sessions, actor="bench").reconcile(key, backend, "bench")
        client = KeyledgerClient(sessions, [backend], listen=False)
        for size_name, size in SIZES.items():
            payload = os.urandom(size)
            sides = {
                "floor": floor(payload),
                "keyledger": keyledger_client(client, payload),
                "aws-encryption-sdk (caching CMM)": esdk(payload),
                "tink AEAD": tink_aead(payload),
                "tink KmsEnvelopeAead": tink_envelope(payload),
            }
            for index, operation in enumerate(("encrypt", "decrypt")):
                seconds = interleaved(
                    {name: pair[index] for name, pair in sides.items()}, CALLS[size_name]
                )
                raw = {name: round(value * 1e6, 2) for name, value in seconds.items()}
                report.add(
                    Figure(
                        f"client {operation} {size_name} vs bare AES-256-GCM",
                        "us",
                        seconds["keyledger"] * 1e6,
                        seconds["floor"] * 1e6,
                        FLOOR_TARGET[size_name],
                        details={"all_us": raw},
                    )
                )
                for peer in sides:
                    if peer in ("floor", "keyledger"):
                        continue
                    report.add(
                        Figure(
                            f"client {operation} {size_name} vs {peer}",
                            "us",
                            seconds["keyledger"] * 1e6,
                            seconds[peer] * 1e6,
                            1.0,
                            floor_is=peer,
                        )
                    )
        client.close()
    return report.exit_code()


if __name__ == "__main__":
    sys.exit(main())
