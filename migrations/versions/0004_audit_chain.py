"""key_events hash-chained per tenant: prev_event_id, prev_hash, row_hash.

Each audit row links to its tenant's previous row (its id and hash) and carries
the SHA-256 of its own canonical serialization (keyledger.store.audit), so that
`keyledger audit verify` finds a row changed, inserted or deleted behind
keyledger's back. The upgrade chains the rows already there, oldest first, in
the same transaction; key_events refuses UPDATE, so its append-only guard is
lifted for that transaction only (PostgreSQL: the row trigger disabled and
enabled again; SQLite: the triggers dropped and created again) and is back
before COMMIT. The downgrade drops the three columns and keeps every row.

The hash is taken with keyledger.store.audit.canonical_event, not a frozen copy:
the rows chained here must verify with exactly the code that checks them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from keyledger.store.audit import GENESIS, canonical_event

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY_MESSAGE = "key_events is append-only"
CHAIN_COLUMNS = ("prev_event_id", "prev_hash", "row_hash")


def _dialect() -> str:
    return op.get_context().dialect.name


def upgrade() -> None:
    op.add_column(
        "key_events",
        sa.Column(
            "prev_event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
    )
    op.add_column("key_events", sa.Column("prev_hash", sa.String(64), nullable=True))
    op.add_column("key_events", sa.Column("row_hash", sa.String(64), nullable=True))
    if _dialect() == "postgresql":
        op.execute("ALTER TABLE key_events DISABLE TRIGGER key_events_append_only")
        _chain_existing_rows()
        op.execute("ALTER TABLE key_events ENABLE TRIGGER key_events_append_only")
        op.alter_column("key_events", "prev_hash", existing_type=sa.String(64), nullable=False)
        op.alter_column("key_events", "row_hash", existing_type=sa.String(64), nullable=False)
    else:
        _sqlite_append_only_guard(create=False)
        _chain_existing_rows()
        # SQLite makes a column NOT NULL only by rebuilding the table, rows copied as they are.
        with op.batch_alter_table("key_events", recreate="always") as batch:
            batch.alter_column("prev_hash", existing_type=sa.String(64), nullable=False)
            batch.alter_column("row_hash", existing_type=sa.String(64), nullable=False)
        _sqlite_append_only_guard(create=True)
    op.create_index("uq_key_events_prev_event_id", "key_events", ["prev_event_id"], unique=True)
    op.create_index("ix_key_events_tenant_chain", "key_events", ["tenant_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_key_events_tenant_chain", table_name="key_events")
    op.drop_index("uq_key_events_prev_event_id", table_name="key_events")
    if _dialect() == "postgresql":
        # Dropping a column rewrites no row through the row triggers.
        for column in reversed(CHAIN_COLUMNS):
            op.drop_column("key_events", column)
        return
    _sqlite_append_only_guard(create=False)
    with op.batch_alter_table("key_events", recreate="always") as batch:
        for column in reversed(CHAIN_COLUMNS):
            batch.drop_column(column)
    _sqlite_append_only_guard(create=True)


def _chain_existing_rows() -> None:
    # Typed columns, so that both databases hand back datetimes, uuids and dicts.
    key_events = sa.table(
        "key_events",
        sa.column("id", sa.BigInteger),
        sa.column("occurred_at", sa.DateTime(timezone=True)),
        sa.column("key_id", sa.Uuid),
        sa.column("tenant_id", sa.String),
        sa.column("key_name", sa.String),
        sa.column("version", sa.Integer),
        sa.column("event_type", sa.String),
        sa.column("from_status", sa.String),
        sa.column("to_status", sa.String),
        sa.column("actor", sa.String),
        sa.column("correlation_id", sa.String),
        sa.column("reason", sa.Text),
        sa.column("details", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
        sa.column("prev_event_id", sa.BigInteger),
        sa.column("prev_hash", sa.String),
        sa.column("row_hash", sa.String),
    )
    bind = op.get_bind()
    heads: dict[str, tuple[int, str]] = {}
    links: list[dict[str, Any]] = []
    for row in bind.execute(sa.select(key_events).order_by(key_events.c.id)).mappings():
        head = heads.get(row["tenant_id"])
        prev_id, prev_hash = (None, GENESIS) if head is None else head
        content = canonical_event(
            tenant_id=row["tenant_id"],
            key_id=row["key_id"],
            key_name=row["key_name"],
            version=row["version"],
            event_type=row["event_type"],
            from_status=row["from_status"],
            to_status=row["to_status"],
            actor=row["actor"],
            correlation_id=row["correlation_id"],
            reason=row["reason"],
            details=row["details"],
            occurred_at=row["occurred_at"],
            prev_event_id=prev_id,
            prev_hash=prev_hash,
        )
        row_hash = hashlib.sha256(content).hexdigest()
        heads[row["tenant_id"]] = (row["id"], row_hash)
        links.append(
            {"row_id": row["id"], "link_id": prev_id, "link_hash": prev_hash, "own_hash": row_hash}
        )
    if links:
        bind.execute(
            key_events.update()
            .where(key_events.c.id == sa.bindparam("row_id"))
            .values(
                prev_event_id=sa.bindparam("link_id"),
                prev_hash=sa.bindparam("link_hash"),
                row_hash=sa.bindparam("own_hash"),
            ),
            links,
        )


def _sqlite_append_only_guard(*, create: bool) -> None:
    # As 0001 creates them.
    for operation in ("UPDATE", "DELETE"):
        name = f"key_events_no_{operation.lower()}"
        if not create:
            op.execute(f"DROP TRIGGER {name}")
            continue
        op.execute(
            f"CREATE TRIGGER {name} BEFORE {operation} ON key_events "
            f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}: {operation} refused'); END"
        )
