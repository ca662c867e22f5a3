"""Where handlers post each key's next scheduled moment, and its sleeping task waits.

Handlers run in worker threads; each key's schedule task sleeps on the event
loop. A handler that changes a key publishes the key's next due moment, which
wakes the task at once instead of after its fallback nap.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class _Slot:
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)
    due: datetime | None = None
    known: bool = False


class ScheduleBoard:
    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}
        # Publications that arrived before the key's task attached: kopf starts a
        # new key's handler and its daemon together, and either may come first.
        self._early: dict[str, datetime | None] = {}
        self._lock = threading.Lock()

    def attach(self, uid: str) -> None:
        """Called by the key's task, on the event loop, before it first waits."""
        with self._lock:
            slot = self._slots.setdefault(uid, _Slot(loop=asyncio.get_running_loop()))
            if uid in self._early:
                slot.due, slot.known = self._early.pop(uid), True

    def detach(self, uid: str) -> None:
        with self._lock:
            self._slots.pop(uid, None)
            self._early.pop(uid, None)

    def publish(self, uid: str, due: datetime | None) -> None:
        """From any thread: the key's next due moment is now `due`."""
        with self._lock:
            slot = self._slots.get(uid)
            if slot is None:
                self._early[uid] = due
                return
            slot.due, slot.known = due, True
        slot.loop.call_soon_threadsafe(slot.event.set)

    def due(self, uid: str) -> tuple[bool, datetime | None]:
        """(whether anything was published yet, the due moment)."""
        with self._lock:
            slot = self._slots.get(uid)
            return (slot.known, slot.due) if slot else (False, None)

    async def sleep(self, uid: str, seconds: float, stop: asyncio.Future[object]) -> None:
        """Sleep up to `seconds`; wake early when something is published for `uid`
        or `stop` completes."""
        with self._lock:
            slot = self._slots.get(uid)
        waiters: set[asyncio.Future[Any]] = {stop}
        published = None
        if slot is not None:
            published = asyncio.ensure_future(slot.event.wait())
            waiters.add(published)
        try:
            await asyncio.wait(
                waiters, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if published is not None:
                published.cancel()
            if slot is not None:
                slot.event.clear()
