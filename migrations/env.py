"""Alembic environment for the keyledger ledger (PostgreSQL and SQLite).

The URL comes from the Config's `sqlalchemy.url` (set in code by
`keyledger.store.engine.upgrade_database`) or from KEYLEDGER_DATABASE_URL
(for `alembic -c alembic.ini ...` from the repository root).
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, pool, text

from keyledger.settings import Settings
from keyledger.store.engine import make_engine, normalize_url
from keyledger.store.models import Base

config = context.config
# Only the CLI has an ini file; called from the operator, leave its logging alone.
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if not url and (configured := Settings().database_url) is not None:
        url = configured.get_secret_value()
    if not url:
        raise RuntimeError(
            "no ledger database to migrate: set KEYLEDGER_DATABASE_URL "
            "(e.g. postgresql://user@host/keyledger or sqlite:////var/lib/keyledger/ledger.db)"
        )
    return normalize_url(url).render_as_string(hide_password=False)


def run_migrations_offline() -> None:
    url = _database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_migrations(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=sqlite,
        # keyledger's SQLite engine emits a real BEGIN, so DDL is transactional
        # there too: a failed upgrade leaves the schema as it found it.
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        if sqlite:
            # Checked before COMMIT, since enforcement is off (see below).
            violations = connection.execute(text("PRAGMA foreign_key_check")).all()
            if violations:
                raise RuntimeError(f"migration breaks foreign keys: {violations[:5]}")


def run_migrations_online() -> None:
    engine = make_engine(_database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            if connection.dialect.name != "sqlite":
                _run_migrations(connection)
                return
            # Batch operations rebuild SQLite tables (copy, drop, rename), which
            # enforced foreign keys would refuse or cascade. Switch enforcement
            # off around the migration (a no-op inside a transaction, hence on
            # the raw connection before BEGIN) and check the result instead.
            raw_cursor = connection.connection.cursor()
            raw_cursor.execute("PRAGMA foreign_keys=OFF")
            try:
                _run_migrations(connection)
            finally:
                raw_cursor.execute("PRAGMA foreign_keys=ON")
                raw_cursor.close()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
