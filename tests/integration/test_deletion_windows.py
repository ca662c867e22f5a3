"""A provider check enforces deletion windows the KMS does not keep itself, and audits it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from keyledger.domain import KeyEventType, KeyStatus, KeyType, KmsProvider
from keyledger.lifecycle.spec import ProviderKind
from keyledger.operations.backends import BackendCache
from keyledger.operations.health import check_provider
from keyledger.operations.keys import KeyOperations
from keyledger.providers.base import KeyVersionRequest, KmsKeyState
from keyledger.providers.local.backend import LocalBackend
from keyledger.providers.local.keystore import read_keystore
from keyledger.settings import Settings
from keyledger.store.engine import make_session_factory
from keyledger.store.repository import KeyLedger, Transition

NOW = datetime.now(UTC)


@dataclass
class _Meta:
    name: str = "dev"
    namespace: str | None = None


@dataclass
class _Provider:
    metadata: _Meta = field(default_factory=_Meta)
    spec: dict[str, Any] = field(default_factory=lambda: {"local": {"keystore": "windows"}})
    status: dict[str, Any] = field(default_factory=dict)


def test_due_versions_are_destroyed_and_audited(ledger_engine: Engine, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    keystore = LocalBackend(settings.keystore_dir() / "windows.json")
    sessions = make_session_factory(ledger_engine)
    refs = []
    for version in (1, 2):
        ref = keystore.create_key_version(
            KeyVersionRequest(
                tenant="acme",
                key_name="phi",
                version=version,
                algorithm="AES-256-GCM",
                marker=f"m.v{version}",
            )
        ).ref
        refs.append(ref)
        with sessions.begin() as session:
            ledger = KeyLedger(session)
            created = ledger.add_pending(
                tenant="acme",
                key_name="phi",
                key_type=KeyType.PHI_DATA,
                version=version,
                provider=KmsProvider.LOCAL_SOFTWARE,
                region=None,
                endpoint=None,
                algorithm="AES-256-GCM",
                purpose=None,
                compliance_tags={},
                authorized_services=[],
                access_policy={},
                parent_id=None,
                resource_uid="uid",
                resource_name="ns/phi",
                now=NOW,
                why=Transition(actor="test"),
            )
            record = ledger.get(created.id)
            assert record is not None
            ledger.update_version(
                record,
                KeyEventType.ACTIVATED,
                to_status=KeyStatus.ROTATED if version == 1 else KeyStatus.ACTIVE,
                fields={"kms_key_id": ref, "activated_at": NOW},
                now=NOW,
                why=Transition(actor="test"),
            )
    keystore.schedule_deletion(refs[0], 7)
    # Eight days later: rewrite the schedule into the past rather than wait a week.
    path = settings.keystore_dir() / "windows.json"
    with path.open("a") as journal:  # a change, in the keystore's own format
        for key_id, entry in read_keystore(path).items():
            if entry["deletion_date"]:
                past = {**entry, "deletion_date": (NOW - timedelta(days=1)).isoformat()}
                journal.write(json.dumps({"id": key_id, "entry": past}) + "\n")

    keys = KeyOperations(sessions, actor="keyledger-operator")
    outcome = check_provider(
        ProviderKind.CLUSTER, _Provider(), BackendCache(settings, lambda namespace, name: {}), keys
    )

    assert [e.reason for e in outcome.events] == ["DevOnlyBackend", "DeletionWindowEnforced"]
    assert keystore.describe(refs[0]).state is KmsKeyState.MISSING
    assert keystore.describe(refs[1]).state is KmsKeyState.ENABLED
    with sessions() as session:
        ledger = KeyLedger(session)
        destroyed = ledger.by_kms_key_id(refs[0])
        assert destroyed is not None  # the ledger row stays for audit
        assert [e.event_type for e in ledger.events(destroyed.id)][-1] is KeyEventType.DESTROYED
        kept = ledger.by_kms_key_id(refs[1])
        assert kept is not None
        assert KeyEventType.DESTROYED not in [e.event_type for e in ledger.events(kept.id)]
