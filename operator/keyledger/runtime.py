"""Wires settings, the ledger and backends together once per operator process."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine

from keyledger.board import ScheduleBoard
from keyledger.metrics import instrument_ledger
from keyledger.operations.backends import BackendCache, SecretReader
from keyledger.operations.keys import KeyOperations
from keyledger.settings import Settings
from keyledger.store.engine import make_engine, make_session_factory, upgrade_database

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    keys: KeyOperations
    backends: BackendCache
    board: ScheduleBoard
    ledger: Engine

    def close(self) -> None:
        self.backends.close()


def build_runtime(settings: Settings, read_secret: SecretReader) -> Runtime:
    url = settings.ledger_url()
    if settings.database_url is None:
        log.warning(
            "no KEYLEDGER_DATABASE_URL set: using the embedded SQLite ledger at %s "
            "(single replica, demos only)",
            settings.data_dir / "ledger.db",
        )
    if settings.migrate_on_start:
        upgrade_database(url)
    engine = make_engine(url)
    instrument_ledger(engine)
    return Runtime(
        settings=settings,
        keys=KeyOperations(make_session_factory(engine), actor=settings.actor),
        backends=BackendCache(settings, read_secret),
        board=ScheduleBoard(),
        ledger=engine,
    )
