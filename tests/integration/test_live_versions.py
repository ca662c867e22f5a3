"""A pass reads a key's live versions only, and decides exactly as it would with all.

A key is rotated on schedule for months (versions expire, windows close), rolled
back and compromised on the way; at every step the planner's next action and the
status built from `KeyLedger.live_versions` equal those built from every version,
and by the end the live versions are far fewer than all of them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from keyledger.api import COMPROMISED_REQUESTED_AT, ROLLBACK_REQUESTED_AT
from keyledger.lifecycle.plan import plan_next
from keyledger.lifecycle.requests import pending_requests
from keyledger.lifecycle.spec import KeySpec
from keyledger.lifecycle.status import VERSION_HISTORY_LIMIT, build_status
from keyledger.lifecycle.versions import KeyVersion
from keyledger.operations.keys import LIVE_RECENT, KeyOperations
from keyledger.operations.views import KeyResource, to_version
from keyledger.providers.local.backend import LocalBackend
from keyledger.store.engine import make_session_factory
from keyledger.store.repository import KeyLedger

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _key(annotations: dict[str, str]) -> KeyResource:
    spec = KeySpec.from_resource(
        "phi",
        {
            "tenant": "acme",
            "keyType": "PHI_DATA",
            "providerRef": {"kind": "ClusterKeyProvider", "name": "local"},
            "rotation": {"period": "1d"},
            "rollback": {"window": "12h"},
            "expiry": {"after": "5d"},
        },
    )
    return KeyResource("uid-phi", "tenant-acme", "phi", 1, spec, annotations)


def test_the_live_versions_plan_and_report_what_all_versions_do(
    ledger_engine: Engine, tmp_path: Path
) -> None:
    now = [T0]
    sessions = make_session_factory(ledger_engine)
    operations = KeyOperations(sessions, actor="test", clock=lambda: now[0])
    backend = LocalBackend(tmp_path / "ks.json")
    annotations: dict[str, str] = {}
    compared = 0
    for hour in range(0, 24 * 40, 5):
        now[0] = T0 + timedelta(hours=hour)
        if hour == 24 * 10 + 5:
            annotations[ROLLBACK_REQUESTED_AT] = "back"
        if hour == 24 * 20 + 5:
            annotations[COMPROMISED_REQUESTED_AT] = "leaked"
        key = _key(dict(annotations))
        with sessions() as session:
            ledger = KeyLedger(session)
            every = [to_version(r) for r in ledger.versions("acme", "phi")]
            live = [to_version(r) for r in ledger.live_versions("acme", "phi", LIVE_RECENT)]
        assert [v for v in every if v in live] == live  # a subset, in the same order
        handled = operations._load(key).handled
        requests = pending_requests(key.annotations, handled)
        assert plan_next(key.spec, live, requests, now[0]) == plan_next(
            key.spec, every, requests, now[0]
        )
        assert _status(key, live, now[0]) == _status(key, every, now[0])
        compared += 1
        operations.reconcile(key, backend, "local")
    assert compared > 150
    assert len(every) > 30
    assert len(live) <= VERSION_HISTORY_LIMIT + 6


def _status(key: KeyResource, versions: list[KeyVersion], now: datetime) -> object:
    status = build_status(key.spec, versions, "local", now)
    return status.fields, status.conditions, status.next_due
