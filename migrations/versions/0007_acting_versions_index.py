"""An index of the versions a pass can still act on, beside the newest it shows.

A pass reads a key's newest versions, those it can still act on (unsettled or
current, rollback window open, able to expire) and their parents. Until now one
scan of all the key's versions found them, so a pass cost more the longer the
key's history; ix_encryption_keys_acting holds the acting versions alone, by key.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here: keyledger.store.models.ACTING_VERSION as of this revision.
_ACTING_VERSION = (
    "(status IN ('PENDING', 'ACTIVE', 'INACTIVE') OR can_rollback "
    "OR (expires_at IS NOT NULL AND status = 'ROTATED'))"
)


def upgrade() -> None:
    op.create_index(
        "ix_encryption_keys_acting",
        "encryption_keys",
        ["tenant_id", "key_name"],
        postgresql_where=sa.text(_ACTING_VERSION),
        sqlite_where=sa.text(_ACTING_VERSION),
    )


def downgrade() -> None:
    op.drop_index("ix_encryption_keys_acting", table_name="encryption_keys")
