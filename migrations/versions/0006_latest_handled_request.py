"""The last handled request of each kind marked on its row, found by its own index.

A pass asks handled_requests two things: whether the tokens its annotations carry
are settled (uq_handled_requests_key_kind_token), and the last settled token of
each kind (until now ix_handled_requests_latest, ordered by id). The second
index also served the first question, token as a filter: while the table's
statistics date from when it was nearly empty, PostgreSQL takes it, the smaller
one, and a pass reads every request the key settled of that kind.

handled_requests.latest marks the last settled request of each (tenant, key
name, kind), one row by a partial unique index that answers the second question
alone; ix_handled_requests_latest goes, so that a lookup by token has only the
unique index to use. The upgrade marks the row with the highest id of each kind;
the downgrade puts the old index back and drops the column.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LATEST = "latest"


def upgrade() -> None:
    op.add_column(
        "handled_requests",
        sa.Column("latest", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.execute(
        """
        UPDATE handled_requests SET latest = true
        WHERE id IN (SELECT max(id) FROM handled_requests GROUP BY tenant_id, key_name, kind)
        """
    )
    op.create_index(
        "uq_handled_requests_latest",
        "handled_requests",
        ["tenant_id", "key_name", "kind"],
        unique=True,
        postgresql_where=sa.text(_LATEST),
        sqlite_where=sa.text(_LATEST),
    )
    op.drop_index("ix_handled_requests_latest", table_name="handled_requests")


def downgrade() -> None:
    op.create_index(
        "ix_handled_requests_latest",
        "handled_requests",
        ["tenant_id", "key_name", "kind", "id"],
    )
    op.drop_index("uq_handled_requests_latest", table_name="handled_requests")
    # SQLite (3.35+) drops a column that no index refers to any more in place.
    op.drop_column("handled_requests", "latest")
