"""`keyledger audit verify|export` on a real PostgreSQL: the chain holds as keyledger
writes it, and names the row someone with the database owner's rights changed,
inserted or deleted behind keyledger's back."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError

from keyledger.cli.main import main
from keyledger.domain import KeyEventType
from keyledger.settings import get_settings
from keyledger.store.audit import GENESIS, event_hash, verify_chains
from keyledger.store.engine import make_session_factory
from keyledger.store.models import KeyEventRecord
from keyledger.store.repository import KeyLedger, Transition
from tests.integration.ledger_history import History, write_history

pytestmark = pytest.mark.postgres
postgresql_only = pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)

EXIT_BROKEN = 3


@pytest.fixture
def cli_ledger(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The CLI pointed at the test's ledger."""
    monkeypatch.setenv("KEYLEDGER_DATABASE_URL", ledger_url)
    get_settings.cache_clear()
    yield ledger_url
    get_settings.cache_clear()


@pytest.fixture
def history(ledger_engine: Engine) -> History:
    return write_history(make_session_factory(ledger_engine))


def audit_verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["audit", "verify", *args])
    return code, capsys.readouterr().out


def rows_of(engine: Engine, tenant: str) -> list[int]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                text("SELECT id FROM key_events WHERE tenant_id = :t ORDER BY id"), {"t": tenant}
            ).scalars()
        )


def as_owner(engine: Engine, *statements: str, **params: object) -> None:
    """What someone with the table owner's rights can do: lift the guard and write."""
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE key_events DISABLE TRIGGER key_events_append_only"))
        for statement in statements:
            connection.execute(text(statement), params)
        connection.execute(text("ALTER TABLE key_events ENABLE TRIGGER key_events_append_only"))


def keep_writing(engine: Engine, history: History) -> None:
    """keyledger goes on auditing after the tampering, linking to whatever is newest."""
    with make_session_factory(engine).begin() as session:
        record = KeyLedger(session).get(history.patients_v2.id)
        assert record is not None
        KeyLedger(session).record_event(
            record,
            KeyEventType.DRIFT_DETECTED,
            from_status=record.status,
            to_status=record.status,
            now=history.now,
            why=Transition(actor="keyledger-operator"),
        )


@postgresql_only
def test_verify_passes_on_an_untouched_ledger(
    cli_ledger: str,
    ledger_engine: Engine,
    history: History,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = audit_verify(capsys)
    assert code == 0, out
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["ok", "ok"]
    acme = rows_of(ledger_engine, "acme")
    assert f"tenant 'acme': {len(acme)} rows, head row {acme[-1]}" in lines[0]
    assert "tenant 'globex'" in lines[1]

    code, out = audit_verify(capsys, "--tenant", "globex")
    assert (code, len(out.splitlines())) == (0, 1)

    # Each tenant's chain starts from the genesis hash and links row to row.
    with ledger_engine.connect() as connection:
        links = connection.execute(
            text(
                "SELECT id, prev_event_id, prev_hash, row_hash FROM key_events "
                "WHERE tenant_id = 'acme' ORDER BY id"
            )
        ).all()
    assert links[0].prev_event_id is None and links[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(links):
        assert (after.prev_event_id, after.prev_hash) == (before.id, before.row_hash)


@postgresql_only
def test_verify_names_a_row_updated_in_postgresql(
    cli_ledger: str,
    ledger_engine: Engine,
    history: History,
    capsys: pytest.CaptureFixture[str],
) -> None:
    acme = rows_of(ledger_engine, "acme")
    edited = acme[2]
    as_owner(ledger_engine, "UPDATE key_events SET actor = 'mallory' WHERE id = :id", id=edited)
    keep_writing(ledger_engine, history)

    code, out = audit_verify(capsys)
    assert code == EXIT_BROKEN
    assert f"BROKEN tenant 'acme': row {edited} changed:" in out
    assert "ok     tenant 'globex'" in out  # other tenants' chains are their own


@postgresql_only
def test_verify_names_a_row_updated_and_rehashed_in_postgresql(
    cli_ledger: str,
    ledger_engine: Engine,
    history: History,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Someone who knows the hash function re-hashes the row they edited: the row
    itself holds, but its successor recorded the old hash, which names it."""
    edited = rows_of(ledger_engine, "acme")[1]
    with make_session_factory(ledger_engine)() as session:
        row = session.get_one(KeyEventRecord, edited)
        row.actor = "mallory"
        forged_hash = event_hash(row)
        session.rollback()
    as_owner(
        ledger_engine,
        "UPDATE key_events SET actor = 'mallory', row_hash = :forged WHERE id = :id",
        forged=forged_hash,
        id=edited,
    )
    code, out = audit_verify(capsys, "--tenant", "acme")
    assert code == EXIT_BROKEN
    assert f"row {edited} changed: its hash is not the one row " in out


@postgresql_only
def test_verify_names_a_row_inserted_in_postgresql(
    cli_ledger: str,
    ledger_engine: Engine,
    history: History,
    capsys: pytest.CaptureFixture[str],
) -> None:
    head = rows_of(ledger_engine, "acme")[-1]
    # A forged "alice rolled it back", its chain columns copied from the newest row.
    # The copied link would break the one-successor index: the forger drops it first.
    as_owner(
        ledger_engine,
        "DROP INDEX uq_key_events_prev_event_id",
        "INSERT INTO key_events (occurred_at, key_id, tenant_id, key_name, version, "
        "event_type, from_status, to_status, actor, prev_event_id, prev_hash, row_hash) "
        "SELECT occurred_at, key_id, tenant_id, key_name, version, 'ROLLED_BACK', "
        "to_status, to_status, 'alice', prev_event_id, prev_hash, row_hash "
        "FROM key_events WHERE id = :head",
        head=head,
    )
    forged = rows_of(ledger_engine, "acme")[-1]
    assert forged > head
    keep_writing(ledger_engine, history)

    code, out = audit_verify(capsys)
    assert code == EXIT_BROKEN
    assert f"BROKEN tenant 'acme': row {forged} inserted:" in out


@postgresql_only
def test_verify_names_a_row_deleted_in_postgresql(
    cli_ledger: str,
    ledger_engine: Engine,
    history: History,
    capsys: pytest.CaptureFixture[str],
) -> None:
    acme = rows_of(ledger_engine, "acme")
    deleted, successor = acme[3], acme[4]
    as_owner(ledger_engine, "DELETE FROM key_events WHERE id = :id", id=deleted)

    code, out = audit_verify(capsys, "--tenant", "acme")
    assert code == EXIT_BROKEN
    assert f"BROKEN tenant 'acme': row {deleted} deleted: row {successor} follows it" in out


@postgresql_only
def test_concurrent_writers_of_one_tenant_take_turns(ledger_engine: Engine) -> None:
    """Without the per-tenant lock two writers read the same newest row and the
    second INSERT breaks the one-successor index (or forks the chain)."""
    sessions = make_session_factory(ledger_engine)
    history = write_history(sessions)
    before = len(rows_of(ledger_engine, "acme"))
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def write(worker: int) -> None:
        start.wait()
        try:
            for n in range(15):
                with sessions.begin() as session:
                    ledger = KeyLedger(session)
                    record = ledger.get(history.patients_v2.id)
                    assert record is not None
                    ledger.record_event(
                        record,
                        KeyEventType.DRIFT_DETECTED,
                        from_status=record.status,
                        to_status=record.status,
                        now=history.now + timedelta(seconds=n),
                        why=Transition(actor=f"worker-{worker}"),
                    )
        except (IntegrityError, AssertionError) as error:
            failures.append(error)

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with sessions() as session:
        results = verify_chains(session, "acme")
    assert [(r.intact, r.rows) for r in results] == [(True, before + 4 * 15)]


@postgresql_only
def test_export_writes_json_lines_for_a_siem(
    cli_ledger: str,
    ledger_engine: Engine,
    history: History,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["audit", "export", "--tenant", "globex"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["tenant"] for r in records} == {"globex"}
    assert [r["id"] for r in records] == sorted(r["id"] for r in records)
    compromised = [r for r in records if r["event_type"] == "COMPROMISED"]
    assert compromised == [
        {
            "id": compromised[0]["id"],
            "occurred_at": "2026-06-29T09:00:00.000000+00:00",
            "tenant": "globex",
            "key_name": "billing",
            "key_id": str(history.billing_v1.id),
            "version": 1,
            "event_type": "COMPROMISED",
            "from_status": "ACTIVE",
            "to_status": "COMPROMISED",
            "actor": "carol",
            "correlation_id": None,
            "reason": "leaked in a log",
            "details": None,
            "prev_event_id": compromised[0]["prev_event_id"],
            "prev_hash": compromised[0]["prev_hash"],
            "row_hash": compromised[0]["row_hash"],
        }
    ]
    # --since: only what happened from then on, all tenants.
    assert main(["audit", "export", "--since", "2026-08-01T00:00:00Z"]) == 0
    recent = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(r["tenant"], r["key_name"]) for r in recent} == {("acme", "invoices")}


@postgresql_only
def test_a_row_hashed_in_the_database_hashes_what_canonical_event_makes(
    ledger_engine: Engine,
) -> None:
    """PostgreSQL hashes each row as it inserts it, over canonical bytes made in Python
    with the link put in. Details that hold the link's own text, quotes and non-ASCII
    text must hash as `event_hash` hashes them, in one transaction and across two."""
    sessions = make_session_factory(ledger_engine)
    history = write_history(sessions)
    tricky = {
        "prev_event_id": None,
        "prev_hash": "",
        "nested": {"prev_event_id": 7, "prev_hash": "f" * 64},
        "note": 'Zürich "quoted" \\ back\nslash \u2603',
    }
    for rows in (1, 3):
        with sessions.begin() as session:
            ledger = KeyLedger(session)
            record = ledger.get(history.patients_v2.id)
            assert record is not None
            for n in range(rows):
                ledger.record_event(
                    record,
                    KeyEventType.DRIFT_DETECTED,
                    from_status=record.status,
                    to_status=record.status,
                    now=history.now + timedelta(seconds=n),
                    why=Transition(actor="zoë", reason='"prev_event_id":null,"prev_hash":""'),
                    details=tricky,
                )
    with sessions() as session:
        stored = session.scalars(
            select(KeyEventRecord)
            .where(KeyEventRecord.tenant_id == "acme")
            .order_by(KeyEventRecord.id.desc())
            .limit(4)
        ).all()
        assert [row.details for row in stored] == [tricky] * 4
        assert all(row.row_hash == event_hash(row) for row in stored)
        [result] = verify_chains(session, "acme")
    assert result.intact
