"""Ledger changes told to clients at once; refused opens and break-glass opens recorded.

- PostgreSQL: a trigger on encryption_keys calls pg_notify on the channel
  `keyledger_key_changes` whenever a version is added or changes status, so
  that every writer (the operator, a migration, a DBA's UPDATE) is covered and
  clients listening drop their caches for that key at once. The payload names
  the tenant, key name, version id and status: references, never key material.
  SQLite has no such channel: clients there keep re-reading the ledger.
- encryption_keys.last_refused_at: when a client last refused to open data
  under the version (compromised): with last_used_at it tells since when a
  version has not been needed, i.e. when it is safe to destroy.
- key_events.event_type accepts BREAK_GLASS_OPENED.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNEL = "keyledger_key_changes"
EVENT_TYPE_CHECK = "ck_key_events_key_event_type"
# Frozen here, as in 0001: later enum changes must not change what this revision does.
EVENT_TYPES_BEFORE = (
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
EVENT_TYPES_AFTER = (*EVENT_TYPES_BEFORE, "BREAK_GLASS_OPENED")
APPEND_ONLY_MESSAGE = "key_events is append-only"


def upgrade() -> None:
    op.add_column(
        "encryption_keys", sa.Column("last_refused_at", sa.DateTime(timezone=True), nullable=True)
    )
    _allow_event_types(EVENT_TYPES_AFTER)
    if _dialect() == "postgresql":
        _create_change_notifications()


def downgrade() -> None:
    kept = op.get_bind().execute(
        sa.text("SELECT count(*) FROM key_events WHERE event_type = 'BREAK_GLASS_OPENED'")
    )
    if kept.scalar_one():
        # The audit trail is append-only: refuse rather than drop what 0001 cannot hold.
        raise RuntimeError(
            "key_events holds BREAK_GLASS_OPENED rows, which revision 0001 cannot hold; "
            "the audit trail is append-only, so the ledger stays at 0003"
        )
    if _dialect() == "postgresql":
        _drop_change_notifications()
    _allow_event_types(EVENT_TYPES_BEFORE)
    # SQLite (3.35+) drops a column that nothing else refers to in place.
    op.drop_column("encryption_keys", "last_refused_at")


def _dialect() -> str:
    return op.get_context().dialect.name


def _allow_event_types(values: Sequence[str]) -> None:
    allowed = ", ".join(f"'{value}'" for value in values)
    if _dialect() == "postgresql":
        op.drop_constraint(op.f(EVENT_TYPE_CHECK), "key_events", type_="check")
        op.create_check_constraint(
            op.f(EVENT_TYPE_CHECK), "key_events", f"event_type IN ({allowed})"
        )
        return
    # SQLite changes a CHECK only by rebuilding the table (rows copied as they are);
    # the append-only triggers go with the old table and are put back on the new one.
    _sqlite_append_only_guard(create=False)
    with op.batch_alter_table("key_events", recreate="always") as batch:
        batch.drop_constraint(op.f(EVENT_TYPE_CHECK), type_="check")
        batch.create_check_constraint(op.f(EVENT_TYPE_CHECK), f"event_type IN ({allowed})")
    _sqlite_append_only_guard(create=True)


def _sqlite_append_only_guard(*, create: bool) -> None:
    for operation in ("UPDATE", "DELETE"):
        name = f"key_events_no_{operation.lower()}"
        if not create:
            op.execute(f"DROP TRIGGER {name}")
            continue
        op.execute(
            f"CREATE TRIGGER {name} BEFORE {operation} ON key_events "
            f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}: {operation} refused'); END"
        )


def _create_change_notifications() -> None:
    # After each row, sent at COMMIT (never for a rolled-back change), one per
    # distinct payload. last_used_at and other bookkeeping do not notify: only a
    # new version or a status change moves what a client may seal or open with.
    op.execute(
        f"""
        CREATE FUNCTION keyledger_notify_key_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify(
                '{CHANNEL}',
                json_build_object(
                    'tenant', NEW.tenant_id,
                    'key', NEW.key_name,
                    'id', NEW.id,
                    'version', NEW.version,
                    'status', NEW.status
                )::text
            );
            RETURN NULL;
        END;
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER encryption_keys_notify_insert AFTER INSERT ON encryption_keys "
        "FOR EACH ROW EXECUTE FUNCTION keyledger_notify_key_change()"
    )
    op.execute(
        "CREATE TRIGGER encryption_keys_notify_status AFTER UPDATE OF status ON encryption_keys "
        "FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) "
        "EXECUTE FUNCTION keyledger_notify_key_change()"
    )


def _drop_change_notifications() -> None:
    op.execute("DROP TRIGGER encryption_keys_notify_status ON encryption_keys")
    op.execute("DROP TRIGGER encryption_keys_notify_insert ON encryption_keys")
    op.execute("DROP FUNCTION keyledger_notify_key_change()")
