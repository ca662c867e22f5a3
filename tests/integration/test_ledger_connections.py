"""Every ledger connection to PostgreSQL reads timestamps in UTC, the zone the
ledger's types keep without converting each value, whatever zone the server or
the database is set to."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from keyledger.store.engine import make_engine, make_session_factory
from tests.integration.ledger_history import write_history

pytestmark = pytest.mark.postgres
postgresql_only = pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)


@pytest.fixture
def engine_in_another_zone(ledger_url: str, ledger_engine: Engine) -> Iterator[Engine]:
    """An engine on the ledger after its database was set to a zone other than UTC."""
    database = make_url(ledger_url).database
    with ledger_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin:
        admin.execute(text(f"ALTER DATABASE {database} SET timezone = 'America/New_York'"))
    engine = make_engine(ledger_url)
    try:
        yield engine
    finally:
        engine.dispose()


@postgresql_only
def test_timestamps_are_read_in_utc_whatever_the_database_zone(
    engine_in_another_zone: Engine,
) -> None:
    write_history(make_session_factory(engine_in_another_zone))
    with engine_in_another_zone.connect() as connection:
        assert connection.execute(text("SHOW TimeZone")).scalar_one() == "UTC"
        # As the driver reads them: the zone UtcDateTime keeps without a conversion.
        driver = connection.exec_driver_sql("SELECT activated_at FROM encryption_keys")
        moments = [moment for (moment,) in driver if moment is not None]
    assert moments and all(moment.tzinfo is UTC for moment in moments)
