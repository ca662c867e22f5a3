"""Ledger changes reach a client at once on PostgreSQL (LISTEN/NOTIFY), also after its
listening connection dropped; on SQLite the polling re-read is the way.

The clients here re-read the ledger once an hour at most, so anything they notice
within the wait loops' deadlines came through a notification."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from keyledger.api import ROTATE_REQUESTED_AT
from keyledger.client import KeyledgerClient
from keyledger.client.envelope import parse
from keyledger.lifecycle.spec import KeySpec
from keyledger.operations.keys import KeyOperations
from keyledger.operations.views import KeyResource
from keyledger.providers.local.backend import LocalBackend
from keyledger.store.engine import make_session_factory
from keyledger.store.repository import KeyLedger

HOUR = 3600.0
postgresql_only = pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)


class Key:
    def __init__(self, sessions: sessionmaker[Session], backend: LocalBackend) -> None:
        self.sessions = sessions
        self.backend = backend
        self.operations = KeyOperations(sessions, actor="test")
        spec = KeySpec.from_resource(
            "records",
            {
                "tenant": "acme",
                "keyType": "PHI_DATA",
                "providerRef": {"kind": "ClusterKeyProvider", "name": "local"},
            },
        )
        self.resource = KeyResource(str(uuid.uuid4()), "acme", "records", 1, spec, {})
        self.operations.reconcile(self.resource, backend, "local")
        self.rotations = 0

    def rotate(self) -> uuid.UUID:
        self.rotations += 1
        r = self.resource
        annotations = {ROTATE_REQUESTED_AT: f"rotate-{self.rotations}"}
        self.resource = KeyResource(r.uid, r.namespace, r.name, r.generation, r.spec, annotations)
        self.operations.reconcile(self.resource, self.backend, "local")
        with self.sessions() as session:
            active = KeyLedger(session).active("acme", "records")
            assert active is not None
            return active.id


@pytest.fixture
def key(ledger_engine: Engine, tmp_path: Path) -> Key:
    return Key(make_session_factory(ledger_engine), LocalBackend(tmp_path / "keys.json"))


@pytest.fixture
def client_for(ledger_url: str, key: Key) -> Iterator[Callable[..., KeyledgerClient]]:
    clients: list[KeyledgerClient] = []

    def make(**options: object) -> KeyledgerClient:
        clients.append(KeyledgerClient(ledger_url, [key.backend], **options))  # type: ignore[arg-type]
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def sealed_under(client: KeyledgerClient) -> uuid.UUID:
    return parse(client.encrypt("acme", "records", b"phi", {})).key_id


def seals_under_within(client: KeyledgerClient, expected: uuid.UUID, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (seen := sealed_under(client)) != expected:
        assert time.monotonic() < deadline, f"still sealing under {seen}"
        time.sleep(0.01)


@pytest.mark.postgres
@postgresql_only
def test_a_rotation_reaches_a_listening_client_at_once(
    key: Key, client_for: Callable[..., KeyledgerClient]
) -> None:
    told = client_for(version_check_s=HOUR)
    deaf = client_for(version_check_s=HOUR, listen=False)
    assert told.listening(timeout=10)
    before = sealed_under(told)
    assert sealed_under(deaf) == before

    after = key.rotate()
    seals_under_within(told, after, 1.0)
    assert sealed_under(deaf) == before  # only the notification moved the other one


@pytest.mark.postgres
@postgresql_only
def test_listening_survives_a_dropped_connection(
    key: Key, client_for: Callable[..., KeyledgerClient], ledger_engine: Engine
) -> None:
    told = client_for(version_check_s=HOUR)
    assert told.listening(timeout=10)
    sealed_under(told)

    def listeners() -> set[int]:
        with ledger_engine.connect() as connection:
            rows = connection.execute(
                text("SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN %'")
            )
            return {pid for (pid,) in rows}

    (dropped,) = listeners()
    with ledger_engine.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": dropped})
    deadline = time.monotonic() + 30
    while not (listeners() - {dropped}) or not told.listening():
        assert time.monotonic() < deadline, "the client did not listen again"
        time.sleep(0.05)

    seals_under_within(told, key.rotate(), 1.0)


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_on_sqlite_the_polling_re_read_is_the_way(
    key: Key, client_for: Callable[..., KeyledgerClient]
) -> None:
    polling = client_for(version_check_s=0.2)
    assert not polling.listening()
    sealed_under(polling)
    seals_under_within(polling, key.rotate(), 30.0)
