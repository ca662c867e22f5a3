"""One round trip for a tenant's audit chain head: its lock, then its newest row.

Every ledger write links its audit rows to the tenant's chain under a
transaction-scoped advisory lock keyed by the tenant (keyledger.store.audit):
the lock, then a read of the chain's newest row, were two statements, made while
every other writer of the tenant waits. keyledger_chain_head does both in one
call. It is VOLATILE, so its read takes a snapshot after the lock is granted and
sees the row the previous holder committed; a single SELECT calling the lock
function would read with a snapshot taken before it waited. It runs as its
caller (SECURITY INVOKER), under the caller's row-level security.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite's BEGIN IMMEDIATE already lets one writer in at a time
    op.execute(
        """
        CREATE FUNCTION keyledger_chain_head(lock_class integer, tenant text)
        RETURNS TABLE (head_id bigint, head_hash varchar)
        LANGUAGE plpgsql VOLATILE SECURITY INVOKER
        AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock(lock_class, hashtext(tenant));
            RETURN QUERY
                SELECT e.id, e.row_hash FROM key_events AS e
                WHERE e.tenant_id = tenant
                ORDER BY e.id DESC
                LIMIT 1;
        END
        $$
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION keyledger_chain_head(integer, text)")
