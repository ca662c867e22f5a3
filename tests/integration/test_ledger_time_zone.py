"""The ledger's PostgreSQL sessions run in UTC, whatever the server's zone, and keep
the startup options a URL gives: its moments come back in UTC, not converted again."""

from __future__ import annotations

from datetime import UTC

import pytest
from sqlalchemy import create_engine, text

from keyledger.store.engine import make_engine

POSTGRES = pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)


@POSTGRES
def test_sessions_are_in_utc_on_a_server_in_another_zone(empty_database_url: str) -> None:
    name = empty_database_url.rsplit("/", 1)[1]
    admin = create_engine(empty_database_url.replace("postgresql://", "postgresql+psycopg://"))
    with admin.connect() as connection:
        connection.execute(text(f"ALTER DATABASE {name} SET timezone = 'America/New_York'"))
        connection.commit()
    admin.dispose()
    plain = create_engine(empty_database_url.replace("postgresql://", "postgresql+psycopg://"))
    with plain.connect() as connection:
        assert connection.execute(text("SHOW timezone")).scalar_one() == "America/New_York"
    plain.dispose()

    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SHOW timezone")).scalar_one() == "UTC"
            moment = connection.execute(text("SELECT now()")).scalar_one()
        assert moment.tzinfo is UTC
    finally:
        engine.dispose()


@POSTGRES
def test_startup_options_of_the_url_are_kept(empty_database_url: str) -> None:
    engine = make_engine(f"{empty_database_url}?options=-c%20statement_timeout%3D4321")
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SHOW statement_timeout")).scalar_one() == "4321ms"
            assert connection.execute(text("SHOW timezone")).scalar_one() == "UTC"
    finally:
        engine.dispose()


@POSTGRES
def test_startup_options_of_the_caller_are_kept(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url, connect_args={"options": "-c statement_timeout=1234"})
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SHOW statement_timeout")).scalar_one() == "1234ms"
            assert connection.execute(text("SHOW timezone")).scalar_one() == "UTC"
    finally:
        engine.dispose()
