"""Wires settings, the ledger and backends together once per operator process."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keyledger.board import ScheduleBoard
from keyledger.metrics import count_ledger_error, observe_ledger_statement
from keyledger.operations.backends import BackendCache, SecretReader
from keyledger.operations.keys import KeyOperations
from keyledger.settings import Settings
from keyledger.store.engine import make_engine, make_session_factory, upgrade_database
from keyledger.store.health import ledger_answers, watch_statements

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    keys: KeyOperations
    backends: BackendCache
    board: ScheduleBoard[Any]
    # None while the ledger answers, else why not: the readiness probe's check.
    ledger_ready: Callable[[], str | None]

    def hold(self, holder: str) -> None:
        """`holder` (a provider daemon) runs, so the schedule may run passes."""
        if self.board.hold(holder):
            # Resumed after a pause: a peer may have acted meanwhile, so nothing a
            # backend kept from before (the vault backend's state documents) may
            # answer now; the backends are opened afresh.
            self.backends.close()

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
    # Handler threads, the schedule's passes and the webhooks share it.
    engine = make_engine(url, pool_size=10, max_overflow=20)
    watch_statements(engine, observe_ledger_statement, count_ledger_error)
    return Runtime(
        settings=settings,
        keys=KeyOperations(make_session_factory(engine), actor=settings.actor),
        backends=BackendCache(settings, read_secret),
        board=ScheduleBoard(settings.drift_interval),
        ledger_ready=ledger_answers(engine),
    )
