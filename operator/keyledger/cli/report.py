"""`keyledger report [--tenant T] [--format table|json|csv]`: the compliance report.

Reads the ledger only: versions, the rotation period recorded with each
version's CREATED audit row, who compromised a version (its COMPROMISED row),
and the audit chains, verified."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyledger.compliance import (
    ComplianceReport,
    VersionFacts,
    build_report,
    render_csv,
    render_json,
    render_table,
)
from keyledger.domain import KeyEventType
from keyledger.errors import InvalidSpec
from keyledger.lifecycle.durations import parse_duration
from keyledger.settings import get_settings
from keyledger.store.audit import verify_chains
from keyledger.store.engine import make_engine, make_session_factory
from keyledger.store.models import EncryptionKeyRecord, KeyEventRecord
from keyledger.store.repository import ROTATION_PERIOD

RENDERERS = {"table": render_table, "json": render_json, "csv": render_csv}


def read_report(session: Session, tenant: str | None, now: datetime) -> ComplianceReport:
    keys = select(EncryptionKeyRecord)
    created = select(
        KeyEventRecord.key_id,
        KeyEventRecord.event_type,
        KeyEventRecord.actor,
        KeyEventRecord.details,
    ).where(KeyEventRecord.event_type.in_((KeyEventType.CREATED, KeyEventType.COMPROMISED)))
    if tenant is not None:
        keys = keys.where(EncryptionKeyRecord.tenant_id == tenant)
        created = created.where(KeyEventRecord.tenant_id == tenant)
    periods = {}
    compromised_by = {}
    for key_id, event_type, actor, details in session.execute(created):
        if event_type is KeyEventType.COMPROMISED:
            compromised_by[key_id] = actor
            continue
        written = (details or {}).get(ROTATION_PERIOD)
        if key_id is not None and isinstance(written, str):
            try:
                periods[key_id] = parse_duration(written, "rotation period")
            except InvalidSpec:
                continue  # not ours to fix here; the version shows no period
    versions = [
        VersionFacts(
            id=r.id,
            tenant=r.tenant_id,
            key_name=r.key_name,
            version=r.version,
            status=r.status,
            created_at=r.created_at,
            activated_at=r.activated_at,
            expires_at=r.expires_at,
            rotated_at=r.rotated_at,
            last_used_at=r.last_used_at,
            can_rollback=r.can_rollback,
            rollback_expires_at=r.rollback_expires_at,
            created_by=r.created_by,
            rotated_by=r.rotated_by,
            rotation_period=periods.get(r.id),
            compromised_by=compromised_by.get(r.id),
        )
        for r in session.scalars(keys)
    ]
    return build_report(versions, verify_chains(session, tenant), now=now, tenant=tenant)


def report(tenant: str | None, fmt: str, out: TextIO | None = None) -> int:
    """Print the report; exit 0 (findings are the report's content, not an error)."""
    engine = make_engine(get_settings().ledger_url())
    try:
        with make_session_factory(engine)() as session:
            built = read_report(session, tenant, datetime.now(UTC))
    finally:
        engine.dispose()
    (out or sys.stdout).write(RENDERERS[fmt](built))
    return 0
