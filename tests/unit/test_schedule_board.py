"""The board runs each key's pass when it falls due, from one task for all keys."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from keyledger.board import (
    FALLBACK,
    GONE,
    UNCHANGED,
    UNKNOWN,
    Due,
    Gone,
    ScheduleBoard,
    Unchanged,
)
from keyledger.lifecycle.spec import ProviderKind
from keyledger.operations.backends import BackendCache
from keyledger.operations.keys import KeyOperations
from keyledger.operations.providers import ProviderView
from keyledger.runtime import Runtime
from keyledger.settings import Settings

DUE = datetime(2026, 1, 1, tzinfo=UTC)
INTERVAL = timedelta(minutes=10)


class Clock:
    """A clock the test moves; after each move it wakes the board's task and lets
    it run by yielding to the loop."""

    def __init__(self) -> None:
        self.now = DUE - timedelta(hours=1)

    def __call__(self) -> datetime:
        return self.now


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def _board(clock: Clock) -> ScheduleBoard[str]:
    return ScheduleBoard(INTERVAL, clock=clock, rng=random.Random(1))


# When handlers read the bodies they publish (time.monotonic): long before any pass.
READ_EARLY = float("-inf")


async def _ignore(uid: str, item: str, due: Due) -> datetime | Unchanged | Gone | None:
    return None


def test_a_publication_before_the_task_starts_is_kept() -> None:
    async def scenario() -> tuple[bool, datetime | None]:
        board = _board(Clock())
        board.publish("uid-1", "body", DUE, READ_EARLY)  # a resume handler, before start
        board.start(_ignore, lambda failures: 1.0)
        await _settle()
        due = board.due("uid-1")
        await board.stop(1.0)
        return due

    assert asyncio.run(scenario()) == (True, DUE)


def test_a_key_gets_its_pass_when_its_published_moment_comes() -> None:
    clock = Clock()
    passes: list[tuple[str, str, Due]] = []

    async def run_pass(uid: str, item: str, due: Due) -> datetime | Unchanged | Gone | None:
        passes.append((uid, item, due))
        return None  # nothing scheduled after it

    async def scenario() -> None:
        board = ScheduleBoard[str](timedelta(days=1), clock=clock, rng=random.Random(1))
        board.publish("uid-1", "body v1", UNKNOWN, READ_EARLY)  # its handler failed
        board.start(run_pass, lambda failures: 1.0)
        board.hold("provider-daemon")
        board.publish("uid-1", "body v2", DUE, READ_EARLY)  # the newer body is the one passed
        await _settle()
        assert passes == []
        clock.now = DUE
        board.wake()
        await _settle()
        await board.stop(1.0)

    asyncio.run(scenario())
    assert passes == [("uid-1", "body v2", Due(time=True, drift=False))]


def test_drift_checks_are_spread_over_the_interval_and_repeat() -> None:
    clock = Clock()
    checks: list[str] = []

    async def run_pass(uid: str, item: str, due: Due) -> datetime | Unchanged | Gone | None:
        assert due == Due(time=False, drift=True)
        checks.append(uid)
        return UNCHANGED

    async def scenario() -> None:
        board = _board(clock)
        board.start(run_pass, lambda failures: 1.0)
        board.hold("provider-daemon")
        for n in range(100):
            board.publish(f"uid-{n}", "body", None, READ_EARLY)
        for _ in range(20):  # two intervals, in steps of a minute
            clock.now += INTERVAL / 10
            board.wake()
            await _settle()
        await board.stop(1.0)

    asyncio.run(scenario())
    # Every key checked about twice (0.9 to 1.1 intervals apart), none more than three times.
    assert sorted(set(checks)) == sorted(f"uid-{n}" for n in range(100))
    assert 150 <= len(checks) <= 300
    assert max(checks.count(uid) for uid in set(checks)) <= 3


def test_a_key_nothing_was_published_for_builds_its_status_after_the_fallback() -> None:
    clock = Clock()
    passes: list[Due] = []

    async def run_pass(uid: str, item: str, due: Due) -> datetime | Unchanged | Gone | None:
        passes.append(due)
        return None

    async def scenario() -> None:
        board = ScheduleBoard[str](timedelta(days=1), clock=clock, rng=random.Random(1))
        board.start(run_pass, lambda failures: 1.0)
        board.hold("provider-daemon")
        board.publish("uid-1", "body", UNKNOWN, READ_EARLY)
        await _settle()
        clock.now += FALLBACK
        board.wake()
        await _settle()
        await board.stop(1.0)

    asyncio.run(scenario())
    assert passes[0].time


def test_a_failed_pass_is_retried_after_the_delay_and_a_forgotten_key_is_not() -> None:
    clock = Clock()
    attempts: list[str] = []

    async def run_pass(uid: str, item: str, due: Due) -> datetime | Unchanged | Gone | None:
        attempts.append(uid)
        raise RuntimeError("KMS down")

    async def scenario() -> None:
        board = _board(clock)
        board.start(run_pass, lambda failures: 30.0 * failures)
        board.hold("provider-daemon")
        board.publish("uid-1", "body", DUE, READ_EARLY)
        board.publish("uid-2", "body", DUE, READ_EARLY)
        clock.now = DUE
        board.wake()
        await _settle()
        assert sorted(attempts) == ["uid-1", "uid-2"]
        board.forget("uid-2")
        clock.now = DUE + timedelta(seconds=29)
        board.wake()
        await _settle()
        assert len(attempts) == 2  # not yet
        clock.now = DUE + timedelta(seconds=30)
        board.wake()
        await _settle()
        await board.stop(1.0)

    asyncio.run(scenario())
    assert sorted(attempts) == ["uid-1", "uid-1", "uid-2"]


def test_passes_run_only_while_held_and_a_due_key_waits_for_the_next_holder() -> None:
    """kopf stops a paused replica's daemons: with no holder, nothing falls due."""
    clock = Clock()
    passes: list[str] = []

    async def run_pass(uid: str, item: str, due: Due) -> datetime | Unchanged | Gone | None:
        passes.append(uid)
        return None

    async def scenario() -> None:
        board = ScheduleBoard[str](timedelta(days=1), clock=clock, rng=random.Random(1))
        board.start(run_pass, lambda failures: 1.0)
        board.hold("provider-a")
        board.hold("provider-b")
        board.publish("uid-1", "body", DUE, READ_EARLY)
        board.publish("uid-2", "body", DUE + timedelta(hours=1), READ_EARLY)
        await _settle()
        board.release("provider-a")
        clock.now = DUE
        board.wake()
        await _settle()
        assert passes == ["uid-1"]  # one holder is enough
        board.release("provider-b")  # the replica paused
        clock.now = DUE + timedelta(hours=2)
        board.wake()
        await _settle()
        assert passes == ["uid-1"]
        board.hold("provider-a")  # resumed: every key's pass now, read afresh
        await _settle()
        await board.stop(1.0)

    asyncio.run(scenario())
    assert passes[0] == "uid-1"
    assert sorted(passes[1:]) == ["uid-1", "uid-2"]


def test_a_key_nothing_was_published_for_gets_the_full_pass_at_each_wake() -> None:
    """Its handler failed (the name was another resource's): every drift wake is a
    retry of the whole pass, not a drift check alone."""
    clock = Clock()
    passes: list[Due] = []

    async def run_pass(uid: str, item: str, due: Due) -> datetime | Unchanged | Gone | None:
        passes.append(due)
        raise RuntimeError("spec.keyName: taken")

    async def scenario() -> None:
        board = ScheduleBoard[str](timedelta(seconds=10), clock=clock, rng=random.Random(1))
        board.start(run_pass, lambda failures: 3600.0)
        board.hold("provider-daemon")
        board.publish("uid-1", "body", UNKNOWN, READ_EARLY)
        await _settle()
        clock.now += timedelta(seconds=10)  # past the first drift wake, before FALLBACK
        board.wake()
        await _settle()
        await board.stop(1.0)

    asyncio.run(scenario())
    assert passes == [Due(time=True, drift=True)]


def test_a_replica_held_again_reads_every_key_afresh_and_runs_its_whole_pass() -> None:
    """The peer that was active while this replica was paused may have rotated,
    changed or deleted any key, and kopf runs no handler for what the peer finished."""
    clock = Clock()
    passes: list[tuple[str, Due]] = []

    async def run_pass(uid: str, item: str, due: Due) -> datetime | Unchanged | Gone | None:
        passes.append((uid, due))
        return GONE if uid == "uid-2" else DUE + timedelta(days=1)

    async def scenario() -> None:
        board = _board(clock)
        board.start(run_pass, lambda failures: 1.0)
        assert not board.hold("provider-a")  # the first hold, at start-up
        board.publish("uid-1", "body", DUE, READ_EARLY)
        board.publish("uid-2", "body", DUE, READ_EARLY)
        await _settle()
        assert passes == []
        board.release("provider-a")  # paused
        await _settle()
        assert board.hold("provider-a")  # resumed
        assert not board.hold("provider-b")  # held already
        await _settle()
        assert sorted(passes) == sorted(
            [(uid, Due(time=True, drift=False, reread=True)) for uid in ("uid-1", "uid-2")]
        )
        assert board.tracked() == 1  # uid-2 was deleted meanwhile
        assert board.due("uid-1") == (True, DUE + timedelta(days=1))
        await board.stop(1.0)

    asyncio.run(scenario())


def test_a_body_a_handler_read_before_a_pass_wrote_is_read_afresh_at_the_next_pass() -> None:
    clock = Clock()
    passes: list[tuple[str, Due]] = []

    async def run_pass(uid: str, item: str, due: Due) -> datetime | Unchanged | Gone | None:
        passes.append((item, due))
        return UNCHANGED

    async def scenario() -> None:
        board = ScheduleBoard[str](timedelta(seconds=10), clock=clock, rng=random.Random(1))
        board.start(run_pass, lambda failures: 1.0)
        board.hold("provider-daemon")
        read_before = time.monotonic()
        board.publish("uid-1", "body v1", None, READ_EARLY)
        await _settle()
        clock.now += timedelta(seconds=11)  # the first drift check writes the status
        board.wake()
        await _settle()
        # A handler that read the key before that check publishes it after: stale.
        board.publish("uid-1", "body v2", None, read_before)
        await _settle()
        clock.now += timedelta(seconds=11)
        board.wake()
        await _settle()
        # One that read it after the check is not.
        board.publish("uid-1", "body v3", None, time.monotonic())
        await _settle()
        clock.now += timedelta(seconds=11)
        board.wake()
        await _settle()
        await board.stop(1.0)

    asyncio.run(scenario())
    assert passes == [
        ("body v1", Due(time=False, drift=True, reread=False)),
        ("body v2", Due(time=False, drift=True, reread=True)),
        ("body v3", Due(time=False, drift=True, reread=False)),
    ]


def test_a_forgotten_key_gets_no_pass() -> None:
    clock = Clock()
    passes: list[str] = []

    async def run_pass(uid: str, item: str, due: Due) -> datetime | Unchanged | Gone | None:
        passes.append(uid)
        return None

    async def scenario() -> None:
        board = _board(clock)
        board.start(run_pass, lambda failures: 1.0)
        board.hold("provider-daemon")
        board.publish("uid-1", "body", DUE, READ_EARLY)
        board.forget("uid-1")  # from the delete handler's thread, in practice
        await _settle()
        clock.now = DUE
        board.wake()
        await _settle()
        await board.stop(1.0)

    asyncio.run(scenario())
    assert passes == []


def test_a_resumed_replica_opens_its_backends_afresh(tmp_path: Path) -> None:
    """The peer acted while this replica was paused: nothing a backend kept from
    before (the vault backend's state documents) may answer for what it did."""
    backends = BackendCache(Settings(data_dir=tmp_path), lambda namespace, name: {})
    runtime = Runtime(
        settings=Settings(data_dir=tmp_path),
        keys=cast(KeyOperations, None),  # no pass runs here
        backends=backends,
        board=_board(Clock()),
        ledger_ready=lambda: None,
    )
    view = ProviderView(
        kind=ProviderKind.CLUSTER,
        namespace=None,
        name="local",
        backend="local",
        options={"keystore": "k"},
        ready=True,
    )
    before = backends.open(view)
    runtime.hold("provider-a")  # start-up
    runtime.hold("provider-b")
    assert backends.open(view) is before
    runtime.board.release("provider-a")
    runtime.board.release("provider-b")  # paused
    runtime.hold("provider-a")  # resumed
    assert backends.open(view) is not before
