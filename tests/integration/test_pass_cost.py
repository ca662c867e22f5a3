"""A reconcile pass costs the same however many requests a key has handled.

Handled request tokens are found by index in `handled_requests`, not by reading
the key's audit trail, so a key with 1,000 settled requests in its history
issues exactly the SQL statements of a key with one and reads exactly as many
rows into the ORM (counted on the engine, on SQLite and PostgreSQL). On
PostgreSQL, the database reads no row of that history either: its plans for
the pass's reads filter out nothing, with the statistics of an empty table.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from keyledger.api import ROLLBACK_REQUESTED_AT, ROTATE_REQUESTED_AT
from keyledger.domain import KeyEventType
from keyledger.lifecycle.spec import KeySpec
from keyledger.lifecycle.status import VERSION_HISTORY_LIMIT
from keyledger.operations.keys import KeyOperations
from keyledger.operations.views import KeyResource
from keyledger.providers.local.backend import LocalBackend
from keyledger.store.engine import make_session_factory
from keyledger.store.models import Base
from keyledger.store.repository import KeyLedger, Transition

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def _key(key_name: str, annotations: dict[str, str]) -> KeyResource:
    spec = KeySpec.from_resource(
        key_name,
        {
            "tenant": "acme",
            "keyName": key_name,
            "keyType": "PHI_DATA",
            "providerRef": {"kind": "ClusterKeyProvider", "name": "local"},
        },
    )
    return KeyResource(f"uid-{key_name}", "tenant-acme", key_name, 1, spec, annotations)


@contextmanager
def counted(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements run on `engine`, and one "load <table>" entry per ORM row
    read: a statement that reads the whole history is as long as the history."""
    seen: list[str] = []

    def statement(_conn: Any, _cursor: Any, text: str, *_: Any) -> None:
        seen.append(text)

    def loaded(target: Any, _context: Any) -> None:
        seen.append(f"load {target.__tablename__}")

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(Base, "load", loaded, propagate=True)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(Base, "load", loaded)


def _settle_requests(operations: KeyOperations, key_name: str, count: int) -> None:
    """`count` handled requests in the key's history, as refusals leave them."""
    with operations.sessions.begin() as session:
        ledger = KeyLedger(session)
        current = ledger.active("acme", key_name)
        assert current is not None
        for n in range(count):
            token = f"old-{n}"
            ledger.record_event(
                current,
                KeyEventType.REQUEST_REFUSED,
                from_status=current.status,
                to_status=current.status,
                now=NOW,
                why=Transition(actor="test"),
                details={"request": "rollback", "token": token, "reason": "NoPreviousVersion"},
            )
            ledger.record_request(current, "rollback", token, now=NOW)


def test_a_pass_issues_the_same_statements_whatever_the_history(
    ledger_engine: Engine, tmp_path: Path
) -> None:
    operations = KeyOperations(make_session_factory(ledger_engine), actor="test")
    backend = LocalBackend(tmp_path / "keys.json")
    statements: dict[int, list[str]] = {}
    for history in (1, 1000):
        name = f"records-{history}"
        operations.reconcile(_key(name, {}), backend, "local")
        _settle_requests(operations, name, history)
        # A request already handled, as re-applied YAML carries it: nothing to do.
        annotations = {ROLLBACK_REQUESTED_AT: f"old-{history - 1}", ROTATE_REQUESTED_AT: ""}
        key = _key(name, annotations)
        operations.reconcile(key, backend, "local")
        with counted(ledger_engine) as seen:
            outcome = operations.reconcile(key, backend, "local")
        assert outcome.status["lastHandledRequests"] == {"rollback": f"old-{history - 1}"}
        assert not outcome.events, "an idle pass does nothing"
        statements[history] = seen

    assert len(statements[1000]) == len(statements[1])
    assert statements[1000] == statements[1]  # the same statements, not just as many


def _rows_filtered_out(plan: dict[str, Any]) -> int:
    """Rows a plan node and those below it read and then dropped: history it walked."""
    own: int = plan.get("Rows Removed by Filter", 0) + plan.get("Rows Removed by Index Recheck", 0)
    return own + sum(_rows_filtered_out(child) for child in plan.get("Plans", ()))


def _table_rows_read(plan: dict[str, Any]) -> int:
    """Rows the plan's scans of a table read, kept or dropped by a filter."""
    own = 0
    if "Relation Name" in plan:
        kept_or_dropped = (
            plan["Actual Rows"]
            + plan.get("Rows Removed by Filter", 0)
            + plan.get("Rows Removed by Index Recheck", 0)
        )
        own = kept_or_dropped * plan["Actual Loops"]
    return own + sum(_table_rows_read(child) for child in plan.get("Plans", ()))


def _idle_pass_plans(
    engine: Engine, operations: KeyOperations, key: KeyResource, table: str, tmp_path: Path
) -> list[dict[str, Any]]:
    """What PostgreSQL did for each statement on `table` of a pass that has nothing to do."""
    reads: list[tuple[str, Any]] = []

    def captured(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if f"FROM {table}" in statement:
            reads.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", captured)
    try:
        outcome = operations.reconcile(key, LocalBackend(tmp_path / "keys.json"), "local")
    finally:
        event.remove(engine, "before_cursor_execute", captured)
    assert not outcome.events, "an idle pass does nothing"
    plans = []
    with engine.connect() as connection:
        cursor = connection.connection.cursor()
        for statement, parameters in reads:
            cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters)
            explained = cursor.fetchone()
            assert explained is not None
            plans.append(explained[0][0]["Plan"])
    return plans


def _other_keys(engine: Engine, keys: int) -> None:
    """Two versions each of `keys` keys of other tenants, written by the database."""
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO encryption_keys (
                    id, created_at, updated_at, tenant_id, key_name, key_type, kms_key_id,
                    kms_provider, status, version, activated_at, can_rollback, key_algorithm,
                    compliance_tags, authorized_services, access_policy)
                SELECT gen_random_uuid(), now(), now(), 'tenant-' || (k % 100), 'key-' || k,
                       'PHI_DATA', 'local:other/' || gen_random_uuid(), 'LOCAL_SOFTWARE',
                       CASE WHEN v = 2 THEN 'ACTIVE' ELSE 'ROTATED' END, v, now(), false,
                       'AES-256-GCM', '{}', '[]', '{}'
                FROM generate_series(1, :keys) AS k, generate_series(1, 2) AS v
                """
            ),
            {"keys": keys},
        )


def _analyze(engine: Engine, table: str) -> None:
    with engine.connect() as connection:
        connection.execute(text(f"ANALYZE {table}"))
        connection.commit()


@pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)
def test_the_handled_requests_read_probes_its_indexes_whatever_the_history(
    ledger_engine: Engine, tmp_path: Path
) -> None:
    operations = KeyOperations(make_session_factory(ledger_engine), actor="test")
    name = "records"
    operations.reconcile(_key(name, {}), LocalBackend(tmp_path / "keys.json"), "local")
    # Statistics from when no request was handled yet, as a young ledger has them.
    _analyze(ledger_engine, "handled_requests")
    _settle_requests(operations, name, 1000)
    key = _key(name, {ROLLBACK_REQUESTED_AT: "old-0"})  # the oldest token, re-applied

    plans = _idle_pass_plans(ledger_engine, operations, key, "handled_requests", tmp_path)
    assert len(plans) == 1
    assert _rows_filtered_out(plans[0]) == 0


@pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)
def test_the_live_versions_read_skips_the_settled_history(
    ledger_engine: Engine, tmp_path: Path
) -> None:
    now = [NOW]
    operations = KeyOperations(
        make_session_factory(ledger_engine), actor="test", clock=lambda: now[0]
    )
    backend = LocalBackend(tmp_path / "keys.json")
    name = "records"
    operations.reconcile(_key(name, {}), backend, "local")
    _other_keys(ledger_engine, 5000)  # a ledger large enough to be read by index
    # Statistics from when the key had one version.
    _analyze(ledger_engine, "encryption_keys")
    rotations = 3 * VERSION_HISTORY_LIMIT
    for n in range(rotations):
        now[0] += timedelta(days=30)  # each rollback window closes on the next pass
        operations.reconcile(_key(name, {ROTATE_REQUESTED_AT: f"r{n}"}), backend, "local")
    now[0] += timedelta(days=30)
    key = _key(name, {ROTATE_REQUESTED_AT: f"r{rotations - 1}"})
    operations.reconcile(key, backend, "local")  # the last window closes

    plans = _idle_pass_plans(ledger_engine, operations, key, "encryption_keys", tmp_path)
    assert len(plans) == 1
    # The newest versions status shows, and the parent of the oldest of them.
    assert plans[0]["Actual Rows"] == VERSION_HISTORY_LIMIT + 1
    # Read from the table: those, and the ACTIVE one again through the index of acting
    # versions (then dropped: the newest hold it). Not the 20 settled ones in between.
    assert _table_rows_read(plans[0]) == VERSION_HISTORY_LIMIT + 2
