"""A key version as the lifecycle core sees it: ledger facts, no ORM."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from keyledger.domain import KeyStatus

# Versions that may still decrypt data written under them.
DECRYPTABLE = frozenset(
    {KeyStatus.ACTIVE, KeyStatus.INACTIVE, KeyStatus.ROTATED, KeyStatus.EXPIRED}
)


@dataclass(frozen=True)
class KeyVersion:
    id: uuid.UUID
    version: int
    status: KeyStatus
    kms_key_id: str | None
    created_at: datetime
    activated_at: datetime | None = None
    expires_at: datetime | None = None
    rotated_at: datetime | None = None
    last_used_at: datetime | None = None
    can_rollback: bool = False
    rollback_expires_at: datetime | None = None


def current_version(versions: list[KeyVersion]) -> KeyVersion | None:
    """The version a user thinks of as "the key": the ACTIVE one, else the newest."""
    for candidate in versions:
        if candidate.status is KeyStatus.ACTIVE:
            return candidate
    return max(versions, key=lambda v: v.version, default=None)
