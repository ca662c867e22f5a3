"""Every key's next scheduled moment in one heap, and the one task that waits on it.

Handlers run in worker threads and publish each key as they leave it: its body
with the status they wrote, and its next due moment (rotation, expiry warning,
expiry, rollback window close). One task sleeps until the earliest moment of any
key, runs the passes that fell due (a bounded number at once, in threads) and
sleeps again: idle keys cost no task, no wake-up and no timer of their own, only
their drift checks, which are spread at random over the interval. No watch
handler feeds the board: kopf's per-event work for one cost a tenth of the
operator's CPU while keys were created in bulk.

A key's body on the board can be stale: a handler read it before a scheduled
pass wrote the status, or another replica acted while this one was paused. The
board then marks it, and the key's next pass reads the key afresh first.

Passes run only while the board is held. kopf stops every daemon of a replica
that peering pauses (a peer of higher priority is active) and starts them again
when it resumes; the provider daemons hold the board while they run, so a paused
replica runs no scheduled pass, as it runs no handler. When held again, every
key gets a pass at once, from a fresh read: the peer that was active may have
rotated, changed or deleted keys, and kopf runs no handler for what it finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# With nothing published (no handler has built the status yet) a key's pass runs
# this long after the key was first seen, and builds it itself.
FALLBACK = timedelta(seconds=60)
# Passes in flight at once: a burst of due keys queues instead of filling every thread.
CONCURRENT_PASSES = 4


@dataclass(frozen=True)
class Due:
    """What a pass is for: scheduled transitions, the drift check, or both; `reread`:
    the key's body on the board may be stale, read it afresh first."""

    time: bool
    drift: bool
    reread: bool = False


class Unchanged:
    """A pass that left the key's due moment as it was (a drift check that changed nothing)."""


class Unknown:
    """A handler that failed before it could build the key's status: no due moment."""


class Gone:
    """The key no longer exists (its pass read it afresh and found nothing)."""


UNCHANGED = Unchanged()
UNKNOWN = Unknown()
GONE = Gone()

# Runs one key's pass; returns the key's next due moment when the pass built the
# status (None: nothing scheduled), `UNCHANGED`, or `GONE`. Raises when the pass failed.
PassRunner = Callable[[str, T, Due], Awaitable["datetime | Unchanged | Gone | None"]]


@dataclass
class _Key(Generic[T]):
    item: T
    first_seen: datetime
    next_drift: datetime
    due: datetime | None = None
    known: bool = False  # whether anything was published yet
    retry_at: datetime | None = None
    failures: int = 0
    running: bool = False
    # `item` may be stale: the next pass reads the key afresh.
    stale: bool = False
    # When (monotonic) its last pass ended: a handler's body read before then is stale.
    passed_at: float = float("-inf")
    wake: datetime | None = field(default=None, compare=False)

    def next_wake(self) -> datetime:
        if self.retry_at is not None:
            return self.retry_at
        moments = [self.next_drift]
        if self.known and self.due is not None:
            moments.append(self.due)
        if not self.known:
            moments.append(self.first_seen + FALLBACK)
        return min(moments)

    def what_is_due(self, now: datetime) -> Due:
        # A key nothing was published for (its handler has not finished, or failed:
        # a name taken by another resource, a provider not there yet) gets the full
        # pass whenever it wakes, so that it is tried again at least once an interval.
        time_due = (self.due is not None and now >= self.due) or (
            not self.known and (now >= self.first_seen + FALLBACK or now >= self.next_drift)
        )
        return Due(time=time_due, drift=now >= self.next_drift, reread=self.stale)


class ScheduleBoard(Generic[T]):
    """Keys as their handlers left them, their due moments, and the task that runs them.

    `publish` and `forget` are called from any thread; the rest on the event loop."""

    def __init__(
        self,
        drift_interval: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        self._interval = drift_interval
        self._retry_delay: Callable[[int], float] = lambda failures: 10.0
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311  # spreading load, not security
        self._keys: dict[str, _Key[T]] = {}
        self._heap: list[tuple[datetime, int, str]] = []
        self._order = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._passes: set[asyncio.Task[None]] = set()
        # Publications and forgettings made before the task started (no loop yet).
        self._early: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._holders: set[str] = set()
        self._was_held = False

    # -- the handlers' side --------------------------------------------------------

    def publish(self, uid: str, item: T, due: datetime | Unknown | None, read_at: float) -> None:
        """From any thread: the key as a handler left it (`item`), and its next due
        moment (None: nothing scheduled; `UNKNOWN`: the handler failed before it knew).
        `read_at`: when (time.monotonic) the handler's body was read."""
        self._on_loop(lambda: self._publish(uid, item, due, read_at))

    def forget(self, uid: str) -> None:
        """From any thread: the key is gone or being deleted: no more passes for it."""
        self._on_loop(lambda: self._forget(uid))

    def _forget(self, uid: str) -> None:
        self._keys.pop(uid, None)

    def tracked(self) -> int:
        return len(self._keys)

    def due(self, uid: str) -> tuple[bool, datetime | None]:
        """(whether a due moment was published yet, the due moment). On the loop."""
        key = self._keys.get(uid)
        return (key.known, key.due) if key is not None else (False, None)

    def _on_loop(self, change: Callable[[], None]) -> None:
        with self._lock:
            loop = self._loop
            if loop is None:
                self._early.append(change)
                return
        loop.call_soon_threadsafe(change)

    def _publish(self, uid: str, item: T, due: datetime | Unknown | None, read_at: float) -> None:
        key = self._keys.get(uid)
        if key is None:
            now = self._clock()
            key = _Key(item, first_seen=now, next_drift=now + self._interval * self._rng.random())
            self._keys[uid] = key
        else:
            key.item = item
            # A pass that ran (or runs) since the handler read the body wrote after it.
            key.stale = key.running or key.passed_at > read_at
        if not isinstance(due, Unknown):
            key.due, key.known = due, True
        self._reschedule(uid, key)

    # -- who lets passes run ---------------------------------------------------------

    def hold(self, holder: str) -> bool:
        """`holder` (a kopf daemon of this replica) runs: passes may run. On the loop.
        True when the board is held again after a pause: what the replica knew then
        may be stale now."""
        resumed = not self._holders and self._was_held
        if resumed:
            self._refresh_all()
        self._holders.add(holder)
        self._was_held = True
        self.wake()
        return resumed

    def release(self, holder: str) -> None:
        """`holder` stopped; with no holder left, no new pass starts. On the loop."""
        self._holders.discard(holder)

    def _refresh_all(self) -> None:
        """Held again after a pause: every key's pass now, from a fresh read."""
        now = self._clock()
        for uid, key in self._keys.items():
            key.stale, key.due, key.known, key.retry_at = True, now, True, None
            self._reschedule(uid, key)

    # -- the task ------------------------------------------------------------------

    def start(self, run_pass: PassRunner[T], retry_delay: Callable[[int], float]) -> None:
        """Start the task that runs due passes, once; on the event loop. A key whose
        pass failed `n` times in a row is tried again `retry_delay(n)` seconds later."""
        if self._task is not None:
            return
        self._retry_delay = retry_delay
        self._changed = asyncio.Event()
        with self._lock:
            self._loop = asyncio.get_running_loop()
            early, self._early = self._early, []
        for change in early:
            change()
        self._task = asyncio.create_task(self._run(run_pass), name="keyledger schedule")

    def wake(self) -> None:
        """Look at the clock again now (the clock jumped, or a test moved it)."""
        if self._changed is not None:
            self._changed.set()

    async def stop(self, timeout: float) -> None:
        """Stop starting passes; give the ones in flight `timeout` seconds to finish."""
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        if self._passes:
            await asyncio.wait(self._passes, timeout=timeout)

    async def _run(self, run_pass: PassRunner[T]) -> None:
        assert self._changed is not None
        slots = asyncio.Semaphore(CONCURRENT_PASSES)
        while True:
            self._changed.clear()
            now = self._clock()
            while self._holders and self._heap and self._heap[0][0] <= now:
                wake, _, uid = heapq.heappop(self._heap)
                key = self._keys.get(uid)
                if key is None or key.wake != wake or key.running:
                    continue  # forgotten, rescheduled since, or its pass is running
                key.running, key.wake = True, None
                task = asyncio.create_task(self._pass(uid, key, run_pass, slots))
                self._passes.add(task)
                task.add_done_callback(self._passes.discard)
            # Unheld, it sleeps until held again (or a key changes).
            soonest = self._heap[0][0] if self._holders and self._heap else None
            timeout = (soonest - now).total_seconds() if soonest is not None else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    async def _pass(
        self, uid: str, key: _Key[T], run_pass: PassRunner[T], slots: asyncio.Semaphore
    ) -> None:
        try:
            async with slots:
                if not self._holders:
                    return  # paused while it queued: it runs when held again
                now = self._clock()
                due = key.what_is_due(now)
                key.retry_at = None
                if not (due.time or due.drift):
                    return  # woken early (a retry, a publication since): plan again
                # Cleared before the pass: a publication while it runs marks it again.
                key.stale = False
                try:
                    next_due = await run_pass(uid, key.item, due)
                except Exception:  # reported by run_pass; retried here
                    key.stale = key.stale or due.reread
                    key.failures += 1
                    key.retry_at = now + timedelta(seconds=self._retry_delay(key.failures))
                    return
                key.failures = 0
                if isinstance(next_due, Gone):
                    self._keys.pop(uid, None)
                    return
                if due.drift:
                    key.next_drift = now + self._interval * self._rng.uniform(0.9, 1.1)
                if not isinstance(next_due, Unchanged):
                    key.due, key.known = next_due, True
        finally:
            key.running = False
            key.passed_at = time.monotonic()
            if self._keys.get(uid) is key:
                self._reschedule(uid, key)

    def _reschedule(self, uid: str, key: _Key[T]) -> None:
        if key.running:
            return  # rescheduled when its pass ends
        wake = key.next_wake()
        if wake == key.wake:
            return
        key.wake = wake
        heapq.heappush(self._heap, (wake, next(self._order), uid))
        if len(self._heap) > 2 * len(self._keys) + 64:
            # Superseded moments linger until popped: drop them all at once.
            self._heap = [
                (k.wake, next(self._order), u) for u, k in self._keys.items() if k.wake is not None
            ]
            heapq.heapify(self._heap)
        if self._changed is not None and self._heap[0][2] == uid:
            self._changed.set()  # earlier than the moment the task sleeps until
