"""The planner: (spec, ledger versions, pending requests, now) -> the next action.

One action at a time: the executor applies it, re-reads the ledger and asks
again, so every decision sees the state the previous step left behind and a
crash anywhere resumes from the ledger alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from keyledger.domain import KeyStatus
from keyledger.lifecycle.actions import (
    Action,
    CloseRollbackWindow,
    Compromise,
    CreateVersion,
    Deactivate,
    Expire,
    FinishPending,
    Reactivate,
    RefuseRequest,
    RequestKind,
    Rollback,
    Trigger,
)
from keyledger.lifecycle.conditions import rfc3339
from keyledger.lifecycle.requests import Requests
from keyledger.lifecycle.schedule import rotation_due_at
from keyledger.lifecycle.spec import DesiredState, KeySpec
from keyledger.lifecycle.versions import KeyVersion, by_id, current_version, pending_version

# Statuses whose versions expire when their time comes.
EXPIRABLE = frozenset({KeyStatus.ACTIVE, KeyStatus.INACTIVE, KeyStatus.ROTATED})


def plan_next(
    spec: KeySpec, versions: Sequence[KeyVersion], requests: Requests, now: datetime
) -> Action | None:
    """The single most urgent thing to do, or None when the key is where it should be."""
    pending = pending_version(versions)
    if pending is not None:
        return FinishPending(pending)
    current = current_version(versions)
    if current is None:
        return CreateVersion(Trigger.CREATE, None)
    return (
        _compromise(current, requests)
        or _rollback(current, versions, requests, now)
        or _rotate_on_request(spec, current, requests)
        or _rotate_on_schedule(spec, current, now)
        or _expire(versions, now)
        or _replace_unusable(spec, current, now)
        or _close_windows(versions, now)
        or _apply_desired_state(spec, current)
    )


def _compromise(current: KeyVersion, requests: Requests) -> Action | None:
    if requests.compromise is None:
        return None
    if current.status is KeyStatus.COMPROMISED:
        return RefuseRequest(
            RequestKind.COMPROMISE,
            requests.compromise,
            current,
            "AlreadyCompromised",
            f"version {current.version} is already COMPROMISED",
        )
    return Compromise(current, requests.compromise, requests.compromise_reason or "no reason given")


def _rollback(
    current: KeyVersion, versions: Sequence[KeyVersion], requests: Requests, now: datetime
) -> Action | None:
    token = requests.rollback
    if token is None:
        return None
    target = by_id(versions, current.parent_id)
    refusal = rollback_refusal(current, target, now)
    if refusal is not None:
        reason, message = refusal
        return RefuseRequest(RequestKind.ROLLBACK, token, current, reason, message)
    assert target is not None
    return Rollback(current, target, token)


def rollback_refusal(
    current: KeyVersion, target: KeyVersion | None, now: datetime
) -> tuple[str, str] | None:
    """Why `current` cannot roll back to `target` (its parent), or None if it can."""
    if current.status is not KeyStatus.ACTIVE:
        return (
            "KeyNotActive",
            f"version {current.version} is {current.status.value}; only an ACTIVE "
            "version can be rolled back",
        )
    if target is None:
        return (
            "NoPreviousVersion",
            f"version {current.version} has no previous version to roll back to",
        )
    if target.status is KeyStatus.COMPROMISED:
        return (
            "PreviousVersionCompromised",
            f"version {target.version} is COMPROMISED and can never be made primary again",
        )
    if target.status is not KeyStatus.ROTATED:
        return (
            "PreviousVersionUnavailable",
            f"version {target.version} is {target.status.value}; only a ROTATED version "
            "can be made primary again",
        )
    if (
        not target.can_rollback
        or target.rollback_expires_at is None
        or (target.rollback_expires_at <= now)
    ):
        closed = target.rollback_expires_at
        when = f" at {rfc3339(closed)}" if closed else ""
        return (
            "RollbackWindowClosed",
            f"the rollback window of version {target.version} closed{when}; "
            "rotate to a new version instead",
        )
    return None


def _rotate_on_request(spec: KeySpec, current: KeyVersion, requests: Requests) -> Action | None:
    token = requests.rotate
    if token is None:
        return None
    if spec.state is DesiredState.INACTIVE:
        return RefuseRequest(
            RequestKind.ROTATE,
            token,
            current,
            "KeyInactive",
            "spec.state is Inactive; set it to Active to rotate",
        )
    return CreateVersion(Trigger.REQUEST, current, token)


def _rotate_on_schedule(spec: KeySpec, current: KeyVersion, now: datetime) -> Action | None:
    if spec.state is DesiredState.INACTIVE:
        return None
    due = rotation_due_at(spec, current)
    if due is None or due > now or _born_expired(spec, now):
        return None
    by_period = (
        spec.rotation_period is not None
        and current.activated_at is not None
        and (current.activated_at + spec.rotation_period <= now)
    )
    return CreateVersion(Trigger.SCHEDULE if by_period else Trigger.BEFORE_EXPIRY, current)


def _expire(versions: Sequence[KeyVersion], now: datetime) -> Action | None:
    for version in versions:
        if (
            version.status in EXPIRABLE
            and version.expires_at is not None
            and (version.expires_at <= now)
        ):
            return Expire(version)
    return None


def _replace_unusable(spec: KeySpec, current: KeyVersion, now: datetime) -> Action | None:
    if current.status is KeyStatus.COMPROMISED:
        return CreateVersion(Trigger.REPLACE_COMPROMISED, current)
    # An expired key is replaced automatically only where rotation is on, and only
    # by a version that would not be born expired (`expiry.at` in the past ends the
    # key's use); otherwise it stays expired (Ready=False) until the spec changes.
    if (
        current.status is KeyStatus.EXPIRED
        and spec.rotation_period is not None
        and spec.state is DesiredState.ACTIVE
        and not _born_expired(spec, now)
    ):
        return CreateVersion(Trigger.REPLACE_EXPIRED, current)
    return None


def _born_expired(spec: KeySpec, now: datetime) -> bool:
    """Whether a version made now would expire at once (`expiry.at` has passed)."""
    expires = spec.expiry_for(now)
    return expires is not None and expires <= now


def _close_windows(versions: Sequence[KeyVersion], now: datetime) -> Action | None:
    for version in versions:
        if version.can_rollback and (
            version.rollback_expires_at is None or version.rollback_expires_at <= now
        ):
            return CloseRollbackWindow(version)
    return None


def _apply_desired_state(spec: KeySpec, current: KeyVersion) -> Action | None:
    if spec.state is DesiredState.INACTIVE and current.status is KeyStatus.ACTIVE:
        return Deactivate(current)
    if spec.state is DesiredState.ACTIVE and current.status is KeyStatus.INACTIVE:
        return Reactivate(current)
    return None
