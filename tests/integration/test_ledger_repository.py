"""The ledger repository on both databases, schema built by the migrations."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from keyledger.domain import KeyEventType, KeyStatus, KeyType, KmsProvider
from keyledger.store.engine import make_session_factory
from keyledger.store.models import EncryptionKeyRecord, HandledRequestRecord
from keyledger.store.repository import KeyLedger, Transition

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
WHY = Transition(actor="test", correlation_id="corr-1")


def _pending(
    ledger: KeyLedger, tenant: str, key_name: str, version: int = 1
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
        purpose="tests",
        compliance_tags={"hipaa": "true"},
        authorized_services=["records-api"],
        access_policy={},
        parent_id=None,
        resource_uid="uid-1",
        resource_name="ns/key",
        now=NOW,
        why=WHY,
    )
    record = ledger.get(created.id)  # the row as the ORM loads it, for update_version
    assert record is not None
    return record


def _activate(ledger: KeyLedger, record: EncryptionKeyRecord, kms_key_id: str) -> None:
    ledger.update_version(
        record,
        KeyEventType.ACTIVATED,
        to_status=KeyStatus.ACTIVE,
        fields={"kms_key_id": kms_key_id, "activated_at": NOW},
        now=NOW,
        why=WHY,
    )


def test_pending_then_active_writes_audit_rows(ledger_engine: Engine) -> None:
    sessions = make_session_factory(ledger_engine)
    with sessions.begin() as session:
        ledger = KeyLedger(session)
        record = _pending(ledger, "acme", "phi")
        _activate(ledger, record, "kms-1")
    with sessions() as session:
        ledger = KeyLedger(session)
        active = ledger.active("acme", "phi")
        assert active is not None and active.kms_key_id == "kms-1"
        assert active.activated_at == NOW
        assert [r.id for r in ledger.active_by_type("acme", KeyType.PHI_DATA)] == [active.id]
        events = ledger.events(active.id)
        assert [(e.event_type, e.from_status, e.to_status) for e in events] == [
            (KeyEventType.CREATED, None, KeyStatus.PENDING),
            (KeyEventType.ACTIVATED, KeyStatus.PENDING, KeyStatus.ACTIVE),
        ]
        assert {e.correlation_id for e in events} == {"corr-1"}


def test_second_active_version_is_refused_by_the_database(ledger_engine: Engine) -> None:
    sessions = make_session_factory(ledger_engine)
    with sessions.begin() as session:
        ledger = KeyLedger(session)
        first = _pending(ledger, "acme", "phi", version=1)
        _activate(ledger, first, "kms-1")
    with pytest.raises(IntegrityError), sessions.begin() as session:
        ledger = KeyLedger(session)
        second = _pending(ledger, "acme", "phi", version=2)
        _activate(ledger, second, "kms-2")


def test_the_last_request_settled_of_each_kind_is_the_latest(ledger_engine: Engine) -> None:
    sessions = make_session_factory(ledger_engine)
    kinds = ("rotate", "rollback", "compromise")
    with sessions.begin() as session:
        ledger = KeyLedger(session)
        record = _pending(ledger, "acme", "phi")
        other = _pending(ledger, "acme", "billing")
        # Two of a kind in one transaction, a third in the next: each takes over.
        ledger.record_request(record, "rotate", "r1", now=NOW)
        ledger.record_request(record, "rotate", "r2", now=NOW)
        ledger.record_request(record, "rollback", "b1", now=NOW)
        ledger.record_request(other, "rotate", "elsewhere", now=NOW)
    with sessions.begin() as session:
        KeyLedger(session).record_request(record, "rotate", "r3", now=NOW)
    with sessions() as session:
        ledger = KeyLedger(session)
        found = ledger.handled_requests("acme", "phi", kinds, {"rotate": "r1", "rollback": "b9"})
        assert found.last == {"rotate": "r3", "rollback": "b1"}
        # The token asked about, and the latest of each kind, which are settled too.
        assert found.handled == {("rotate", "r1"), ("rotate", "r3"), ("rollback", "b1")}
        latest = session.scalars(
            select(HandledRequestRecord.token).where(HandledRequestRecord.latest)
        ).all()
        assert sorted(latest) == ["b1", "elsewhere", "r3"]
        unknown = ledger.handled_requests("acme", "phi", kinds, {"rotate": "r9"})
        assert unknown.handled == {("rotate", "r3"), ("rollback", "b1")}
        # No token asked about, and the latest of the kinds asked about only.
        rotations = ledger.handled_requests("acme", "phi", ("rotate",), {})
        assert rotations.last == {"rotate": "r3"}
        assert rotations.handled == {("rotate", "r3")}


def test_concurrent_writers_wait_instead_of_failing(ledger_engine: Engine) -> None:
    """Operator workers read then write at the same time; none may see 'database is locked'."""
    sessions = make_session_factory(ledger_engine)
    errors: list[BaseException] = []

    def create_and_activate(n: int) -> None:
        try:
            for round_ in range(5):
                key_name = f"key-{n}-{round_}"
                with sessions.begin() as session:
                    ledger = KeyLedger(session)
                    assert ledger.latest("acme", key_name) is None
                    record = _pending(ledger, "acme", key_name)
                with sessions.begin() as session:
                    ledger = KeyLedger(session)
                    found = ledger.get(record.id)
                    assert found is not None
                    _activate(ledger, found, f"kms-{key_name}")
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=create_and_activate, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with sessions() as session:
        assert len(KeyLedger(session).active_by_type("acme", KeyType.PHI_DATA)) == 40
