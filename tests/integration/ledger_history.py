"""A ledger with a past, written through the repository as the operator writes it.

acme/patients   90d rotation: v1 made by alice, rotated on schedule; its rollback
                window ran out but was never closed; v2 is overdue for rotation.
acme/invoices   30d rotation: v1 active for 10 days, compliant.
globex/billing  manual rotation: v1 compromised by carol, v2 rotated in by carol.
globex/archive  no rotation: v1 expired.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from keyledger.domain import KeyEventType, KeyStatus, KeyType, KmsProvider
from keyledger.store.models import EncryptionKeyRecord
from keyledger.store.repository import KeyLedger, Transition

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
NOW = START + timedelta(days=200)
OPERATOR = "keyledger-operator"


@dataclass(frozen=True)
class History:
    now: datetime
    patients_v1: EncryptionKeyRecord
    patients_v2: EncryptionKeyRecord
    billing_v1: EncryptionKeyRecord
    billing_v2: EncryptionKeyRecord


def _create(
    ledger: KeyLedger,
    tenant: str,
    key_name: str,
    version: int,
    at: datetime,
    actor: str,
    rotation_period: timedelta | None,
    parent: EncryptionKeyRecord | None = None,
) -> EncryptionKeyRecord:
    created = ledger.add_pending(
        tenant=tenant,
        key_name=key_name,
        key_type=KeyType.PHI_DATA,
        version=version,
        provider=KmsProvider.LOCAL_SOFTWARE,
        region=None,
        endpoint=None,
        algorithm="AES-256-GCM",
        purpose="history",
        compliance_tags={"hipaa": "true"},
        authorized_services=["records-api"],
        access_policy={},
        parent_id=parent.id if parent else None,
        resource_uid=f"uid-{tenant}-{key_name}",
        resource_name=f"{tenant}/{key_name}",
        now=at,
        why=Transition(actor=actor, correlation_id=f"{key_name}-v{version}"),
        rotation_period=rotation_period,
    )
    record = ledger.get(created.id)
    assert record is not None
    ledger.update_version(
        record,
        KeyEventType.ACTIVATED,
        to_status=KeyStatus.ACTIVE,
        fields={"kms_key_id": f"local:{tenant}/{key_name}/{version}", "activated_at": at},
        now=at,
        why=Transition(actor=actor),
    )
    return record


def _rotate(
    ledger: KeyLedger,
    old: EncryptionKeyRecord,
    at: datetime,
    actor: str,
    rotation_period: timedelta | None,
    *,
    compromised: bool = False,
) -> EncryptionKeyRecord:
    why = Transition(actor=actor, reason="leaked in a log" if compromised else None)
    if compromised:
        ledger.update_version(
            old,
            KeyEventType.COMPROMISED,
            to_status=KeyStatus.COMPROMISED,
            fields={"can_rollback": False},
            now=at,
            why=why,
        )
    else:
        ledger.update_version(
            old,
            KeyEventType.ROTATED,
            to_status=KeyStatus.ROTATED,
            fields={
                "rotated_at": at,
                "rollback_expires_at": at + timedelta(days=7),
                "can_rollback": True,
            },
            now=at,
            why=why,
        )
    return _create(
        ledger, old.tenant_id, old.key_name, old.version + 1, at, actor, rotation_period, old
    )


def write_history(sessions: sessionmaker[Session]) -> History:
    with sessions.begin() as session:
        ledger = KeyLedger(session)
        quarterly = timedelta(days=90)
        patients_v1 = _create(ledger, "acme", "patients", 1, START, "alice", quarterly)
        archive = _create(ledger, "globex", "archive", 1, START, "dave", None)
        billing_v1 = _create(ledger, "globex", "billing", 1, START, "carol", None)
        patients_v2 = _rotate(ledger, patients_v1, START + quarterly, OPERATOR, quarterly)
        billing_v2 = _rotate(
            ledger, billing_v1, START + timedelta(days=120), "carol", None, compromised=True
        )
        ledger.update_version(
            archive,
            KeyEventType.EXPIRED,
            to_status=KeyStatus.EXPIRED,
            fields={"expires_at": START + timedelta(days=150)},
            now=START + timedelta(days=150),
            why=Transition(actor=OPERATOR),
        )
        _create(ledger, "acme", "invoices", 1, NOW - timedelta(days=10), "bob", timedelta(days=30))
        ledger.mark_used(
            {patients_v2.id: NOW - timedelta(hours=3), patients_v1.id: NOW - timedelta(days=60)}
        )
    return History(NOW, patients_v1, patients_v2, billing_v1, billing_v2)
