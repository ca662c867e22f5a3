"""Initial ledger: encryption_keys and the append-only key_events.

encryption_keys holds KMS references, one row per key version; key_events is
the audit trail of every transition. Written by hand to match
keyledger.store.models, with names spelled out (op.f) and enum values frozen
here, so that later changes to the models or to the naming convention never
change what this revision creates.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY_TYPES = (
    "PHI_DATA",
    "PII_DATA",
    "FINANCIAL",
    "CLINICAL",
    "AUDIT_LOG",
    "BACKUP",
    "COMMUNICATION",
)
KEY_STATUSES = ("PENDING", "ACTIVE", "INACTIVE", "ROTATED", "EXPIRED", "COMPROMISED")
KMS_PROVIDERS = (
    "AWS_KMS",
    "AZURE_KV",
    "HASHICORP_VAULT",
    "GCP_KMS",
    "LOCAL_HSM",
    "LOCAL_SOFTWARE",
)
KEY_EVENT_TYPES = (
    "CREATED",
    "ACTIVATED",
    "ROTATED",
    "ROLLED_BACK",
    "REQUEST_REFUSED",
    "ROLLBACK_WINDOW_CLOSED",
    "EXPIRED",
    "COMPROMISED",
    "DISABLED",
    "ENABLED",
    "DELETION_RETAINED",
    "DELETION_DISABLED",
    "DELETION_SCHEDULED",
    "DESTROYED",
    "DRIFT_DETECTED",
    "DRIFT_RESOLVED",
    "ADOPTED",
)

APPEND_ONLY_MESSAGE = "key_events is append-only"

_ACTIVE = "status = 'ACTIVE'"
_DUE_EXPIRY = "status IN ('ACTIVE', 'INACTIVE')"
_ROLLBACK_OPEN = "can_rollback"


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _json() -> sa.JSON:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _one_of(column: str, values: Sequence[str], name: str) -> sa.CheckConstraint:
    # What sa.Enum(native_enum=False, create_constraint=True) renders, spelled out.
    allowed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=op.f(name))


def upgrade() -> None:
    op.create_table(
        "encryption_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.Column("correlation_id", sa.String(255), nullable=True),
        sa.Column("tenant_id", sa.String(255), nullable=False),
        sa.Column("key_name", sa.String(255), nullable=False),
        sa.Column("key_type", sa.String(32), nullable=False),
        sa.Column("kms_key_id", sa.String(512), nullable=True),
        sa.Column("kms_provider", sa.String(32), nullable=False),
        sa.Column("kms_region", sa.String(100), nullable=True),
        sa.Column("kms_endpoint", sa.String(512), nullable=True),
        sa.Column("status", sa.String(32), server_default="PENDING", nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("activated_at", _timestamp(), nullable=True),
        sa.Column("expires_at", _timestamp(), nullable=True),
        sa.Column("rotated_at", _timestamp(), nullable=True),
        sa.Column("last_used_at", _timestamp(), nullable=True),
        sa.Column("parent_key_id", sa.Uuid(), nullable=True),
        sa.Column("can_rollback", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("rollback_expires_at", _timestamp(), nullable=True),
        sa.Column("key_algorithm", sa.String(100), server_default="AES-256-GCM", nullable=False),
        sa.Column("key_purpose", sa.Text(), nullable=True),
        sa.Column("compliance_tags", _json(), nullable=True),
        sa.Column("authorized_services", _json(), nullable=True),
        sa.Column("access_policy", _json(), nullable=True),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("rotated_by", sa.String(255), nullable=True),
        sa.Column("resource_uid", sa.String(64), nullable=True),
        sa.Column("resource_name", sa.String(512), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_encryption_keys")),
        sa.ForeignKeyConstraint(
            ["parent_key_id"],
            ["encryption_keys.id"],
            name=op.f("fk_encryption_keys_parent_key_id_encryption_keys"),
            ondelete="RESTRICT",
        ),
        sa.UniqueConstraint("kms_key_id", name=op.f("uq_encryption_keys_kms_key_id")),
        sa.CheckConstraint(
            "status = 'PENDING' OR kms_key_id IS NOT NULL",
            name=op.f("ck_encryption_keys_kms_key_id_once_created"),
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_encryption_keys_version_positive")),
        _one_of("key_type", KEY_TYPES, "ck_encryption_keys_key_type"),
        _one_of("kms_provider", KMS_PROVIDERS, "ck_encryption_keys_kms_provider"),
        _one_of("status", KEY_STATUSES, "ck_encryption_keys_key_status"),
    )
    op.create_index(
        "uq_encryption_keys_one_active",
        "encryption_keys",
        ["tenant_id", "key_name"],
        unique=True,
        postgresql_where=sa.text(_ACTIVE),
        sqlite_where=sa.text(_ACTIVE),
    )
    op.create_index(
        "uq_encryption_keys_tenant_key_version",
        "encryption_keys",
        ["tenant_id", "key_name", "version"],
        unique=True,
    )
    op.create_index(
        "ix_encryption_keys_active_by_type",
        "encryption_keys",
        ["tenant_id", "key_type"],
        postgresql_where=sa.text(_ACTIVE),
        sqlite_where=sa.text(_ACTIVE),
    )
    op.create_index(
        "ix_encryption_keys_due_expiry",
        "encryption_keys",
        ["expires_at"],
        postgresql_where=sa.text(_DUE_EXPIRY),
        sqlite_where=sa.text(_DUE_EXPIRY),
    )
    op.create_index(
        "ix_encryption_keys_due_rollback_close",
        "encryption_keys",
        ["rollback_expires_at"],
        postgresql_where=sa.text(_ROLLBACK_OPEN),
        sqlite_where=sa.text(_ROLLBACK_OPEN),
    )
    op.create_index("ix_encryption_keys_parent_key_id", "encryption_keys", ["parent_key_id"])

    op.create_table(
        "key_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("occurred_at", _timestamp(), nullable=False),
        sa.Column("key_id", sa.Uuid(), nullable=True),
        sa.Column("tenant_id", sa.String(255), nullable=False),
        sa.Column("key_name", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("from_status", sa.String(32), nullable=True),
        sa.Column("to_status", sa.String(32), nullable=True),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("correlation_id", sa.String(255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", _json(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_key_events")),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["encryption_keys.id"],
            name=op.f("fk_key_events_key_id_encryption_keys"),
            ondelete="RESTRICT",
        ),
        _one_of("event_type", KEY_EVENT_TYPES, "ck_key_events_key_event_type"),
        _one_of("from_status", KEY_STATUSES, "ck_key_events_key_event_from_status"),
        _one_of("to_status", KEY_STATUSES, "ck_key_events_key_event_to_status"),
    )
    op.create_index("ix_key_events_tenant_occurred", "key_events", ["tenant_id", "occurred_at"])
    op.create_index("ix_key_events_key_id", "key_events", ["key_id"])

    _create_append_only_guard()


def downgrade() -> None:
    _drop_append_only_guard()
    op.drop_index("ix_key_events_key_id", table_name="key_events")
    op.drop_index("ix_key_events_tenant_occurred", table_name="key_events")
    op.drop_table("key_events")
    for index in (
        "ix_encryption_keys_parent_key_id",
        "ix_encryption_keys_due_rollback_close",
        "ix_encryption_keys_due_expiry",
        "ix_encryption_keys_active_by_type",
        "uq_encryption_keys_tenant_key_version",
        "uq_encryption_keys_one_active",
    ):
        op.drop_index(index, table_name="encryption_keys")
    op.drop_table("encryption_keys")


# The audit trail must not be rewritten, not even by the operator itself: the
# database refuses UPDATE and DELETE (and on PostgreSQL TRUNCATE) on key_events.
# Both databases report it as an integrity error (SQLSTATE 23001 / SQLITE_CONSTRAINT).


def _dialect() -> str:
    return op.get_context().dialect.name


def _create_append_only_guard() -> None:
    if _dialect() == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION key_events_refuse_change() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}: % refused', TG_OP
                    USING ERRCODE = 'restrict_violation';
            END;
            $$
            """
        )
        op.execute(
            "CREATE TRIGGER key_events_append_only BEFORE UPDATE OR DELETE ON key_events "
            "FOR EACH ROW EXECUTE FUNCTION key_events_refuse_change()"
        )
        op.execute(
            "CREATE TRIGGER key_events_no_truncate BEFORE TRUNCATE ON key_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION key_events_refuse_change()"
        )
    else:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER key_events_no_{operation.lower()} "
                f"BEFORE {operation} ON key_events "
                f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}: {operation} refused'); END"
            )


def _drop_append_only_guard() -> None:
    if _dialect() == "postgresql":
        op.execute("DROP TRIGGER key_events_no_truncate ON key_events")
        op.execute("DROP TRIGGER key_events_append_only ON key_events")
        op.execute("DROP FUNCTION key_events_refuse_change()")
    else:
        op.execute("DROP TRIGGER key_events_no_delete")
        op.execute("DROP TRIGGER key_events_no_update")
