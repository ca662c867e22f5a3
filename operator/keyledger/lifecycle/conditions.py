"""Kubernetes-style status conditions, built and merged without I/O."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

READY = "Ready"
ROTATING = "Rotating"
ROLLBACK_AVAILABLE = "RollbackAvailable"
EXPIRING = "Expiring"
DRIFTED = "Drifted"
PAUSED = "Paused"


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


def rfc3339(moment: datetime) -> str:
    if moment.tzinfo is UTC:
        return _utc_rfc3339(moment)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


# A status shows the same moments pass after pass (five per version, up to ten
# versions): each is spelled once while it is among the last few thousand seen. UTC
# moments only: equal instants in other zones are equal keys, spelled otherwise.
@lru_cache(maxsize=4096)
def _utc_rfc3339(moment: datetime) -> str:
    # The ledger's and the clock's moments, spelled out directly: in half the time
    # isoformat (or an f-string) takes, and a status shows several per version.
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (  # noqa: UP031
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
    )


def merge_conditions(
    existing: Sequence[dict[str, Any]] | None,
    updates: Iterable[Condition],
    *,
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """Apply `updates` to `existing`, keeping lastTransitionTime while a status holds.

    Conditions not named in `updates` are kept as they are.
    """
    merged = {c["type"]: dict(c) for c in existing or ()}
    for update in updates:
        status = "True" if update.status else "False"
        previous = merged.get(update.type)
        transition = (
            previous["lastTransitionTime"]
            if previous and previous.get("status") == status and "lastTransitionTime" in previous
            else rfc3339(now)
        )
        entry: dict[str, Any] = {
            "type": update.type,
            "status": status,
            "reason": update.reason,
            "message": update.message,
            "lastTransitionTime": transition,
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        merged[update.type] = entry
    return sorted(merged.values(), key=lambda c: _ORDER.get(c["type"], len(_ORDER)))


_ORDER = {
    name: i for i, name in enumerate((READY, ROTATING, ROLLBACK_AVAILABLE, EXPIRING, DRIFTED))
}
