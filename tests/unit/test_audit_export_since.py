"""`keyledger audit export --since` takes a time or a duration back from now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keyledger.cli.audit import parse_since

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_a_duration_counts_back_from_now() -> None:
    assert parse_since("24h", NOW) == NOW - timedelta(hours=24)
    assert parse_since("7d", NOW) == NOW - timedelta(days=7)


def test_a_time_without_offset_is_utc() -> None:
    assert parse_since("2026-11-01T00:00:00Z", NOW) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("2026-11-01T00:00:00", NOW) == datetime(2026, 11, 1, tzinfo=UTC)


def test_anything_else_names_the_option_and_both_spellings() -> None:
    with pytest.raises(
        SystemExit, match=r"--since 'yesterday' is neither a time .* nor a duration"
    ):
        parse_since("yesterday", NOW)
