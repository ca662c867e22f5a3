"""Vocabulary shared by every layer: key types, version statuses, KMS backends.

Values are the ones of the original ledger specification so that rows written
by keyledger read the same as the table platform teams already know.
"""

from __future__ import annotations

from enum import StrEnum


class KeyType(StrEnum):
    PHI_DATA = "PHI_DATA"
    PII_DATA = "PII_DATA"
    FINANCIAL = "FINANCIAL"
    CLINICAL = "CLINICAL"
    AUDIT_LOG = "AUDIT_LOG"
    BACKUP = "BACKUP"
    COMMUNICATION = "COMMUNICATION"


class KeyStatus(StrEnum):
    """Status of one key version (one ledger row)."""

    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"
    ROTATED = "ROTATED"
    EXPIRED = "EXPIRED"
    COMPROMISED = "COMPROMISED"


class KmsProvider(StrEnum):
    """Backend that holds the key material; stored in `encryption_keys.kms_provider`."""

    AWS_KMS = "AWS_KMS"
    AZURE_KV = "AZURE_KV"
    HASHICORP_VAULT = "HASHICORP_VAULT"
    GCP_KMS = "GCP_KMS"
    LOCAL_HSM = "LOCAL_HSM"  # a PKCS#11 token (SoftHSM2 in tests, a real HSM in production)
    LOCAL_SOFTWARE = "LOCAL_SOFTWARE"  # the dev-only `local` backend: never for production


class KeyEventType(StrEnum):
    """What happened to a key version; one `key_events` row each."""

    CREATED = "CREATED"
    ACTIVATED = "ACTIVATED"
    ROTATED = "ROTATED"
    ROLLED_BACK = "ROLLED_BACK"
    REQUEST_REFUSED = "REQUEST_REFUSED"
    ROLLBACK_WINDOW_CLOSED = "ROLLBACK_WINDOW_CLOSED"
    EXPIRED = "EXPIRED"
    COMPROMISED = "COMPROMISED"
    DISABLED = "DISABLED"
    ENABLED = "ENABLED"
    DELETION_RETAINED = "DELETION_RETAINED"
    DELETION_DISABLED = "DELETION_DISABLED"
    DELETION_SCHEDULED = "DELETION_SCHEDULED"
    DESTROYED = "DESTROYED"
    DRIFT_DETECTED = "DRIFT_DETECTED"
    DRIFT_RESOLVED = "DRIFT_RESOLVED"
    ADOPTED = "ADOPTED"
    # A client opened data under a COMPROMISED version, with a reason (break glass).
    BREAK_GLASS_OPENED = "BREAK_GLASS_OPENED"


class TenantBinding(StrEnum):
    """What a namespace without the `keyledger.io/tenant` label may hold."""

    STRICT = "strict"  # no EncryptionKey at all: label the namespace first
    PERMISSIVE = "permissive"  # keys of any tenant (single-team clusters, demos)
