"""The client's cache of ledger versions: a notification is never undone by a read
that began before it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from keyledger.client.versions import LedgerVersions
from keyledger.lifecycle.spec import KeySpec
from keyledger.operations.keys import KeyOperations
from keyledger.operations.views import KeyResource
from keyledger.providers.local.backend import LocalBackend
from keyledger.store.engine import make_engine, upgrade_database


class Sessions(sessionmaker[Session]):
    """Counts ledger reads; can run something while a read is under way."""

    reads: int
    during_read: list[Callable[[], None]]

    def __call__(self, **local_kw: Any) -> Session:
        self.reads += 1
        for action in self.during_read:
            action()
        return super().__call__(**local_kw)


def _ledger(tmp_path: Path) -> Sessions:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade_database(url)
    sessions = Sessions(make_engine(url), expire_on_commit=False)
    sessions.reads, sessions.during_read = 0, []
    spec = KeySpec.from_resource(
        "records",
        {
            "tenant": "acme",
            "keyType": "PHI_DATA",
            "providerRef": {"kind": "ClusterKeyProvider", "name": "local"},
        },
    )
    key = KeyResource(str(uuid.uuid4()), "acme", "records", 1, spec, {})
    KeyOperations(sessions, actor="test").reconcile(
        key, LocalBackend(tmp_path / "keys.json"), "local"
    )
    sessions.reads = 0
    return sessions


def test_cached_until_forgotten(tmp_path: Path) -> None:
    sessions = _ledger(tmp_path)
    versions = LedgerVersions(sessions, version_check_s=3600, max_entries=100)
    first = versions.active("acme", "records")
    assert versions.active("acme", "records") == first
    assert versions.by_id(first.id, "acme") == first
    assert sessions.reads == 2  # one per kind of lookup, then from the cache
    versions.forget("acme", "records", None)
    versions.active("acme", "records")
    versions.by_id(first.id, "acme")  # forgotten too: same tenant and key
    assert sessions.reads == 4


def test_a_read_overtaken_by_a_notification_is_not_cached(tmp_path: Path) -> None:
    sessions = _ledger(tmp_path)
    versions = LedgerVersions(sessions, version_check_s=3600, max_entries=100)
    # The notification arrives while the read is under way: what it read may be stale.
    sessions.during_read = [lambda: versions.forget("acme", "records", None)]
    versions.active("acme", "records")
    sessions.during_read = []
    versions.active("acme", "records")
    versions.active("acme", "records")
    assert sessions.reads == 2  # read again once, then cached
