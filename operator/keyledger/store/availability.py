"""A ledger that cannot be reached is a condition to report and wait out, not a crash."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError

from keyledger.errors import LedgerUnavailable

P = ParamSpec("P")
T = TypeVar("T")


def ledger_reachable(operation: Callable[P, T]) -> Callable[P, T]:
    """Turn "cannot talk to the database" into LedgerUnavailable.

    The driver's own message is left out (`from None`): it can quote SQL and its
    parameters. What was begun rolls back with the failed transaction."""

    @functools.wraps(operation)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return operation(*args, **kwargs)
        except (OperationalError, InterfaceError) as error:
            raise LedgerUnavailable(
                f"the ledger database is unreachable ({type(error.orig or error).__name__}); "
                "nothing was changed, retrying"
            ) from None

    return guarded
