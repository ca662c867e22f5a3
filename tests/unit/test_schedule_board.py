"""The board hands each key's task the next due moment, whoever comes first."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from keyledger.board import ScheduleBoard

DUE = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_publication_before_the_task_attaches_is_kept() -> None:
    async def scenario() -> tuple[bool, datetime | None]:
        board = ScheduleBoard()
        board.publish("uid-1", DUE)  # the create handler finished first
        board.attach("uid-1")
        return board.due("uid-1")

    assert asyncio.run(scenario()) == (True, DUE)


def test_a_publication_wakes_the_sleeping_task() -> None:
    async def scenario() -> tuple[float, tuple[bool, datetime | None]]:
        board = ScheduleBoard()
        board.attach("uid-1")
        stop: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, board.publish, "uid-1", DUE)
        started = loop.time()
        await board.sleep("uid-1", 30, stop)
        return loop.time() - started, board.due("uid-1")

    slept, due = asyncio.run(scenario())
    assert slept < 5
    assert due == (True, DUE)


def test_detach_forgets_the_key() -> None:
    async def scenario() -> tuple[bool, datetime | None]:
        board = ScheduleBoard()
        board.attach("uid-1")
        board.publish("uid-1", DUE)
        board.detach("uid-1")
        return board.due("uid-1")

    assert asyncio.run(scenario()) == (False, None)
