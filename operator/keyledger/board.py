"""Every key's next scheduled moment in one heap, and the one task that waits on it.

Handlers run in worker threads and publish a key's next due moment (rotation,
expiry warning, expiry, rollback window close) when they build its status; the
watch keeps each key's latest body here. One task sleeps until the earliest
moment of any key, runs the passes that fell due (a bounded number at once, in
threads) and sleeps again: idle keys cost no task, no wake-up and no timer of
their own, only their drift checks, which are spread at random over the interval.

Passes run only while the board is held. kopf stops every daemon of a replica
that peering pauses (a peer of higher priority is active) and starts them again
when it resumes; the provider daemons hold the board while they run, so a paused
replica runs no scheduled pass, as it runs no handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import threading
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
    """What a pass is for: scheduled transitions, the drift check, or both."""

    time: bool
    drift: bool


# Runs one key's pass; returns the key's next due moment when the pass built the
# status (None: nothing scheduled), or `UNCHANGED`. Raises when the pass failed.
PassRunner = Callable[[str, T, Due], Awaitable["datetime | Unchanged | None"]]


class Unchanged:
    """A pass that left the key's due moment as it was (a drift check that changed nothing)."""


UNCHANGED = Unchanged()


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
        return Due(time=time_due, drift=now >= self.next_drift)


class ScheduleBoard(Generic[T]):
    """Keys tracked from the watch, their due moments, and the task that runs them.

    `track`, `forget`, `start` and `stop` are called on the event loop; `publish`
    from any thread."""

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
        # Publications that arrived before the key was tracked, or before the loop ran.
        self._early: dict[str, datetime | None] = {}
        self._lock = threading.Lock()
        self._holders: set[str] = set()

    # -- the watch's side ---------------------------------------------------------

    def track(self, uid: str, item: T) -> None:
        """The key exists, as `item` shows it now (its latest body)."""
        key = self._keys.get(uid)
        if key is not None:
            key.item = item
            return
        now = self._clock()
        key = _Key(item, first_seen=now, next_drift=now + self._interval * self._rng.random())
        with self._lock:
            if uid in self._early:
                key.due, key.known = self._early.pop(uid), True
        self._keys[uid] = key
        self._reschedule(uid, key)

    def forget(self, uid: str) -> None:
        """The key is gone or being deleted: no more passes for it."""
        self._keys.pop(uid, None)
        with self._lock:
            self._early.pop(uid, None)

    def tracked(self) -> int:
        return len(self._keys)

    # -- the handlers' side --------------------------------------------------------

    def publish(self, uid: str, due: datetime | None) -> None:
        """From any thread: the key's next due moment is now `due`."""
        loop = self._loop
        if loop is None:
            with self._lock:
                self._early[uid] = due
            return
        loop.call_soon_threadsafe(self._set_due, uid, due)

    def due(self, uid: str) -> tuple[bool, datetime | None]:
        """(whether anything was published yet, the due moment). On the loop."""
        key = self._keys.get(uid)
        if key is None:
            with self._lock:
                return (True, self._early[uid]) if uid in self._early else (False, None)
        return key.known, key.due

    def _set_due(self, uid: str, due: datetime | None) -> None:
        key = self._keys.get(uid)
        if key is None:
            with self._lock:
                self._early[uid] = due
            return
        key.due, key.known = due, True
        self._reschedule(uid, key)

    # -- who lets passes run ---------------------------------------------------------

    def hold(self, holder: str) -> None:
        """`holder` (a kopf daemon of this replica) runs: passes may run. On the loop."""
        self._holders.add(holder)
        self.wake()

    def release(self, holder: str) -> None:
        """`holder` stopped; with no holder left, no new pass starts. On the loop."""
        self._holders.discard(holder)

    # -- the task ------------------------------------------------------------------

    def start(self, run_pass: PassRunner[T], retry_delay: Callable[[int], float]) -> None:
        """Start the task that runs due passes, once; on the event loop. A key whose
        pass failed `n` times in a row is tried again `retry_delay(n)` seconds later."""
        if self._task is not None:
            return
        self._retry_delay = retry_delay
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        with self._lock:
            early, self._early = self._early, {}
        for uid, due in early.items():
            self._set_due(uid, due)
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
                try:
                    next_due = await run_pass(uid, key.item, due)
                except Exception:  # reported by run_pass; retried here
                    key.failures += 1
                    key.retry_at = now + timedelta(seconds=self._retry_delay(key.failures))
                    return
                key.failures = 0
                if due.drift:
                    key.next_drift = now + self._interval * self._rng.uniform(0.9, 1.1)
                if not isinstance(next_due, Unchanged):
                    key.due, key.known = next_due, True
        finally:
            key.running = False
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
