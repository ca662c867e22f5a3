"""`keyledger grant|revoke ROLE TENANT`, `keyledger grants`: tenants' database roles.

On PostgreSQL the ledger's row-level security shows a role only the tenants
granted to it here. Run as the ledger's owner (the operator's role)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from keyledger.settings import get_settings
from keyledger.store.engine import make_engine, make_session_factory
from keyledger.store.grants import grant_tenant, revoke_tenant, tenant_grants


def change_grant(role: str, tenant: str, *, grant: bool) -> int:
    engine = make_engine(get_settings().ledger_url())
    try:
        if engine.dialect.name != "postgresql":
            print(
                "note: SQLite has no row-level security; grants take effect on PostgreSQL only",
                file=sys.stderr,
            )
        with make_session_factory(engine).begin() as session:
            if grant:
                changed = grant_tenant(session, role, tenant, now=datetime.now(UTC))
            else:
                changed = revoke_tenant(session, role, tenant)
    finally:
        engine.dispose()
    verb = "granted" if grant else "revoked"
    print(
        f"tenant {tenant!r} {verb} {'to' if grant else 'from'} role {role!r}"
        if changed
        else f"nothing to do: role {role!r} {'already has' if grant else 'does not have'} "
        f"tenant {tenant!r}"
    )
    return 0


def list_grants(role: str | None) -> int:
    engine = make_engine(get_settings().ledger_url())
    try:
        with make_session_factory(engine)() as session:
            for row in tenant_grants(session, role):
                print(f"{row.role_name}\t{row.tenant_id}\t{row.granted_at.isoformat()}")
    finally:
        engine.dispose()
    return 0
