"""`last_used_at` (and `last_refused_at`) in batches: one ledger write per version per
flush, not per call."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from keyledger.store.repository import KeyLedger

log = logging.getLogger(__name__)

REFUSED_FLUSH_S = 1.0


class LastUse:
    """When one key version was last used, on the recorder's clock.

    The per-call paths hold their version's slot and store a float in it: no lock,
    no dictionary, no datetime per call. Concurrent stores may leave a time a few
    microseconds older than the newest: far finer than the ledger needs."""

    __slots__ = ("at", "written")

    def __init__(self) -> None:
        self.at = float("-inf")
        self.written = float("-inf")


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
        # One slot per version this process used; the ledger's versions bound them.
        self._uses: dict[uuid.UUID, LastUse] = {}
        self._refused: dict[uuid.UUID, datetime] = {}
        self._lock = threading.Lock()
        self.flush_due = clock() + flush_interval_s
        self._last_refused_flush = float("-inf")

    def slot(self, key_id: uuid.UUID) -> LastUse:
        """The slot a per-call path stores its times in for `key_id`."""
        with self._lock:
            return self._uses.setdefault(key_id, LastUse())

    def record(self, key_id: uuid.UUID) -> None:
        """Note a use now; flush if the interval has passed."""
        now = self._clock()
        self.slot(key_id).at = now
        self.tick(now)

    def tick(self, now: float) -> None:
        """Flush if the interval has passed by `now` (the recorder's clock)."""
        if now >= self.flush_due:
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
            now = self._clock()
            self.flush_due = now + self._interval
            wall = datetime.now(UTC)
            taken = [(key_id, use, use.at) for key_id, use in self._uses.items()]
            refused, self._refused = self._refused, {}
        pending = {
            key_id: wall - timedelta(seconds=max(now - at, 0.0))
            for key_id, use, at in taken
            if at > use.written
        }
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
                for key_id, refused_at in refused.items():
                    self._refused.setdefault(key_id, refused_at)
            return
        for _, use, at in taken:
            use.written = max(use.written, at)
