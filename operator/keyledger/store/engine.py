"""Engines, sessions and schema migrations for the ledger database.

PostgreSQL (psycopg 3) in production, SQLite as the embedded default. The
schema is only ever built by the Alembic migrations in the repository's
top-level `migrations/` directory, never by `create_all`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from keyledger.settings import Settings

log = logging.getLogger(__name__)

# operator/keyledger/store/engine.py -> <repo>/migrations
_REPO_MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"

_SQLITE_BUSY_TIMEOUT_MS = 5000
# A pooled connection idle longer than this is pinged before it is used again.
_PING_AFTER_IDLE_S = 10.0


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL, sending every PostgreSQL URL to psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str | URL, **engine_options: Any) -> Engine:
    """An engine for the ledger; on SQLite, one that enforces what PostgreSQL does."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        _create_sqlite_parent_dir(parsed)
        engine = create_engine(parsed, **engine_options)
        _configure_sqlite(engine)
    else:
        engine = create_engine(parsed, **engine_options)
        _sessions_in_utc(engine)
        if not engine_options.get("pool_pre_ping"):
            _ping_idle_connections(engine)
    log.debug("ledger engine for %s", engine.url.render_as_string(hide_password=True))
    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def make_read_session_factory(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """Sessions for reads that need no transaction of their own.

    On PostgreSQL they run in autocommit, which saves a BEGIN and a ROLLBACK round
    trip per read. They see what they would inside a transaction: at READ
    COMMITTED (the ledger's level) every statement takes its own snapshot either
    way. On SQLite, the same sessions."""
    engine = sessions.kw.get("bind")
    if not isinstance(engine, Engine) or engine.dialect.name != "postgresql":
        return sessions
    return sessionmaker(
        engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
    )


def upgrade_database(url: str | URL, revision: str = "head") -> None:
    """Migrate the ledger at `url` up to `revision`."""
    command.upgrade(_alembic_config(url), revision)


def downgrade_database(url: str | URL, revision: str) -> None:
    """Migrate the ledger at `url` down to `revision` ("base" removes the schema)."""
    command.downgrade(_alembic_config(url), revision)


def migrations_dir() -> Path:
    # A fresh Settings, not the cached one: this runs once per migration, not on
    # a hot path, and the environment it reads is the one of this moment.
    directory = Settings().migrations_dir or _REPO_MIGRATIONS_DIR
    if not (directory / "env.py").is_file():
        raise RuntimeError(
            f"no Alembic migrations at {directory}: set KEYLEDGER_MIGRATIONS_DIR to the "
            "keyledger `migrations/` directory"
        )
    return directory


def _alembic_config(url: str | URL) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # The ini layer interpolates "%": escape it, or a percent-encoded password breaks.
    rendered = normalize_url(url).render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def _create_sqlite_parent_dir(url: URL) -> None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _sessions_in_utc(engine: Engine) -> None:
    """Every new connection's session in UTC, set once as it opens (one round trip).

    The ledger's moments are UTC. Read in the server's zone (often Etc/UTC: the same
    instant, another tzinfo), each one a pass reads was converted again, five per
    version. A SET, not a startup option: PgBouncer before 1.20 refuses a connection
    that sends `options` (unless told to ignore them, which would leave the zone
    unset), and it carries TimeZone over to whichever server connection it hands
    out, in transaction pooling too. A session in another zone still reads right:
    UtcDateTime converts."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # In autocommit, or the SET would open a transaction: three round trips.
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SET TIME ZONE 'UTC'")
        finally:
            cursor.close()
            dbapi_connection.autocommit = autocommit


def _ping_idle_connections(engine: Engine) -> None:
    """Ping a pooled connection before use only when it sat idle for a while.

    A ping before every checkout (pool_pre_ping) is a round trip per session, a
    fifth of the operator's statements when keys are made in bulk. A connection
    handed back moments ago is alive as surely as the ping would say; one that
    idled may have been cut (a restarted server, a proxy's timeout) and is
    pinged, and replaced if dead. A server restarted within the idle time fails
    one statement instead, which is reported (LedgerUnavailable) and retried,
    and makes the pool drop its other connections of before the restart."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < _PING_AFTER_IDLE_S:
            return
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
            # The SELECT began a transaction (psycopg outside autocommit): end it, or
            # a read session asking for autocommit gets a connection it cannot switch.
            dbapi_connection.rollback()
        except Exception as error:
            raise DisconnectionError("idle ledger connection is dead") from error


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 driver: left to itself it begins no
        # transaction before DDL or SELECT, so migrations would not be atomic
        # and reads not isolated. SQLAlchemy emits BEGIN below instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # Pragmas outside any transaction: foreign_keys is a no-op inside one.
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front. A deferred BEGIN that reads
        # and then writes fails at once with "database is locked" when another
        # writer committed in between (WAL snapshot), whatever the busy timeout;
        # taking the lock first makes concurrent workers wait their turn instead.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
