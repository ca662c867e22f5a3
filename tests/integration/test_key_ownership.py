"""Who may manage a (tenant, key name): the resource that created it, a resource
replacing it under the same namespace/name, or anyone once it was released."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from keyledger.api import PAUSED
from keyledger.domain import KeyEventType
from keyledger.errors import InvalidSpec
from keyledger.lifecycle.spec import KeySpec
from keyledger.operations.keys import KeyOperations
from keyledger.operations.views import KeyResource
from keyledger.providers.local.backend import LocalBackend
from keyledger.store.engine import make_engine, make_session_factory, upgrade_database
from keyledger.store.repository import KeyLedger


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade_database(url)
    return make_session_factory(make_engine(url))


def _resource(uid: str, name: str) -> KeyResource:
    spec = KeySpec.from_resource(
        name,
        {
            "tenant": "acme",
            "keyName": "records",
            "keyType": "PHI_DATA",
            "providerRef": {"kind": "ClusterKeyProvider", "name": "local"},
        },
    )
    return KeyResource(uid, "tenant-acme", name, 1, spec, {})


def test_a_resource_recreated_under_the_same_name_takes_its_history_back(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    backend = LocalBackend(tmp_path / "keys.json")
    operations = KeyOperations(sessions, actor="test")
    operations.reconcile(_resource("uid-before", "phi"), backend, "local")
    with sessions() as session:
        before = KeyLedger(session).active("acme", "records")
        assert before is not None

    # The cluster was rebuilt and the same YAML applied again: a new uid, the same name.
    outcome = operations.reconcile(_resource("uid-after", "phi"), backend, "local")

    with sessions() as session:
        ledger = KeyLedger(session)
        versions = ledger.versions("acme", "records")
        assert [(v.id, v.kms_key_id) for v in versions] == [(before.id, before.kms_key_id)]
        assert versions[0].resource_uid == "uid-after"
        assert KeyEventType.ADOPTED in [e.event_type for e in ledger.events(before.id)]
    assert "Adopted" in [e.reason for e in outcome.events]

    # Another resource naming the same key is still refused, naming the manager.
    with pytest.raises(InvalidSpec, match="managed by EncryptionKey tenant-acme/phi") as refused:
        operations.reconcile(_resource("uid-other", "phi-copy"), backend, "local")
    assert refused.value.reason == "KeyNameTaken"


def test_a_paused_resource_neither_takes_over_nor_sees_another_ones_key(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    backend = LocalBackend(tmp_path / "keys.json")
    operations = KeyOperations(sessions, actor="test")
    operations.reconcile(_resource("uid-owner", "phi"), backend, "local")
    paused = replace(_resource("uid-other", "phi-copy"), annotations={PAUSED: "true"})
    with pytest.raises(InvalidSpec, match="managed by EncryptionKey tenant-acme/phi"):
        operations.reconcile(paused, backend, "local")
    with sessions() as session:
        assert {v.resource_uid for v in KeyLedger(session).versions("acme", "records")} == {
            "uid-owner"
        }


def test_deleting_a_resource_releases_only_what_it_owns(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """A refused second resource for the key name is deleted (or the owner's delete
    handler runs again after another resource took the name over): the owner keeps it."""
    backend = LocalBackend(tmp_path / "keys.json")
    operations = KeyOperations(sessions, actor="test")
    owner, refused = _resource("uid-owner", "phi"), _resource("uid-other", "other")
    operations.reconcile(owner, backend, "local")
    with pytest.raises(InvalidSpec, match=r"spec\.keyName"):
        operations.reconcile(refused, backend, "local")

    operations.retire(refused, backend, None)
    with sessions() as session:
        (version,) = KeyLedger(session).versions("acme", "records")
        assert (version.resource_uid, version.resource_name) == ("uid-owner", "tenant-acme/phi")

    operations.retire(owner, backend, None)
    operations.reconcile(refused, backend, "local")  # the name is free: taken over
    operations.retire(owner, backend, None)  # the owner's delete handler, run again
    with sessions() as session:
        (version,) = KeyLedger(session).versions("acme", "records")
        assert (version.resource_uid, version.resource_name) == ("uid-other", "tenant-acme/other")


def test_a_drift_check_reports_nothing_for_a_key_the_resource_does_not_manage(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """A refused second resource for the key name is not shown Ready from the owner's
    versions by its drift checks; the refusal stands until its reconcile claims it."""
    backend = LocalBackend(tmp_path / "keys.json")
    operations = KeyOperations(sessions, actor="test")
    owner, refused = _resource("uid-owner", "phi"), _resource("uid-other", "other")
    operations.reconcile(owner, backend, "local")

    checked = operations.check_drift(refused, backend, "local", was_drifted=False)
    assert not checked.scheduled and checked.status == {}
    shown = operations.check_drift(owner, backend, "local", was_drifted=False)
    assert shown.status["version"] == 1  # the owner's own check does report
