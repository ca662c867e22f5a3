"""One lock per key, held while a pass acts on it, forgotten when nobody holds it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class KeyLocks:
    """Handlers and the schedule task may act on one key at once; one at a time.

    Each entry counts its holders and waiters and is dropped when that count falls
    to zero, so the map holds only keys being worked on, not every key ever seen."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[threading.Lock, int]] = {}
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, uid: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._entries.get(uid, (threading.Lock(), 0))
            self._entries[uid] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._entries[uid]
                if users == 1:
                    del self._entries[uid]
                else:
                    self._entries[uid] = (lock, users - 1)

    def __len__(self) -> int:
        with self._guard:
            return len(self._entries)
