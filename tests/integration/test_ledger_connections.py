"""What every ledger connection to PostgreSQL is set to, whoever opens it.

- Each prepared statement is planned once. PostgreSQL otherwise plans a prepared
  statement for each run's parameters until it judges a generic plan no costlier,
  and may never do so: which keys a connection saw first then decided what every
  later pass on it cost.
- Timestamps are read in UTC, the zone the ledger's types keep without converting
  each value, whatever zone the server or the database is set to.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from keyledger.store.engine import make_engine, make_read_session_factory, make_session_factory
from keyledger.store.repository import KeyLedger
from tests.integration.ledger_history import write_history

pytestmark = pytest.mark.postgres
postgresql_only = pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)

PREPARED = text(
    "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
    "WHERE statement LIKE 'WITH recent AS%'"
)


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
def test_a_pass_read_is_planned_once_per_connection(ledger_engine: Engine) -> None:
    """psycopg prepares a statement on its fifth run; PostgreSQL then tries five
    plans for the runs' own parameters before it may settle on a generic one."""
    write_history(make_session_factory(ledger_engine))
    reads = make_read_session_factory(make_session_factory(ledger_engine))
    with reads() as session:
        ledger = KeyLedger(session)
        for key_name in ("patients", "invoices", "absent") * 4:
            ledger.live_versions("acme", key_name, 10)
        generic, custom = session.execute(PREPARED).one()
    assert custom == 0 and generic > 0, (generic, custom)  # without the setting: 2 and 5


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
