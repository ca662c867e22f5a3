"""Handled request tokens in a table of their own, found by index.

Until now a key's handled rotate/rollback/compromise tokens were found by
reading every key_events row of the key on every pass, so a pass grew slower
with the key's history. handled_requests holds one row per settled token; the
upgrade copies the tokens recorded in key_events (which stay as they are: the
audit trail is append-only), the downgrade drops the table again.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As keyledger.lifecycle.requests.MAX_TOKEN_LENGTH spells longer tokens: by digest.
_MAX_TOKEN_LENGTH = 128


def upgrade() -> None:
    op.create_table(
        "handled_requests",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(255), nullable=False),
        sa.Column("key_name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("token", sa.String(160), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.Uuid(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_handled_requests")),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["encryption_keys.id"],
            name=op.f("fk_handled_requests_key_id_encryption_keys"),
            ondelete="RESTRICT",
        ),
    )
    op.create_index(
        "uq_handled_requests_key_kind_token",
        "handled_requests",
        ["tenant_id", "key_name", "kind", "token"],
        unique=True,
    )
    op.create_index(
        "ix_handled_requests_latest",
        "handled_requests",
        ["tenant_id", "key_name", "kind", "id"],
    )
    _copy_tokens_from_key_events()


def downgrade() -> None:
    op.drop_index("ix_handled_requests_latest", table_name="handled_requests")
    op.drop_index("uq_handled_requests_key_kind_token", table_name="handled_requests")
    op.drop_table("handled_requests")


def _copy_tokens_from_key_events() -> None:
    # Typed tables, so that both databases hand back datetimes, uuids and dicts.
    key_events = sa.table(
        "key_events",
        sa.column("id", sa.BigInteger),
        sa.column("tenant_id", sa.String),
        sa.column("key_name", sa.String),
        sa.column("occurred_at", sa.DateTime(timezone=True)),
        sa.column("key_id", sa.Uuid),
        sa.column("details", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
    )
    handled_requests = sa.table(
        "handled_requests",
        sa.column("tenant_id", sa.String),
        sa.column("key_name", sa.String),
        sa.column("kind", sa.String),
        sa.column("token", sa.String),
        sa.column("handled_at", sa.DateTime(timezone=True)),
        sa.column("key_id", sa.Uuid),
    )
    events = op.get_bind().execute(
        sa.select(
            key_events.c.tenant_id,
            key_events.c.key_name,
            key_events.c.occurred_at,
            key_events.c.key_id,
            key_events.c.details,
        )
        .where(key_events.c.details.is_not(None))
        .order_by(key_events.c.id)
    )
    seen: set[tuple[str, str, str, str]] = set()
    rows: list[dict[str, Any]] = []
    for tenant, key_name, occurred_at, key_id, details in events:
        kind, token = (details or {}).get("request"), (details or {}).get("token")
        if not kind or not token:
            continue
        identity = (tenant, key_name, str(kind), _bounded(str(token)))
        if identity in seen:
            continue  # a rollback writes two audit rows for one request
        seen.add(identity)
        rows.append(
            {
                "tenant_id": tenant,
                "key_name": key_name,
                "kind": identity[2],
                "token": identity[3],
                "handled_at": occurred_at,
                "key_id": key_id,
            }
        )
    if rows:
        op.bulk_insert(handled_requests, rows)


def _bounded(token: str) -> str:
    if len(token) <= _MAX_TOKEN_LENGTH:
        return token
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()
