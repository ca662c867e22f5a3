"""A pooled ledger connection that idled is pinged before use, and handed over as
the session asking for it needs it: a read session's autocommit included."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from keyledger.store import engine as store_engine
from keyledger.store.engine import make_read_session_factory, make_session_factory


def test_a_read_session_gets_an_idle_connection_it_can_use(
    ledger_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a quiet spell (a paused replica, a small install between drift checks)
    the first read took the pinged connection still inside the ping's transaction,
    and failed: "can't change 'autocommit' now: connection in transaction"."""
    sessions = make_session_factory(ledger_engine)
    reads = make_read_session_factory(sessions)
    with sessions.begin() as session:
        session.execute(text("SELECT 1"))  # a connection, back in the pool now
    monkeypatch.setattr(store_engine, "_PING_AFTER_IDLE_S", 0.0)  # every checkout is idle
    for _ in range(3):
        with reads() as session:
            assert session.execute(text("SELECT 2")).scalar_one() == 2
        with sessions.begin() as session:
            assert session.execute(text("SELECT 3")).scalar_one() == 3
