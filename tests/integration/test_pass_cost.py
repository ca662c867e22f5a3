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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from keyledger.api import ROLLBACK_REQUESTED_AT, ROTATE_REQUESTED_AT
from keyledger.domain import KeyEventType
from keyledger.lifecycle.spec import KeySpec
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


@pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)
def test_the_handled_requests_read_probes_its_indexes_whatever_the_history(
    ledger_engine: Engine, tmp_path: Path
) -> None:
    operations = KeyOperations(make_session_factory(ledger_engine), actor="test")
    backend = LocalBackend(tmp_path / "keys.json")
    name = "records"
    operations.reconcile(_key(name, {}), backend, "local")
    # Statistics from when no request was handled yet, as a young ledger has them.
    with ledger_engine.connect() as connection:
        connection.execute(text("ANALYZE handled_requests"))
        connection.commit()
    _settle_requests(operations, name, 1000)
    key = _key(name, {ROLLBACK_REQUESTED_AT: "old-0"})  # the oldest token, re-applied
    reads: list[tuple[str, Any]] = []

    def captured(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "handled_requests" in statement:
            reads.append((statement, parameters))

    event.listen(ledger_engine, "before_cursor_execute", captured)
    try:
        outcome = operations.reconcile(key, backend, "local")
    finally:
        event.remove(ledger_engine, "before_cursor_execute", captured)
    assert outcome.status["lastHandledRequests"] == {"rollback": "old-999"}
    assert not outcome.events, "old-0 is settled: nothing to do"
    assert len(reads) == 1
    statement, parameters = reads[0]
    with ledger_engine.connect() as connection:
        cursor = connection.connection.cursor()
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters)
        explained = cursor.fetchone()
        assert explained is not None
        (plan,) = explained[0]
    assert _rows_filtered_out(plan["Plan"]) == 0
