"""A key version as the lifecycle core sees it: ledger facts, no ORM."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
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
    activated_at: datetime | None = None
    expires_at: datetime | None = None
    rotated_at: datetime | None = None
    last_used_at: datetime | None = None
    can_rollback: bool = False
    rollback_expires_at: datetime | None = None
    parent_id: uuid.UUID | None = None
    # Who caused the version's row (the ledger's created_by): finishing it is theirs too.
    created_by: str | None = None


def current_version(versions: Sequence[KeyVersion]) -> KeyVersion | None:
    """The version a user thinks of as "the key".

    The ACTIVE one; else the one activated last, whatever became of it since
    (INACTIVE by spec.state, COMPROMISED, EXPIRED): never an older version a
    rollback moved away from, which is INACTIVE too but was activated before the
    version rolled back to; else the newest that is not PENDING.
    """
    settled = [v for v in versions if v.status is not KeyStatus.PENDING]
    for candidate in settled:
        if candidate.status is KeyStatus.ACTIVE:
            return candidate
    activated = [v for v in settled if v.activated_at is not None]
    if activated:
        return max(activated, key=lambda v: (v.activated_at, v.version))
    return max(settled, key=lambda v: v.version, default=None)


def pending_version(versions: Sequence[KeyVersion]) -> KeyVersion | None:
    return next((v for v in versions if v.status is KeyStatus.PENDING), None)


def by_id(versions: Sequence[KeyVersion], version_id: uuid.UUID | None) -> KeyVersion | None:
    return next((v for v in versions if v.id == version_id), None)
