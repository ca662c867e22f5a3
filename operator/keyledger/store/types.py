"""Column types that behave the same on PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps.

    SQLite stores no offset, so naive values read back are taken as UTC; naive
    values written are refused, because a naive "now" is a bug waiting for a
    server in another timezone.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("ledger timestamps must be timezone-aware (UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return _in_utc(value)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], Any]:
        # TypeDecorator's own wraps the impl's processor and process_result_value in a
        # function of its own: two calls per value, five values per version a pass reads.
        # The same steps, the impl's kept, one call fewer (none on psycopg: no impl's).
        parse = self.impl_instance.result_processor(dialect, coltype)
        if parse is None:
            return _in_utc
        return lambda value: _in_utc(parse(value))


def _in_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is UTC:
        return value  # as psycopg reads it from a session in UTC: no copy to make
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


# JSONB on PostgreSQL (indexable, compact), plain JSON text elsewhere.
JsonDocument: Any = JSON().with_variant(JSONB(), "postgresql")
