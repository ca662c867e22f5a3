"""Row-level security on PostgreSQL: a service's role reads only its tenants' rows.

- tenant_grants(role_name, tenant_id): which database roles may see which
  tenants. Written by the ledger's owner (the operator's role, or a DBA); a
  role reads only its own grants.
- On encryption_keys, key_events and handled_requests, one policy for every
  command: a row is visible (and writable, as far as the role's GRANTs go) when
  its tenant is granted to `current_user` and, if the session set the scope
  `keyledger.tenant` (set_config, transaction-local), when it is that tenant.
  A role setting the scope to a tenant it was not granted sees nothing.
- The operator's role keeps full access by owning the tables: PostgreSQL does
  not apply row security to a table's owner (no FORCE ROW LEVEL SECURITY here),
  nor to superusers or roles with BYPASSRLS. An operator running as a role that
  does not own the tables needs BYPASSRLS.

SQLite has no row-level security: the table is created there too, so that both
databases have one schema, but nothing consults it (README: single-tenant demos).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCOPE_SETTING = "keyledger.tenant"
TENANT_TABLES = ("encryption_keys", "key_events", "handled_requests")
POLICY = "tenant_isolation"

# Granted to the role, and the session's scope (SCOPE_SETTING) unset or that tenant.
_GRANTED_AND_IN_SCOPE = """
    tenant_id IN (
        SELECT grants.tenant_id FROM tenant_grants AS grants
        WHERE grants.role_name = current_user
    )
    AND coalesce(nullif(current_setting('keyledger.tenant', true), ''), tenant_id) = tenant_id
"""


def upgrade() -> None:
    op.create_table(
        "tenant_grants",
        sa.Column("role_name", sa.String(255), nullable=False),
        sa.Column("tenant_id", sa.String(255), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("role_name", "tenant_id", name=op.f("pk_tenant_grants")),
    )
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE tenant_grants ENABLE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY own_grants ON tenant_grants FOR SELECT USING (role_name = current_user)"
    )
    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {POLICY} ON {table} FOR ALL "
            f"USING ({_GRANTED_AND_IN_SCOPE}) WITH CHECK ({_GRANTED_AND_IN_SCOPE})"
        )


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for table in reversed(TENANT_TABLES):
            op.execute(f"DROP POLICY {POLICY} ON {table}")
            op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        op.execute("DROP POLICY own_grants ON tenant_grants")
    op.drop_table("tenant_grants")
