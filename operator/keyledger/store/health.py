"""What the ledger database tells the operator's probes and metrics.

Only callables go in and out, so that the store knows nothing of Prometheus or
HTTP: the runtime hands in the metric functions, the readiness probe calls the check.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy.exc import SQLAlchemyError

_STARTED = "keyledger_statement_started"


def ledger_answers(engine: Engine) -> Callable[[], str | None]:
    """A check: None while the ledger answers, else why not (never the URL)."""

    def check() -> str | None:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as error:
            # The class name only: a driver message can quote the URL.
            return f"the ledger database does not answer ({type(error).__name__})"
        return None

    return check


def watch_statements(
    engine: Engine, took: Callable[[float], None], failed: Callable[[str], None]
) -> None:
    """Report each statement's duration, and each error's driver class (connecting too)."""

    @event.listens_for(engine, "before_cursor_execute")
    def _started(conn: Any, _cursor: Any, _sql: Any, _params: Any, _ctx: Any, _many: Any) -> None:
        conn.info.setdefault(_STARTED, []).append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def _finished(conn: Any, _cursor: Any, _sql: Any, _params: Any, _ctx: Any, _many: Any) -> None:
        started = conn.info.get(_STARTED)
        if started:
            took(time.perf_counter() - started.pop())

    @event.listens_for(engine, "handle_error")
    def _failed(context: Any) -> None:
        if context.connection is not None:
            context.connection.info.pop(_STARTED, None)
        failed(type(context.original_exception).__name__)
