"""Audit rows name the user the admission webhook recorded for the exact thing acted
on, and say so plainly when there is no such record (the webhook was bypassed):
never the operator, which is the actor only of what time does."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from keyledger.api import REQUESTERS, ROTATE_REQUESTED_AT
from keyledger.domain import KeyEventType
from keyledger.lifecycle.requesters import UNATTRIBUTED, Requester, admitted_record
from keyledger.lifecycle.spec import KeySpec
from keyledger.operations.keys import KeyOperations
from keyledger.operations.views import KeyResource
from keyledger.providers.local.backend import LocalBackend
from keyledger.store.engine import make_engine, make_session_factory, upgrade_database
from keyledger.store.repository import KeyLedger

SPEC = {
    "tenant": "acme",
    "keyName": "records",
    "keyType": "PHI_DATA",
    "providerRef": {"kind": "ClusterKeyProvider", "name": "local"},
}


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade_database(url)
    return make_session_factory(make_engine(url))


def _key(annotations: dict[str, str]) -> KeyResource:
    from keyledger.lifecycle.requesters import spec_digest  # noqa: PLC0415

    return KeyResource(
        "uid-1",
        "tenant-acme",
        "phi",
        1,
        KeySpec.from_resource("phi", SPEC),
        annotations,
        spec_digest=spec_digest(SPEC),
    )


def _actors(sessions: sessionmaker[Session]) -> list[tuple[int, KeyEventType, str]]:
    with sessions() as session:
        ledger = KeyLedger(session)
        return [
            (version.version, event.event_type, event.actor)
            for version in ledger.versions("acme", "records")
            for event in ledger.events(version.id)
        ]


def test_changes_without_a_matching_record_are_unattributed(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    operations = KeyOperations(sessions, actor="keyledger-operator")
    backend = LocalBackend(tmp_path / "keys.json")
    alice = Requester("alice", "u-1", ("system:authenticated",))
    created = admitted_record(None, (SPEC, {}), alice)
    operations.reconcile(_key({REQUESTERS: created}), backend, "local")

    # The rotate token arrived without passing the webhook: the record knows nothing of it.
    operations.reconcile(_key({REQUESTERS: created, ROTATE_REQUESTED_AT: "r1"}), backend, "local")

    actors = _actors(sessions)
    assert (1, KeyEventType.CREATED, "alice") in actors
    assert (1, KeyEventType.ACTIVATED, "alice") in actors
    assert (2, KeyEventType.CREATED, UNATTRIBUTED) in actors
    assert (1, KeyEventType.ROTATED, UNATTRIBUTED) in actors
    assert all(actor != "keyledger-operator" for _, _, actor in actors)

    # Recorded by the webhook for this very token: bob's.
    bob = Requester("bob")
    stored = (SPEC, {REQUESTERS: created})
    rotated = admitted_record(stored, (SPEC, {ROTATE_REQUESTED_AT: "r2"}), bob)
    operations.reconcile(_key({REQUESTERS: rotated, ROTATE_REQUESTED_AT: "r2"}), backend, "local")
    assert (3, KeyEventType.CREATED, "bob") in _actors(sessions)
