"""The Alembic migrations, on SQLite and on a real PostgreSQL.

They go up and down cleanly, build exactly the schema the models describe, and
the database itself enforces the ledger's rules: one ACTIVE version per
(tenant, key name), no ACTIVE row without a KMS key id, an append-only audit
trail, timestamps in UTC.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, Engine, insert, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from keyledger.domain import KeyEventType, KeyStatus, KeyType, KmsProvider
from keyledger.store.audit import link_queued, verify_chains
from keyledger.store.engine import (
    downgrade_database,
    make_engine,
    make_session_factory,
    upgrade_database,
)
from keyledger.store.models import Base, EncryptionKeyRecord, HandledRequestRecord, KeyEventRecord
from keyledger.store.repository import KeyLedger, Transition
from tests.harness.postgres import PostgresServer, create_database, drop_database

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAD = "0008"
LEDGER_TABLES = {"encryption_keys", "key_events", "handled_requests", "tenant_grants"}
APPEND_ONLY = "key_events is append-only"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)

postgresql_only = pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)


@pytest.fixture
def engine_for() -> Iterator[Callable[[str], Engine]]:
    """make_engine, with every engine disposed at the end of the test."""
    engines: list[Engine] = []

    def _make(url: str) -> Engine:
        engines.append(make_engine(url))
        return engines[-1]

    yield _make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def session(ledger_engine: Engine) -> Iterator[Session]:
    with make_session_factory(ledger_engine)() as session:
        yield session


def key_version(
    *,
    tenant_id: str = "tenant-a",
    key_name: str = "patients",
    version: int = 1,
    status: KeyStatus = KeyStatus.ACTIVE,
    with_kms_key: bool = True,
    parent: EncryptionKeyRecord | None = None,
) -> EncryptionKeyRecord:
    kms_key_id = f"arn:aws:kms:eu-west-1:111122223333:key/{uuid.uuid4()}" if with_kms_key else None
    return EncryptionKeyRecord(
        id=uuid.uuid4(),
        created_at=NOW,
        updated_at=NOW,
        tenant_id=tenant_id,
        key_name=key_name,
        key_type=KeyType.PHI_DATA,
        kms_key_id=kms_key_id,
        kms_provider=KmsProvider.AWS_KMS,
        status=status,
        version=version,
        parent_key_id=None if parent is None else parent.id,
    )


def chained_event(session: Session, key: EncryptionKeyRecord, now: datetime = NOW) -> None:
    """An audit row as keyledger writes it: through the repository, into the tenant's chain."""
    KeyLedger(session).record_event(
        key,
        KeyEventType.CREATED,
        from_status=None,
        to_status=key.status,
        now=now,
        why=Transition(actor="system:serviceaccount:keyledger:operator"),
    )
    link_queued(session)  # in the database now, as the commit would put it


def unchained_event(
    session: Session, key: EncryptionKeyRecord, details: dict[str, Any] | None = None
) -> None:
    """An audit row as revisions before 0004 wrote it: no chain columns."""
    session.execute(
        insert(Base.metadata.tables["key_events"]).values(
            occurred_at=NOW,
            key_id=key.id,
            tenant_id=key.tenant_id,
            key_name=key.key_name,
            version=key.version,
            event_type=KeyEventType.CREATED,
            to_status=key.status,
            actor="system:serviceaccount:keyledger:operator",
            details=details,
        )
    )


def add_as_of_0001(connection: Connection, key: EncryptionKeyRecord) -> None:
    """Insert `key` naming only the columns revision 0001 has: the models also know
    columns that later revisions add, and the ORM would name them all."""
    connection.execute(
        insert(EncryptionKeyRecord).values(
            id=key.id,
            created_at=key.created_at,
            updated_at=key.updated_at,
            tenant_id=key.tenant_id,
            key_name=key.key_name,
            key_type=key.key_type,
            kms_key_id=key.kms_key_id,
            kms_provider=key.kms_provider,
            status=key.status,
            version=key.version,
        )
    )


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def schema_objects(connection: Connection) -> set[tuple[str, str]]:
    """Every table, index, sequence, view, trigger and function in the ledger's schema."""
    if connection.dialect.name == "sqlite":
        rows = connection.execute(
            text("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        )
        return {(kind, name) for kind, name in rows}
    relations = connection.execute(
        text(
            "SELECT relkind::text, relname FROM pg_class "
            "WHERE relnamespace = current_schema()::regnamespace"
        )
    )
    functions = connection.execute(
        text(
            "SELECT 'function', proname FROM pg_proc "
            "WHERE pronamespace = current_schema()::regnamespace"
        )
    )
    return {(kind, name) for kind, name in [*relations, *functions]}


# --- up and down -------------------------------------------------------------


def test_upgrade_downgrade_upgrade_leaves_nothing_behind(
    empty_database_url: str, engine_for: Callable[[str], Engine]
) -> None:
    engine = engine_for(empty_database_url)
    with engine.connect() as connection:
        untouched = schema_objects(connection)

    upgrade_database(empty_database_url)
    assert current_revision(engine) == HEAD
    assert set(inspect(engine).get_table_names()) == LEDGER_TABLES | {"alembic_version"}
    # Downgrade with data in place: a version chain and its (undeletable) events.
    with make_session_factory(engine).begin() as session:
        first = key_version(status=KeyStatus.ROTATED)
        session.add(first)
        session.flush()
        second = key_version(version=2, parent=first)
        session.add(second)
        session.flush()
        chained_event(session, first)
        chained_event(session, second)

    downgrade_database(empty_database_url, "base")
    engine.dispose()  # PostgreSQL caches reflection per connection; start afresh
    assert current_revision(engine) is None
    assert inspect(engine).get_table_names() == ["alembic_version"]
    with engine.connect() as connection:
        left = schema_objects(connection) - untouched
    version_table = (
        {("table", "alembic_version")}
        if engine.dialect.name == "sqlite"
        else {("r", "alembic_version"), ("i", "alembic_version_pkc")}
    )
    assert left == version_table

    upgrade_database(empty_database_url)
    engine.dispose()
    assert current_revision(engine) == HEAD
    assert set(inspect(engine).get_table_names()) == LEDGER_TABLES | {"alembic_version"}


def test_a_failed_upgrade_leaves_the_schema_as_it_was(
    empty_database_url: str,
    engine_for: Callable[[str], Engine],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(REPO_ROOT / "migrations", migrations)
    (migrations / "versions" / "0002_broken.py").write_text(
        textwrap.dedent(
            f"""
            import sqlalchemy as sa
            from alembic import op

            revision = "9999"
            down_revision = "{HEAD}"

            def upgrade():
                op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
                op.execute("SELECT * FROM no_such_table")

            def downgrade():
                pass
            """
        )
    )
    monkeypatch.setenv("KEYLEDGER_MIGRATIONS_DIR", str(migrations))

    with pytest.raises(DBAPIError, match="no_such_table"):
        upgrade_database(empty_database_url)

    # One transaction for the whole upgrade, SQLite included: not even 0001 stuck.
    engine = engine_for(empty_database_url)
    assert inspect(engine).get_table_names() == []


def test_handled_request_tokens_move_to_their_table_and_back(
    empty_database_url: str, engine_for: Callable[[str], Engine]
) -> None:
    """0002 copies the tokens recorded in key_events into handled_requests (once per
    request, long ones by digest) and its downgrade leaves key_events as it was."""
    engine = engine_for(empty_database_url)
    upgrade_database(empty_database_url, "0001")
    long_token = "x" * 300
    first = key_version(status=KeyStatus.ACTIVE)
    with engine.begin() as connection:
        add_as_of_0001(connection, first)
    with make_session_factory(engine).begin() as session:
        requests: list[dict[str, Any]] = [
            {"request": "rotate", "token": "t1"},
            {"request": "rollback", "token": "t2"},
            {"request": "rollback", "token": "t2", "rolled_back_from": 2},
            {"request": "compromise", "token": long_token, "reason": "leaked"},
            {"trigger": "schedule"},
        ]
        for details in requests:
            unchained_event(session, first, details)

    upgrade_database(empty_database_url)
    engine.dispose()
    with make_session_factory(engine)() as session:
        moved = session.execute(
            select(
                HandledRequestRecord.kind, HandledRequestRecord.token, HandledRequestRecord.key_id
            ).order_by(HandledRequestRecord.id)
        ).all()
    digest = "sha256:" + hashlib.sha256(long_token.encode()).hexdigest()
    assert [(kind, token) for kind, token, _ in moved] == [
        ("rotate", "t1"),
        ("rollback", "t2"),
        ("compromise", digest),
    ]
    assert {key_id for _, _, key_id in moved} == {first.id}

    downgrade_database(empty_database_url, "0001")
    engine.dispose()
    assert "handled_requests" not in inspect(engine).get_table_names()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM key_events")).scalar_one() == 5


def test_the_latest_handled_request_of_each_kind_is_marked_and_unmarked(
    empty_database_url: str, engine_for: Callable[[str], Engine]
) -> None:
    """0006 marks the last row (highest id) of each key and kind as the latest, and
    its downgrade brings back the index the latest were found by."""
    engine = engine_for(empty_database_url)
    upgrade_database(empty_database_url, "0005")
    key = key_version()
    with engine.begin() as connection:
        add_as_of_0001(connection, key)
        handled = Base.metadata.tables["handled_requests"]
        for kind, token in [("rotate", "r1"), ("rollback", "b1"), ("rotate", "r2")]:
            connection.execute(
                insert(handled).values(
                    tenant_id=key.tenant_id,
                    key_name=key.key_name,
                    kind=kind,
                    token=token,
                    handled_at=NOW,
                    key_id=key.id,
                )
            )

    upgrade_database(empty_database_url, "0006")
    engine.dispose()
    with engine.connect() as connection:
        marked = connection.execute(
            select(HandledRequestRecord.token, HandledRequestRecord.latest).order_by(
                HandledRequestRecord.id
            )
        ).all()
    assert marked == [("r1", False), ("b1", True), ("r2", True)]

    downgrade_database(empty_database_url, "0005")
    engine.dispose()
    inspector = inspect(engine)
    assert "latest" not in {column["name"] for column in inspector.get_columns("handled_requests")}
    assert "ix_handled_requests_latest" in {
        index["name"] for index in inspector.get_indexes("handled_requests")
    }


def test_audit_rows_written_before_the_chain_are_chained_and_kept_on_the_way_down(
    empty_database_url: str, engine_for: Callable[[str], Engine]
) -> None:
    """0004 links and hashes the rows already there (past the append-only guard,
    which is back afterwards); new rows continue those chains; down keeps every row."""
    engine = engine_for(empty_database_url)
    upgrade_database(empty_database_url, "0002")
    keys = [key_version(), key_version(tenant_id="tenant-b")]
    with engine.begin() as connection:
        for key in keys:
            add_as_of_0001(connection, key)
    with make_session_factory(engine).begin() as session:
        for key in (*keys, *keys, keys[0]):
            unchained_event(session, key, {"trigger": "schedule"})

    upgrade_database(empty_database_url, "0004")
    engine.dispose()
    sessions = make_session_factory(engine)
    with sessions() as session:
        assert [(r.tenant, r.rows, r.intact) for r in verify_chains(session)] == [
            ("tenant-a", 3, True),
            ("tenant-b", 2, True),
        ]
    upgrade_database(empty_database_url)  # today's code links rows through 0008's function
    with sessions.begin() as session:
        chained_event(session, session.get_one(EncryptionKeyRecord, keys[0].id))
    with sessions() as session:
        assert [(r.rows, r.intact) for r in verify_chains(session, "tenant-a")] == [(4, True)]
    with pytest.raises(IntegrityError, match=APPEND_ONLY), engine.begin() as connection:
        connection.execute(text("UPDATE key_events SET actor = 'someone-else'"))

    downgrade_database(empty_database_url, "0002")
    engine.dispose()
    columns = {column["name"] for column in inspect(engine).get_columns("key_events")}
    assert not columns & {"prev_event_id", "prev_hash", "row_hash"}
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM key_events")).scalar_one() == 6
    with pytest.raises(IntegrityError, match=APPEND_ONLY), engine.begin() as connection:
        connection.execute(text("DELETE FROM key_events"))


def test_alembic_command_line_from_the_repository_root(
    empty_database_url: str, engine_for: Callable[[str], Engine]
) -> None:
    url = make_url(empty_database_url)
    # The plain postgresql:// spelling is what people paste; it must reach psycopg 3.
    plain = url.set(drivername=url.get_backend_name()).render_as_string(hide_password=False)
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", "alembic.ini", "upgrade", "head"],
        cwd=REPO_ROOT,
        env={**os.environ, "KEYLEDGER_DATABASE_URL": plain},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert current_revision(engine_for(empty_database_url)) == HEAD


# --- the migration builds what the models describe ----------------------------


def test_migrated_schema_matches_the_models(ledger_engine: Engine) -> None:
    with ledger_engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, Base.metadata) == []


@pytest.fixture
def reference_url(ledger_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A second database of the same kind, built from the models with create_all.

    Only as the yardstick for what compare_metadata cannot see (CHECK constraints,
    partial-index predicates): tests never run against a create_all schema.
    """
    if make_url(ledger_url).get_backend_name() == "sqlite":
        yield f"sqlite+pysqlite:///{tmp_path / 'reference.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"keyledger_reference_{uuid.uuid4().hex[:12]}"
    url = create_database(server, name)
    try:
        yield url
    finally:
        drop_database(server, name)


def reflected_rules(engine: Engine) -> dict[str, dict[str, Any]]:
    """What the database reports for each ledger table, in its own normal form."""
    inspector = inspect(engine)
    where = f"{engine.dialect.name}_where"
    rules: dict[str, dict[str, Any]] = {}
    for table in sorted(LEDGER_TABLES):
        rules[table] = {
            "columns": {
                column["name"]: (str(column["type"]), column["nullable"], column["default"])
                for column in inspector.get_columns(table)
            },
            "primary_key": inspector.get_pk_constraint(table),
            "foreign_keys": sorted(
                (
                    fk["name"] or "",
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                    tuple(sorted(fk["options"].items())),
                )
                for fk in inspector.get_foreign_keys(table)
            ),
            "unique": {
                uq["name"]: tuple(uq["column_names"])
                for uq in inspector.get_unique_constraints(table)
            },
            "checks": {ck["name"]: ck["sqltext"] for ck in inspector.get_check_constraints(table)},
            "indexes": {
                ix["name"]: (
                    tuple(ix["column_names"]),
                    bool(ix["unique"]),
                    str(ix.get("dialect_options", {}).get(where)),
                )
                for ix in inspector.get_indexes(table)
            },
        }
    return rules


def test_migrated_constraints_and_partial_indexes_match_the_models(
    ledger_engine: Engine, reference_url: str, engine_for: Callable[[str], Engine]
) -> None:
    reference = engine_for(reference_url)
    Base.metadata.create_all(reference)
    migrated = reflected_rules(ledger_engine)
    assert migrated == reflected_rules(reference)
    # The yardstick itself must see what matters, or the comparison proves nothing.
    one_active = migrated["encryption_keys"]["indexes"]["uq_encryption_keys_one_active"]
    assert one_active[1] is True
    assert "ACTIVE" in one_active[2]
    assert "ck_encryption_keys_kms_key_id_once_created" in migrated["encryption_keys"]["checks"]


# --- the database enforces the ledger's rules ---------------------------------


def test_one_active_version_per_tenant_and_key_name(session: Session) -> None:
    session.add(key_version(version=1))
    session.commit()

    session.add(key_version(version=2))
    # PostgreSQL names the index; SQLite names its columns.
    one_active = r"uq_encryption_keys_one_active|failed: \w+\.tenant_id, \w+\.key_name\n"
    with pytest.raises(IntegrityError, match=one_active):
        session.commit()
    session.rollback()

    # ACTIVE for another key name or another tenant; any number of ROTATED versions.
    session.add_all(
        [
            key_version(key_name="invoices"),
            key_version(tenant_id="tenant-b"),
            *(key_version(version=v, status=KeyStatus.ROTATED) for v in (2, 3, 4)),
        ]
    )
    session.commit()
    active = session.scalars(
        select(EncryptionKeyRecord.version).where(
            EncryptionKeyRecord.tenant_id == "tenant-a",
            EncryptionKeyRecord.key_name == "patients",
            EncryptionKeyRecord.status == KeyStatus.ACTIVE,
        )
    ).all()
    assert active == [1]


def test_only_a_pending_version_may_lack_a_kms_key_id(session: Session) -> None:
    session.add(key_version(status=KeyStatus.PENDING, with_kms_key=False))
    session.commit()

    session.add(key_version(version=2, with_kms_key=False))
    with pytest.raises(IntegrityError, match="kms_key_id_once_created"):
        session.commit()


def test_foreign_keys_are_enforced(session: Session) -> None:
    orphan = key_version()  # never inserted
    with pytest.raises(IntegrityError, match=r"(?i)foreign key"):
        chained_event(session, orphan)


def test_key_events_refuse_update_and_delete(ledger_engine: Engine, session: Session) -> None:
    key = key_version()
    session.add(key)
    session.flush()
    chained_event(session, key)
    session.commit()

    for statement in (
        "UPDATE key_events SET actor = 'someone-else'",
        "DELETE FROM key_events",
    ):
        with pytest.raises(IntegrityError, match=APPEND_ONLY), ledger_engine.begin() as conn:
            conn.execute(text(statement))

    with ledger_engine.connect() as connection:
        actors = connection.execute(text("SELECT actor FROM key_events")).scalars().all()
    assert actors == ["system:serviceaccount:keyledger:operator"]
    # Appending is what the table is for.
    chained_event(session, key)
    session.commit()


@pytest.mark.postgres
@postgresql_only
def test_key_events_refuse_truncate_on_postgresql(ledger_engine: Engine) -> None:
    with pytest.raises(IntegrityError, match=APPEND_ONLY), ledger_engine.begin() as connection:
        connection.execute(text("TRUNCATE key_events"))


def test_timestamps_read_back_as_timezone_aware_utc(ledger_engine: Engine) -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    written = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=india)
    key = key_version()
    key.activated_at = written
    factory = make_session_factory(ledger_engine)
    with factory.begin() as session:
        session.add(key)
        session.flush()
        chained_event(session, key, now=written)

    with factory() as session:
        stored = session.get_one(EncryptionKeyRecord, key.id)
        occurred = session.scalars(select(KeyEventRecord.occurred_at)).one()
    for value in (stored.activated_at, stored.created_at, occurred):
        assert value is not None
        assert value.utcoffset() == timedelta(0)
    assert stored.activated_at == written
    assert stored.activated_at is not None
    assert stored.activated_at.hour == 4  # 09:30 +05:30 is 04:00 UTC
    assert occurred == written


# --- 0003: what clients need from the ledger ------------------------------------


def test_0003_down_keeps_the_audit_trail_and_its_guard(
    ledger_url: str, engine_for: Callable[[str], Engine]
) -> None:
    engine = engine_for(ledger_url)
    with make_session_factory(engine).begin() as session:
        key = key_version()
        session.add(key)
        session.flush()
        chained_event(session, key)
        KeyLedger(session).record_event(
            key,
            KeyEventType.BREAK_GLASS_OPENED,
            from_status=key.status,
            to_status=key.status,
            now=NOW,
            why=Transition(actor="alice@example.com", reason="INC-42"),
        )

    # Down to 0001 the new event type has no place, and key_events is append-only:
    # the downgrade refuses instead of losing audit rows.
    with pytest.raises(RuntimeError, match="BREAK_GLASS_OPENED rows"):
        downgrade_database(ledger_url, "0001")
    engine.dispose()
    assert current_revision(engine) == HEAD

    with engine.connect() as connection:
        types = connection.execute(text("SELECT event_type FROM key_events ORDER BY id")).all()
    assert [t for (t,) in types] == ["CREATED", "BREAK_GLASS_OPENED"]


def test_0003_down_and_up_with_data(
    empty_database_url: str, engine_for: Callable[[str], Engine]
) -> None:
    upgrade_database(empty_database_url, "0002")
    engine = engine_for(empty_database_url)
    key = key_version()
    with engine.begin() as connection:
        add_as_of_0001(connection, key)
    with make_session_factory(engine).begin() as session:
        unchained_event(session, key)
    upgrade_database(empty_database_url)
    downgrade_database(empty_database_url, "0002")
    engine.dispose()
    with engine.connect() as connection:
        actors = connection.execute(text("SELECT actor FROM key_events")).scalars().all()
    assert actors == ["system:serviceaccount:keyledger:operator"]
    # The rebuilt table (SQLite) kept its append-only guard both ways.
    with pytest.raises(IntegrityError, match=APPEND_ONLY), engine.begin() as connection:
        connection.execute(text("DELETE FROM key_events"))
    upgrade_database(empty_database_url)
    engine.dispose()
    with pytest.raises(IntegrityError, match=APPEND_ONLY), engine.begin() as connection:
        connection.execute(text("UPDATE key_events SET actor = 'x'"))


@pytest.mark.postgres
@postgresql_only
def test_new_versions_and_status_changes_notify_listeners(ledger_url: str) -> None:
    import psycopg  # noqa: PLC0415

    plain = make_url(ledger_url).set(drivername="postgresql")
    factory = make_session_factory(make_engine(ledger_url))
    with psycopg.connect(plain.render_as_string(hide_password=False), autocommit=True) as listener:
        listener.execute("LISTEN keyledger_key_changes")
        key = key_version(status=KeyStatus.ACTIVE)
        with factory.begin() as session:
            session.add(key)
        with factory.begin() as session:
            stored = session.get_one(EncryptionKeyRecord, key.id)
            stored.last_used_at = NOW  # bookkeeping: no notification
        with factory.begin() as session:
            session.get_one(EncryptionKeyRecord, key.id).status = KeyStatus.COMPROMISED
        with factory.begin() as session:  # rolled back: never told
            session.get_one(EncryptionKeyRecord, key.id).status = KeyStatus.EXPIRED
            session.rollback()
        payloads = [n.payload for n in listener.notifies(timeout=2.0, stop_after=3)]
    decoded = [json.loads(p) for p in payloads]
    assert [(d["tenant"], d["key"], d["id"], d["status"]) for d in decoded] == [
        ("tenant-a", "patients", str(key.id), "ACTIVE"),
        ("tenant-a", "patients", str(key.id), "COMPROMISED"),
    ]
    assert key.kms_key_id is not None
    assert all(key.kms_key_id not in p for p in payloads)  # references stay out
