"""What the Cloud KMS test server speaks: the only methods it serves and the only
fields and enum values it reads or writes, as names in `google.cloud.kms.v1`.

The server is built from these tables and enforces them at run time (a request
that sets a field not listed here is answered UNIMPLEMENTED, a response that
would carry one is an INTERNAL error), so they are exactly what the conformance
check compares with the published `.proto` files: a method, field or enum value
used here and missing there fails `tests/conformance/test_gcp_kms_proto.py`.
"""

from __future__ import annotations

from collections.abc import Mapping

import proto  # type: ignore[import-untyped]
from google.cloud import kms_v1

PACKAGE = "google.cloud.kms.v1"
SERVICE = f"{PACKAGE}.KeyManagementService"

# Method name -> (request type, response type), as the SDK defines them.
METHODS: Mapping[str, tuple[type[proto.Message], type[proto.Message]]] = {
    "ListKeyRings": (kms_v1.ListKeyRingsRequest, kms_v1.ListKeyRingsResponse),
    "CreateKeyRing": (kms_v1.CreateKeyRingRequest, kms_v1.KeyRing),
    "ListCryptoKeys": (kms_v1.ListCryptoKeysRequest, kms_v1.ListCryptoKeysResponse),
    "GetCryptoKey": (kms_v1.GetCryptoKeyRequest, kms_v1.CryptoKey),
    "CreateCryptoKey": (kms_v1.CreateCryptoKeyRequest, kms_v1.CryptoKey),
    "UpdateCryptoKey": (kms_v1.UpdateCryptoKeyRequest, kms_v1.CryptoKey),
    "UpdateCryptoKeyPrimaryVersion": (
        kms_v1.UpdateCryptoKeyPrimaryVersionRequest,
        kms_v1.CryptoKey,
    ),
    "ListCryptoKeyVersions": (
        kms_v1.ListCryptoKeyVersionsRequest,
        kms_v1.ListCryptoKeyVersionsResponse,
    ),
    "GetCryptoKeyVersion": (kms_v1.GetCryptoKeyVersionRequest, kms_v1.CryptoKeyVersion),
    "CreateCryptoKeyVersion": (kms_v1.CreateCryptoKeyVersionRequest, kms_v1.CryptoKeyVersion),
    "UpdateCryptoKeyVersion": (kms_v1.UpdateCryptoKeyVersionRequest, kms_v1.CryptoKeyVersion),
    "DestroyCryptoKeyVersion": (kms_v1.DestroyCryptoKeyVersionRequest, kms_v1.CryptoKeyVersion),
    "Encrypt": (kms_v1.EncryptRequest, kms_v1.EncryptResponse),
    "Decrypt": (kms_v1.DecryptRequest, kms_v1.DecryptResponse),
}

_PAGED = ("parent", "page_size", "page_token")
_PAGE = ("next_page_token", "total_size")

# Message full name -> the fields the server reads (requests) or writes (responses).
# google.protobuf types (Timestamp, Duration, FieldMask) are leaves.
FIELDS: Mapping[str, frozenset[str]] = {
    f"{PACKAGE}.{name}": frozenset(fields)
    for name, fields in {
        "ListKeyRingsRequest": _PAGED,
        "ListKeyRingsResponse": ("key_rings", *_PAGE),
        "CreateKeyRingRequest": ("parent", "key_ring_id", "key_ring"),
        "KeyRing": ("name", "create_time"),
        "ListCryptoKeysRequest": _PAGED,
        "ListCryptoKeysResponse": ("crypto_keys", *_PAGE),
        "GetCryptoKeyRequest": ("name",),
        "CreateCryptoKeyRequest": ("parent", "crypto_key_id", "crypto_key"),
        "CryptoKey": (
            "name",
            "primary",
            "purpose",
            "create_time",
            "version_template",
            "labels",
            "destroy_scheduled_duration",
        ),
        "CryptoKeyVersionTemplate": ("algorithm", "protection_level"),
        "UpdateCryptoKeyRequest": ("crypto_key", "update_mask"),
        "UpdateCryptoKeyPrimaryVersionRequest": ("name", "crypto_key_version_id"),
        "ListCryptoKeyVersionsRequest": _PAGED,
        "ListCryptoKeyVersionsResponse": ("crypto_key_versions", *_PAGE),
        "GetCryptoKeyVersionRequest": ("name",),
        "CreateCryptoKeyVersionRequest": ("parent", "crypto_key_version"),
        "CryptoKeyVersion": (
            "name",
            "state",
            "protection_level",
            "algorithm",
            "create_time",
            "generate_time",
            "destroy_time",
            "destroy_event_time",
        ),
        "UpdateCryptoKeyVersionRequest": ("crypto_key_version", "update_mask"),
        "DestroyCryptoKeyVersionRequest": ("name",),
        "EncryptRequest": ("name", "plaintext", "additional_authenticated_data"),
        "EncryptResponse": ("name", "ciphertext", "protection_level"),
        "DecryptRequest": ("name", "ciphertext", "additional_authenticated_data"),
        "DecryptResponse": ("plaintext", "used_primary", "protection_level"),
    }.items()
}

# Enum full name -> the values the server accepts or answers with.
ENUM_VALUES: Mapping[str, frozenset[str]] = {
    f"{PACKAGE}.CryptoKey.CryptoKeyPurpose": frozenset({"ENCRYPT_DECRYPT"}),
    f"{PACKAGE}.CryptoKeyVersion.CryptoKeyVersionAlgorithm": frozenset(
        {"GOOGLE_SYMMETRIC_ENCRYPTION"}
    ),
    f"{PACKAGE}.CryptoKeyVersion.CryptoKeyVersionState": frozenset(
        {"ENABLED", "DISABLED", "DESTROY_SCHEDULED", "DESTROYED"}
    ),
    f"{PACKAGE}.ProtectionLevel": frozenset({"SOFTWARE"}),
}
