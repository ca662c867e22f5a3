"""The contract every KMS backend implements.

A backend manipulates *versions* of a tenant's key. How a version maps onto
the KMS differs (one AWS key per version behind an alias, a Vault transit
version, a PKCS#11 object with CKA_ID = version), but the ledger only ever sees
`KmsKey.ref`: a reference string, never key material.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from keyledger.domain import KmsProvider


class KmsKeyState(StrEnum):
    ENABLED = "Enabled"
    DISABLED = "Disabled"
    PENDING_DELETION = "PendingDeletion"
    MISSING = "Missing"


@dataclass(frozen=True)
class KeyVersionRequest:
    """What to create. `marker` makes creation idempotent across crashes."""

    tenant: str
    key_name: str
    version: int
    algorithm: str
    marker: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class KmsKey:
    ref: str
    state: KmsKeyState
    deletion_date: datetime | None = None


@dataclass(frozen=True)
class DataKey:
    """A fresh data key: the plaintext for local AES-GCM, the wrapped form to store."""

    plaintext: bytes = field(repr=False)
    wrapped: bytes


def idempotency_marker(resource_uid: str, version: int) -> str:
    """The marker a backend attaches (tag, label, alias) to the key it creates."""
    return f"{resource_uid}.v{version}"


class KeyBackend(Protocol):
    """One configured KMS. Methods raise `keyledger.errors.ProviderError` subclasses."""

    provider: KmsProvider
    # None when spec.adopt can take over an existing key of this KMS; else why not.
    adoption_refusal: str | None
    region: str | None
    endpoint: str | None

    def check(self) -> None:
        """Prove connectivity and permissions; raise with a user-facing message if not."""

    def create_key_version(self, request: KeyVersionRequest) -> KmsKey:
        """Create the version, or return the one already made for `request.marker`."""

    def find_key_version(self, marker: str) -> KmsKey | None:
        """The version created for `marker`, if any (crash recovery)."""

    def describe(self, ref: str) -> KmsKey:
        """The KMS's view of a version; state MISSING when it is gone."""

    def make_primary(self, ref: str, request: KeyVersionRequest) -> None:
        """Point the KMS's notion of "current" at `ref` (alias, primary version)."""

    def disable(self, ref: str) -> None: ...

    def enable(self, ref: str) -> None: ...

    def schedule_deletion(self, ref: str, window_days: int) -> datetime:
        """Schedule destruction after the window; returns when it will happen."""

    def destroy_due(self, now: datetime) -> list[str]:
        """Destroy the versions whose scheduled deletion date has passed; their refs.

        For KMSes that schedule deletion themselves (AWS, GCP) this does nothing:
        the KMS destroys on time. Where keyledger keeps the schedule (PKCS#11,
        Vault, the local backend) this is how the window is enforced; the operator
        calls it with every provider health check.
        """

    def generate_data_key(self, ref: str) -> DataKey: ...

    def unwrap_data_key(self, ref: str, wrapped: bytes) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BackendConfig:
    """A provider resource reduced to what a backend constructor needs.

    `options` is the spec section of the chosen backend (e.g. `spec.vault`);
    `credentials` the referenced Secret's data, decoded. Credentials never
    appear in repr or messages.
    """

    provider_name: str
    backend: str
    options: Mapping[str, object]
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)
