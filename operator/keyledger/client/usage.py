"""`last_used_at` (and `last_refused_at`) in batches: one ledger write per version per
flush, not per call."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from keyledger.store.repository import KeyLedger

log = logging.getLogger(__name__)

REFUSED_FLUSH_S = 1.0


class UsageRecorder:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        flush_interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._interval = flush_interval_s
        self._clock = clock
        self._pending: dict[uuid.UUID, datetime] = {}
        self._refused: dict[uuid.UUID, datetime] = {}
        self._lock = threading.Lock()
        self._last_flush = clock()
        self._last_refused_flush = float("-inf")

    def record(self, key_id: uuid.UUID) -> None:
        """Note a use now; flush if the interval has passed."""
        with self._lock:
            self._pending[key_id] = datetime.now(UTC)
            due = self._clock() - self._last_flush >= self._interval
        if due:
            self.flush()

    def record_refused(self, key_id: uuid.UUID) -> None:
        """Note an open refused now (a compromised version): its data is still around."""
        now = self._clock()
        with self._lock:
            self._refused[key_id] = datetime.now(UTC)
            # What "safe to destroy" waits on, so written soon; but a service retrying
            # a refused open in a loop must not turn into a write per call.
            due = now - self._last_refused_flush >= REFUSED_FLUSH_S
            if due:
                self._last_refused_flush = now
        if due:
            self.flush()

    def flush(self) -> None:
        """Write what is pending. A ledger that cannot be written keeps it for next
        time: encryption must not fail because a timestamp could not be saved."""
        with self._lock:
            pending, self._pending = self._pending, {}
            refused, self._refused = self._refused, {}
            self._last_flush = self._clock()
        if not pending and not refused:
            return
        try:
            with self._sessions.begin() as session:
                ledger = KeyLedger(session)
                ledger.mark_used(pending)
                ledger.mark_refused(refused)
        except SQLAlchemyError as error:
            log.warning(
                "could not record last use of %d key versions, will retry: %s",
                len(pending) + len(refused),
                type(error).__name__,
            )
            with self._lock:
                for key_id, used_at in pending.items():
                    self._pending.setdefault(key_id, used_at)
                for key_id, refused_at in refused.items():
                    self._refused.setdefault(key_id, refused_at)
