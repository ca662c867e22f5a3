"""Ledger queries the fault and outage tests share: what was done, and how often."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from keyledger.store.models import EncryptionKeyRecord, HandledRequestRecord


def handled_counts(
    sessions: sessionmaker[Session], tenant: str, kind: str
) -> dict[tuple[str, str], int]:
    """(key name, token) -> how many times the ledger settled that `kind` request."""
    with sessions() as session:
        found = session.execute(
            select(HandledRequestRecord.key_name, HandledRequestRecord.token, func.count())
            .where(HandledRequestRecord.tenant_id == tenant, HandledRequestRecord.kind == kind)
            .group_by(HandledRequestRecord.key_name, HandledRequestRecord.token)
        )
        return {(key, token): count for key, token, count in found}


def versions_by_key(
    sessions: sessionmaker[Session], tenant: str
) -> dict[str, list[tuple[int, str]]]:
    """Key name -> its ledger versions (newest first) with their status."""
    with sessions() as session:
        found = session.execute(
            select(
                EncryptionKeyRecord.key_name,
                EncryptionKeyRecord.version,
                EncryptionKeyRecord.status,
            )
            .where(EncryptionKeyRecord.tenant_id == tenant)
            .order_by(EncryptionKeyRecord.key_name, EncryptionKeyRecord.version.desc())
        )
        result: dict[str, list[tuple[int, str]]] = {}
        for key, version, status in found:
            result.setdefault(key, []).append((version, status.value))
        return result


def kms_refs(sessions: sessionmaker[Session], tenant: str) -> dict[tuple[str, int], str | None]:
    """(key name, version) -> the KMS reference the ledger recorded for it."""
    with sessions() as session:
        found = session.execute(
            select(
                EncryptionKeyRecord.key_name,
                EncryptionKeyRecord.version,
                EncryptionKeyRecord.kms_key_id,
            ).where(EncryptionKeyRecord.tenant_id == tenant)
        )
        return {(key, version): ref for key, version, ref in found}
