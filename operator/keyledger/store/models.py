"""SQLAlchemy models of the ledger.

`encryption_keys` follows the original specification's schema: one row per key
*version*, holding only the KMS reference. `key_events` is the append-only
audit trail of every transition.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from keyledger.domain import KeyEventType, KeyStatus, KeyType, KmsProvider
from keyledger.store.types import JsonDocument, UtcDateTime

# Deterministic constraint names so that migrations can drop what they create
# on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _enum(enum_cls: type[Any], name: str) -> Enum:
    # VARCHAR + CHECK rather than a native PostgreSQL enum: adding a value later
    # is then an ordinary migration on both databases.
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda members: [m.value for m in members],
    )


_ACTIVE = text("status = 'ACTIVE'")
_LATEST = text("latest")
# A version the planner can still act on: unsettled or current, its rollback window
# open, or able to expire. The live-versions read spells it the same, so that the
# database sees the read's condition is the index's (constants, no parameters);
# parenthesized, as text joined to other conditions by AND is not.
ACTING_VERSION = text(
    "(status IN ('PENDING', 'ACTIVE', 'INACTIVE') OR can_rollback "
    "OR (expires_at IS NOT NULL AND status = 'ROTATED'))"
)


class EncryptionKeyRecord(Base):
    """One version of a tenant's key: a reference into a KMS, never the key."""

    __tablename__ = "encryption_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    correlation_id: Mapped[str | None] = mapped_column(String(255))
    tenant_id: Mapped[str] = mapped_column(String(255))
    key_name: Mapped[str] = mapped_column(String(255))
    key_type: Mapped[KeyType] = mapped_column(_enum(KeyType, "key_type"))
    # NULL only while PENDING: the row is written before the KMS call so that a
    # crash between the two leaves a trace to resume from (see the check below).
    kms_key_id: Mapped[str | None] = mapped_column(String(512), unique=True)
    kms_provider: Mapped[KmsProvider] = mapped_column(_enum(KmsProvider, "kms_provider"))
    kms_region: Mapped[str | None] = mapped_column(String(100))
    kms_endpoint: Mapped[str | None] = mapped_column(String(512))
    status: Mapped[KeyStatus] = mapped_column(
        _enum(KeyStatus, "key_status"), server_default=KeyStatus.PENDING.value
    )
    # An integer, not the original VARCHAR: versions are ordered and compared.
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    activated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    rotated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # When a client last refused to open data sealed under this version (it was
    # compromised and no break glass was given): data under it still exists
    # somewhere, so the version is not yet safe to destroy.
    last_refused_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    parent_key_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("encryption_keys.id", ondelete="RESTRICT")
    )
    can_rollback: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    rollback_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    key_algorithm: Mapped[str] = mapped_column(String(100), server_default="AES-256-GCM")
    key_purpose: Mapped[str | None] = mapped_column(Text)
    compliance_tags: Mapped[dict[str, str] | None] = mapped_column(JsonDocument)
    authorized_services: Mapped[list[str] | None] = mapped_column(JsonDocument)
    access_policy: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    created_by: Mapped[str | None] = mapped_column(String(255))
    rotated_by: Mapped[str | None] = mapped_column(String(255))
    # The EncryptionKey that manages this key (beyond the original schema): two
    # resources must never drive the same (tenant, key name). Cleared when the
    # resource is deleted with its rows retained, so a new one can take over.
    resource_uid: Mapped[str | None] = mapped_column(String(64))
    resource_name: Mapped[str | None] = mapped_column(String(512))

    __table_args__ = (
        CheckConstraint(
            "status = 'PENDING' OR kms_key_id IS NOT NULL", name="kms_key_id_once_created"
        ),
        CheckConstraint("version >= 1", name="version_positive"),
        # Exactly one ACTIVE version per (tenant, key name), enforced by the database.
        Index(
            "uq_encryption_keys_one_active",
            "tenant_id",
            "key_name",
            unique=True,
            postgresql_where=_ACTIVE,
            sqlite_where=_ACTIVE,
        ),
        Index(
            "uq_encryption_keys_tenant_key_version", "tenant_id", "key_name", "version", unique=True
        ),
        # The client's hot query: the ACTIVE key of a tenant by type.
        Index(
            "ix_encryption_keys_active_by_type",
            "tenant_id",
            "key_type",
            postgresql_where=_ACTIVE,
            sqlite_where=_ACTIVE,
        ),
        # Timers: versions whose expiry or rollback window comes due.
        Index(
            "ix_encryption_keys_due_expiry",
            "expires_at",
            postgresql_where=text("status IN ('ACTIVE', 'INACTIVE')"),
            sqlite_where=text("status IN ('ACTIVE', 'INACTIVE')"),
        ),
        Index(
            "ix_encryption_keys_due_rollback_close",
            "rollback_expires_at",
            postgresql_where=text("can_rollback"),
            sqlite_where=text("can_rollback"),
        ),
        Index("ix_encryption_keys_parent_key_id", "parent_key_id"),
        # A pass's versions beyond the newest it shows, found without reading the
        # settled history in between (KeyLedger.live_versions).
        Index(
            "ix_encryption_keys_acting",
            "tenant_id",
            "key_name",
            postgresql_where=ACTING_VERSION,
            sqlite_where=ACTING_VERSION,
        ),
    )


class KeyEventRecord(Base):
    """An audit row: one transition of one key version, who caused it and why.

    Append-only: the migration installs triggers that refuse UPDATE and DELETE;
    hash-chained per tenant, so that a row changed by someone who got past the
    triggers shows (`keyledger audit verify`). Written only through
    `KeyLedger.record_event`, which links each row into its tenant's chain.
    """

    __tablename__ = "key_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    key_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("encryption_keys.id", ondelete="RESTRICT")
    )
    tenant_id: Mapped[str] = mapped_column(String(255))
    key_name: Mapped[str] = mapped_column(String(255))
    version: Mapped[int | None] = mapped_column(Integer)
    event_type: Mapped[KeyEventType] = mapped_column(_enum(KeyEventType, "key_event_type"))
    from_status: Mapped[KeyStatus | None] = mapped_column(_enum(KeyStatus, "key_event_from_status"))
    to_status: Mapped[KeyStatus | None] = mapped_column(_enum(KeyStatus, "key_event_to_status"))
    actor: Mapped[str] = mapped_column(String(255))
    correlation_id: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    # The tenant's hash chain (keyledger.store.audit): the previous row of the
    # tenant (none for the first), its hash, and this row's own hash.
    prev_event_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    prev_hash: Mapped[str] = mapped_column(String(64))
    row_hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_key_events_tenant_occurred", "tenant_id", "occurred_at"),
        Index("ix_key_events_key_id", "key_id"),
        # A row has one successor: two writers racing for one predecessor fail
        # instead of forking the chain.
        Index("uq_key_events_prev_event_id", "prev_event_id", unique=True),
        # The newest row of a tenant, which the next row links to.
        Index("ix_key_events_tenant_chain", "tenant_id", "id"),
    )


class HandledRequestRecord(Base):
    """An annotation request (rotate, rollback, compromise) a key has settled.

    Written in the same transaction as the audit row of the action that carried
    it out or refused it; the token is then never acted on again. A table of its
    own, found through its indexes, so that a pass costs the same however long
    the key's history is."""

    __tablename__ = "handled_requests"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    tenant_id: Mapped[str] = mapped_column(String(255))
    key_name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    token: Mapped[str] = mapped_column(String(160))
    handled_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The version the request was settled on.
    key_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("encryption_keys.id", ondelete="RESTRICT")
    )
    # The last request of its kind the key settled (status.lastHandledRequests).
    latest: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))

    __table_args__ = (
        # Whether a token is handled already: one index probe, and the only index
        # a lookup by token can use, so that no planner estimate (the table's
        # statistics may date from when it was empty) turns it into a scan of the
        # key's requests.
        Index(
            "uq_handled_requests_key_kind_token",
            "tenant_id",
            "key_name",
            "kind",
            "token",
            unique=True,
        ),
        # The last handled token of each kind: one row per key and kind.
        Index(
            "uq_handled_requests_latest",
            "tenant_id",
            "key_name",
            "kind",
            unique=True,
            postgresql_where=_LATEST,
            sqlite_where=_LATEST,
        ),
    )


class TenantGrantRecord(Base):
    """A database role allowed to see one tenant's rows (PostgreSQL row-level security).

    Consulted by the `tenant_isolation` policies of migration 0005; a role whose
    session scope (`keyledger.tenant`) names a tenant it has no row here for
    sees nothing of it. The operator's role owns the tables and is not subject
    to the policies. SQLite has no row-level security and ignores this table."""

    __tablename__ = "tenant_grants"

    role_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    granted_at: Mapped[datetime] = mapped_column(UtcDateTime)
