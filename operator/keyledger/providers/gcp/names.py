"""How keyledger names things in GCP Cloud KMS: key rings, CryptoKeys, labels, refs.

Key ring: `spec.gcpKms.keyRing`, or `keyledger-<tenant>` (one per tenant; GCP never
deletes key rings, so they are few and permanent). CryptoKey: one per tenant key,
id = the key name in a tenant's own ring, `<tenant>_<keyName>` in a shared ring
(tenants are DNS labels and never hold `_`, so the split is unambiguous). GCP ids
allow `[a-zA-Z0-9_-]{1,63}`: a name with other characters, or longer, is shortened
and given a hash suffix, which keeps the mapping one-to-one.

A version's ref is its full CryptoKeyVersion resource name, unique per version:
`projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/N`.

Labels live on the CryptoKey (GCP has none on versions), keys and values
`[a-z0-9_-]{0,63}`:

    keyledger-managed-by: keyledger, keyledger-tenant, keyledger-key-name   who owns it
    keyledger-m-<marker>: "<N>"          version N was made for an idempotency marker
    keyledger-pending: <marker label>    a version is being made for that marker...
    keyledger-pending-after: "<N>"       ...and will be numbered above N
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from keyledger.errors import InvalidSpec, KmsKeyNotFound
from keyledger.providers.base import KeyVersionRequest

KEY_RING_PREFIX = "keyledger-"
MANAGED_BY_LABEL = "keyledger-managed-by"
TENANT_LABEL = "keyledger-tenant"
KEY_NAME_LABEL = "keyledger-key-name"
PENDING_LABEL = "keyledger-pending"
PENDING_AFTER_LABEL = "keyledger-pending-after"
_MARKER_LABEL_PREFIX = "keyledger-m-"
_HASHED_MARKER_LABEL_PREFIX = "keyledger-mh-"  # differs from the readable prefix at char 11

MAX_ID_LENGTH = 63
MAX_LABEL_LENGTH = 63
_ID = re.compile(r"^[a-zA-Z0-9_-]{1,63}$")
_READABLE_MARKER = re.compile(r"^[a-z0-9-]+\.v[0-9]+$")  # "<ledger row uuid>.v<N>"
_LABEL_UNSAFE = re.compile(r"[^a-z0-9_-]")
_REF = re.compile(
    r"^(?P<crypto_key>projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/"
    r"keyRings/(?P<key_ring>[^/]+)/cryptoKeys/(?P<key>[^/]+))/cryptoKeyVersions/(?P<number>[0-9]+)$"
)


@dataclass(frozen=True)
class VersionRef:
    """A parsed ref: the CryptoKey's resource name and the version number."""

    crypto_key: str
    number: int

    @property
    def ref(self) -> str:
        return version_name(self.crypto_key, self.number)

    @classmethod
    def parse(cls, ref: str) -> VersionRef:
        match = _REF.match(ref)
        if match is None:
            raise KmsKeyNotFound(
                f"{ref!r} is not a GCP CryptoKeyVersion name "
                "(projects/…/locations/…/keyRings/…/cryptoKeys/…/cryptoKeyVersions/N): "
                "it belongs to another backend, or spec.adopt.kmsKeyId is wrong",
            )
        return cls(match["crypto_key"], int(match["number"]))


def version_name(crypto_key: str, number: int | str) -> str:
    return f"{crypto_key}/cryptoKeyVersions/{number}"


def location_name(project: str, location: str) -> str:
    return f"projects/{project}/locations/{location}"


def key_ring_id(tenant: str, configured: str | None) -> str:
    """The configured key ring, or the tenant's own."""
    return configured or _gcp_id(f"{KEY_RING_PREFIX}{tenant}")


def crypto_key_id(tenant: str, key_name: str, *, shared_ring: bool) -> str:
    """The CryptoKey id of a tenant's key: tenant-qualified only in a shared ring."""
    return _gcp_id(f"{tenant}_{key_name}" if shared_ring else key_name)


def crypto_key_labels(request: KeyVersionRequest) -> dict[str, str]:
    """Who owns a CryptoKey: informational, lookups go by the deterministic name.

    `request.labels` are not copied: they describe one version (its number),
    while CryptoKey labels hold for every version.
    """
    return {
        MANAGED_BY_LABEL: "keyledger",
        TENANT_LABEL: _label_value(request.tenant),
        KEY_NAME_LABEL: _label_value(request.key_name),
    }


def marker_label(marker: str) -> str:
    """The label key that records which version an idempotency marker made.

    Ledger markers (`<uuid>.v<N>`) stay readable; anything else is hashed.
    """
    readable = _MARKER_LABEL_PREFIX + marker.replace(".v", "_v")
    if _READABLE_MARKER.match(marker) and len(readable) <= MAX_LABEL_LENGTH:
        return readable
    return _HASHED_MARKER_LABEL_PREFIX + hashlib.sha256(marker.encode()).hexdigest()[:48]


def is_marker_label(label: str) -> bool:
    return label.startswith((_MARKER_LABEL_PREFIX, _HASHED_MARKER_LABEL_PREFIX))


def validate_key_ring_id(value: str, field: str) -> str:
    if not _ID.match(value):
        raise InvalidSpec(
            f"{field} {value!r} is not a GCP key ring id: use 1-63 letters, digits, '_' or '-'",
        )
    return value


def _gcp_id(name: str) -> str:
    if _ID.match(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    readable = re.sub(r"[^a-zA-Z0-9_-]", "-", name)[: MAX_ID_LENGTH - len(digest) - 1]
    return f"{readable}-{digest}"


def _label_value(value: str) -> str:
    return _LABEL_UNSAFE.sub("_", value.lower())[:MAX_LABEL_LENGTH]
