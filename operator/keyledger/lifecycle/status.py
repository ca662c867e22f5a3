"""Builds an EncryptionKey's status and conditions from ledger versions, spec and time."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from keyledger.domain import KeyStatus
from keyledger.lifecycle.conditions import (
    DRIFTED,
    EXPIRING,
    PAUSED,
    READY,
    ROLLBACK_AVAILABLE,
    ROTATING,
    Condition,
    rfc3339,
)
from keyledger.lifecycle.plan import rollback_refusal
from keyledger.lifecycle.schedule import build_schedule
from keyledger.lifecycle.spec import DesiredState, KeySpec
from keyledger.lifecycle.versions import KeyVersion, by_id, current_version, pending_version

# Status keeps this many versions; the ledger keeps them all.
VERSION_HISTORY_LIMIT = 10


@dataclass(frozen=True)
class Drift:
    """What the last drift check saw of the current version in the KMS."""

    drifted: bool
    message: str


@dataclass(frozen=True)
class KeyStatusView:
    fields: dict[str, Any]
    conditions: list[Condition]
    # The next moment something scheduled changes (None: nothing scheduled).
    next_due: datetime | None = None


def _time(moment: datetime | None) -> str | None:
    return rfc3339(moment) if moment is not None else None


# A status names the same versions pass after pass. The Enum's `value` is a property
# and a UUID spells itself in Python: together half of what an entry costs to make.
_PHASES = {status: status.value for status in KeyStatus}


# The last few thousand version ids' text, remembered as rfc3339 remembers moments;
# by the id's number, which hashes in C (a UUID hashes in Python).
@lru_cache(maxsize=4096)
def key_id_text(number: int) -> str:
    return str(uuid.UUID(int=number))


def _version_entry(version: KeyVersion) -> dict[str, Any]:
    # Built field by field, a moment only where the version has one: a pass makes
    # one for every version it shows.
    entry: dict[str, Any] = {
        "version": version.version,
        "phase": _PHASES[version.status],
        "keyId": key_id_text(version.id.int),
    }
    if version.kms_key_id is not None:
        entry["kmsKeyRef"] = version.kms_key_id
    if version.activated_at is not None:
        entry["activatedAt"] = rfc3339(version.activated_at)
    if version.rotated_at is not None:
        entry["rotatedAt"] = rfc3339(version.rotated_at)
    if version.expires_at is not None:
        entry["expiresAt"] = rfc3339(version.expires_at)
    if version.can_rollback and version.rollback_expires_at is not None:
        entry["rollbackExpiresAt"] = rfc3339(version.rollback_expires_at)
    # When clients last used it: a ROTATED version nobody decrypts with any more
    # is one whose deletion loses no data.
    if version.last_used_at is not None:
        entry["lastUsedAt"] = rfc3339(version.last_used_at)
    return entry


def _previous_entry(
    parent: KeyVersion | None, shown: list[KeyVersion], entries: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The parent's entry: a copy of the one `versions` shows, when it shows it."""
    if parent is None:
        return None
    for version, entry in zip(shown, entries, strict=True):
        if version is parent:
            return dict(entry)
    return _version_entry(parent)


def shown_usage(versions: list[KeyVersion]) -> dict[int, str | None]:
    """The `lastUsedAt` of each version as `status.versions` shows it."""
    return {v.version: _time(v.last_used_at) for v in versions[:VERSION_HISTORY_LIMIT]}


def build_status(
    spec: KeySpec,
    versions: list[KeyVersion],
    provider_label: str,
    now: datetime,
    *,
    drift: Drift | None = None,
    handled_requests: dict[str, str] | None = None,
    paused: bool = False,
) -> KeyStatusView:
    """Status fields and conditions for `versions` (newest first).

    Every field is always written (None clears it), so a merge patch never
    leaves a stale value behind.
    """
    current = current_version(versions)
    pending = pending_version(versions)
    fields: dict[str, Any] = {"lastHandledRequests": handled_requests or None}
    if current is None:
        fields["phase"] = KeyStatus.PENDING.value
        conditions = [
            Condition(READY, False, "Paused", f"{PAUSED_WHY}: nothing is created until then")
            if paused
            else Condition(
                READY, False, "Creating", f"version 1 is being created in {provider_label}"
            ),
            Condition(ROTATING, False, "Idle", "no rotation in progress"),
            _paused(paused),
        ]
        return KeyStatusView(fields=fields, conditions=conditions)
    parent = by_id(versions, current.parent_id)
    schedule = build_schedule(spec, current, versions)
    refusal = rollback_refusal(current, parent, now)
    window_open = parent is not None and refusal is None
    shown = versions[:VERSION_HISTORY_LIMIT]
    entries = [_version_entry(v) for v in shown]
    fields.update(
        {
            "phase": _PHASES[current.status],
            "version": current.version,
            "keyId": key_id_text(current.id.int),
            "kmsKeyRef": current.kms_key_id,
            "activatedAt": _time(current.activated_at),
            "expiresAt": _time(current.expires_at),
            "rotatedAt": _time(current.rotated_at),
            "lastUsedAt": _time(current.last_used_at),
            "nextRotationAt": _time(schedule.next_rotation_at),
            "rollbackExpiresAt": _time(parent.rollback_expires_at)
            if window_open and parent
            else None,
            "previousVersion": _previous_entry(parent, shown, entries),
            "versions": entries,
        }
    )
    conditions = [
        _ready(spec, current, provider_label, drift),
        _rotating(pending),
        _rollback_available(parent, refusal),
        _expiring(current, schedule.expiring_from, now),
        _paused(paused),
    ]
    if drift is not None:
        conditions.append(
            Condition(
                DRIFTED,
                drift.drifted,
                "KmsStateDiffers" if drift.drifted else "InSync",
                drift.message,
            )
        )
    # Paused: nothing is due; removing the annotation wakes the key through its update.
    next_due = None if paused else schedule.next_due(now)
    return KeyStatusView(fields=fields, conditions=conditions, next_due=next_due)


PAUSED_WHY = "keyledger.io/paused is set"


def _paused(paused: bool) -> Condition:
    if paused:
        return Condition(
            PAUSED,
            True,
            "Paused",
            f"{PAUSED_WHY}: scheduled and requested changes wait until it is removed; "
            "drift is still checked",
        )
    return Condition(PAUSED, False, "Reconciling", "changes are made as spec and requests say")


def _ready(
    spec: KeySpec, current: KeyVersion, provider_label: str, drift: Drift | None
) -> Condition:
    number = current.version
    if drift is not None and drift.drifted:
        return Condition(READY, False, "Drifted", drift.message)
    if current.status is KeyStatus.ACTIVE and spec.state is DesiredState.ACTIVE:
        return Condition(
            READY, True, "KeyActive", f"version {number} is ACTIVE in {provider_label}"
        )
    if current.status is KeyStatus.EXPIRED:
        return Condition(
            READY,
            False,
            "KeyExpired",
            f"version {number} expired at {_time(current.expires_at)}; no new encryption. "
            "Rotate it (annotate keyledger.io/rotate-requested-at) or set spec.rotation",
        )
    if current.status is KeyStatus.COMPROMISED:
        return Condition(
            READY,
            False,
            "KeyCompromised",
            f"version {number} is COMPROMISED; a replacement is being made",
        )
    if current.status is KeyStatus.INACTIVE or spec.state is DesiredState.INACTIVE:
        return Condition(
            READY,
            False,
            "KeyInactive",
            f"spec.state is Inactive: version {number} encrypts nothing new; "
            "data written under it still decrypts",
        )
    return Condition(
        READY,
        False,
        f"Key{current.status.value.capitalize()}",
        f"version {number} is {current.status.value}",
    )


def _rotating(pending: KeyVersion | None) -> Condition:
    if pending is None:
        return Condition(ROTATING, False, "Idle", "no rotation in progress")
    return Condition(
        ROTATING, True, "VersionPending", f"version {pending.version} is being created"
    )


def _rollback_available(parent: KeyVersion | None, refusal: tuple[str, str] | None) -> Condition:
    if refusal is None:
        assert parent is not None
        return Condition(
            ROLLBACK_AVAILABLE,
            True,
            "WindowOpen",
            f"version {parent.version} can be made primary again until "
            f"{_time(parent.rollback_expires_at)}",
        )
    reason, message = refusal
    return Condition(ROLLBACK_AVAILABLE, False, reason, message)


def _expiring(current: KeyVersion, warn_from: datetime | None, now: datetime) -> Condition:
    expires_at = current.expires_at
    if expires_at is None:
        return Condition(EXPIRING, False, "NoExpiry", "the current version does not expire")
    if current.status is KeyStatus.EXPIRED or expires_at <= now:
        return Condition(
            EXPIRING, False, "Expired", f"version {current.version} expired at {_time(expires_at)}"
        )
    if warn_from is not None and warn_from <= now:
        return Condition(
            EXPIRING,
            True,
            "ExpiresSoon",
            f"version {current.version} expires at {_time(expires_at)}",
        )
    return Condition(
        EXPIRING, False, "NotYet", f"version {current.version} expires at {_time(expires_at)}"
    )
