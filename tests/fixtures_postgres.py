"""pytest plugin: ledger databases, SQLite and PostgreSQL, built by the migrations.

`postgres_server` is one PostgreSQL per test process (each pytest-xdist worker
included), or the server named by KEYLEDGER_TEST_POSTGRES_URL. `ledger_url` and
`empty_database_url` run each test on both databases; the PostgreSQL variant
carries the `postgres` mark, so `-m "not postgres"` keeps the SQLite one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from keyledger.store.engine import make_engine, upgrade_database
from tests.harness.postgres import (
    EXISTING_SERVER_ENV,
    PostgresServer,
    create_database,
    drop_database,
    start_postgres,
    stop_postgres,
    use_existing_server,
)

DATABASE_KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    existing = os.environ.get(EXISTING_SERVER_ENV)
    if existing:
        yield use_existing_server(existing)
        return
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    try:
        yield server
    finally:
        stop_postgres(server)


@pytest.fixture(params=DATABASE_KINDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database with no schema at all, for tests of the migrations themselves."""
    if request.param == "sqlite":
        yield f"sqlite+pysqlite:///{tmp_path / 'ledger.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"keyledger_test_{uuid.uuid4().hex[:16]}"
    url = create_database(server, name)
    try:
        yield url
    finally:
        drop_database(server, name)


@pytest.fixture
def ledger_url(empty_database_url: str) -> str:
    """A fresh database migrated to head: the schema exactly as production gets it."""
    upgrade_database(empty_database_url)
    return empty_database_url


@pytest.fixture
def ledger_engine(ledger_url: str) -> Iterator[Engine]:
    engine = make_engine(ledger_url)
    try:
        yield engine
    finally:
        engine.dispose()
