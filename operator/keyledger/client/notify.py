"""Ledger change notifications on PostgreSQL: a client hears of a rotation at once.

Migration 0003 installs a trigger that sends NOTIFY on `keyledger_key_changes`
for every new version and status change, whoever wrote it. The listener holds a
connection of its own, outside the session pool (a pooled connection handed to
another request would lose its LISTEN), and calls `on_change` for each change.
When the connection drops it reconnects and calls `on_reconnect`: changes sent
meanwhile are lost, so the client forgets everything it cached. Polling stays
the fallback either way.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable

import psycopg
from sqlalchemy import Engine

log = logging.getLogger(__name__)

CHANNEL = "keyledger_key_changes"

OnChange = Callable[[str, str, uuid.UUID | None], None]


class LedgerListener:
    def __init__(
        self,
        engine: Engine,
        on_change: OnChange,
        on_reconnect: Callable[[], None],
        *,
        poll_s: float = 0.2,
        retry_s: float = 1.0,
    ) -> None:
        url = engine.url.set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._on_change = on_change
        self._on_reconnect = on_reconnect
        self._poll_s = poll_s
        self._retry_s = retry_s
        self._stop = threading.Event()
        self.listening = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="keyledger-ledger-listener", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        interrupted = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self._on_reconnect()
                    self.listening.set()
                    if interrupted:
                        log.info("ledger notifications resumed")
                        interrupted = False
                    while not self._stop.is_set():
                        for notice in connection.notifies(timeout=self._poll_s):
                            self._deliver(notice.payload)
            except psycopg.Error as error:
                # Once per outage, not once per retry. The driver's message can quote
                # the connection string: name the type only.
                log.log(
                    logging.DEBUG if interrupted else logging.WARNING,
                    "ledger notifications interrupted (%s); re-reading the ledger every "
                    "version_check_s meanwhile",
                    type(error).__name__,
                )
                interrupted = True
            self.listening.clear()
            self._stop.wait(self._retry_s)

    def _deliver(self, payload: str) -> None:
        try:
            change = json.loads(payload)
            key_id = uuid.UUID(change["id"]) if change.get("id") else None
            self._on_change(str(change["tenant"]), str(change["key"]), key_id)
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a ledger notification that is not keyledger's")
