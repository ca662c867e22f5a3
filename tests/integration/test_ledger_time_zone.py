"""The ledger's PostgreSQL sessions run in UTC, whatever the server's zone, and keep
the startup options a URL gives: its moments come back in UTC, not converted again."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text, type_coerce

from keyledger.store.engine import make_engine
from keyledger.store.types import UtcDateTime

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
@pytest.mark.parametrize(
    ("query", "options", "timeout"),
    [
        ("?options=-c%20statement_timeout%3D4321", {}, "4321ms"),  # the URL's
        ("", {"connect_args": {"options": "-c statement_timeout=1234"}}, "1234ms"),  # the caller's
    ],
)
def test_startup_options_are_kept(
    empty_database_url: str, query: str, options: dict[str, Any], timeout: str
) -> None:
    engine = make_engine(f"{empty_database_url}{query}", **options)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SHOW statement_timeout")).scalar_one() == timeout
            assert connection.execute(text("SHOW timezone")).scalar_one() == "UTC"
    finally:
        engine.dispose()


@POSTGRES
def test_moments_read_in_another_zone_come_back_in_utc(empty_database_url: str) -> None:
    """A session keyledger did not open (a service's own engine, in its server's zone):
    the ledger's timestamp type still hands out UTC."""
    engine = create_engine(
        empty_database_url.replace("postgresql://", "postgresql+psycopg://"),
        connect_args={"options": "-c TimeZone=America/New_York"},
    )
    try:
        with engine.connect() as connection:
            raw, typed = connection.execute(
                select(func.now(), type_coerce(func.now(), UtcDateTime()))
            ).one()
        assert raw.tzinfo is not UTC and raw.utcoffset() != timedelta(0)
        assert typed.tzinfo is UTC and typed == raw
    finally:
        engine.dispose()
