"""Which database roles may see which tenants' rows (PostgreSQL row-level security)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from keyledger.store.models import TenantGrantRecord


def grant_tenant(session: Session, role: str, tenant: str, *, now: datetime) -> bool:
    """Let `role` see `tenant`'s rows; False when it already could."""
    if session.get(TenantGrantRecord, (role, tenant)) is not None:
        return False
    session.add(TenantGrantRecord(role_name=role, tenant_id=tenant, granted_at=now))
    session.flush()
    return True


def revoke_tenant(session: Session, role: str, tenant: str) -> bool:
    """Hide `tenant`'s rows from `role` again; False when it was not granted."""
    result = session.execute(
        delete(TenantGrantRecord).where(
            TenantGrantRecord.role_name == role, TenantGrantRecord.tenant_id == tenant
        )
    )
    return bool(getattr(result, "rowcount", 0))


def tenant_grants(session: Session, role: str | None = None) -> Sequence[TenantGrantRecord]:
    query = select(TenantGrantRecord).order_by(
        TenantGrantRecord.role_name, TenantGrantRecord.tenant_id
    )
    if role is not None:
        query = query.where(TenantGrantRecord.role_name == role)
    return session.scalars(query).all()
