"""Durations as written in specs: `90d`, `12h`, `1h30m`, `5s`."""

from __future__ import annotations

import re
from datetime import timedelta

from keyledger.errors import InvalidSpec

# Mirrors the CRD's pattern, so that what the API server accepts parses here.
DURATION_PATTERN = r"^([0-9]+[smhd])+$"
_PART = re.compile(r"([0-9]+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str, field: str) -> timedelta:
    """Parse a duration; `field` names the spec field for the error message."""
    if not re.fullmatch(DURATION_PATTERN, value):
        raise InvalidSpec(
            f"{field}: {value!r} is not a duration; write a number and a unit s, m, h or d, "
            "e.g. 90d, 12h or 1h30m"
        )
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(value))
    if seconds == 0:
        raise InvalidSpec(f"{field}: {value!r} is zero; use a positive duration such as 1h")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The shortest spec-style spelling of `delta` (whole seconds)."""
    remaining = int(delta.total_seconds())
    if remaining <= 0:
        return "0s"
    parts = []
    for unit in ("d", "h", "m", "s"):
        count, remaining = divmod(remaining, _UNIT_SECONDS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
