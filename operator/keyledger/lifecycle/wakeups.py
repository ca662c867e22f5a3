"""When a key next needs the operator's attention, read from its published status."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from keyledger.lifecycle.spec import KeySpec

_EXPIRABLE_PHASES = frozenset({"ACTIVE", "INACTIVE", "ROTATED"})
# Status times are written in whole seconds, truncated: the real moment lies
# up to a second later, so wake a second after the written one, never before.
STATUS_TIME_RESOLUTION = timedelta(seconds=1)


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")) + STATUS_TIME_RESOLUTION
    except ValueError:
        return None


def next_wakeup(spec: KeySpec, status: Mapping[str, Any], now: datetime) -> datetime | None:
    """The earliest scheduled moment after `now`: a rotation, an expiry warning or
    expiry, or a rollback window closing. Computed from status alone, without I/O,
    so that thousands of idle keys cost no database or KMS calls to watch."""
    moments: list[datetime | None] = [_parse(status.get("nextRotationAt"))]
    for entry in status.get("versions") or ():
        if entry.get("phase") in _EXPIRABLE_PHASES:
            expires_at = _parse(entry.get("expiresAt"))
            moments.append(expires_at)
            if expires_at is not None and entry.get("version") == status.get("version"):
                moments.append(expires_at - spec.expiry_warning)
        moments.append(_parse(entry.get("rollbackExpiresAt")))
    future = [m for m in moments if m is not None and m > now]
    return min(future, default=None)


def overdue(spec: KeySpec, status: Mapping[str, Any], since: datetime, now: datetime) -> bool:
    """Whether a scheduled moment fell in (since, now]."""
    upcoming = next_wakeup(spec, status, since)
    return upcoming is not None and upcoming <= now
