"""Schedule maths: when the next rotation, expiry warning and window close fall due."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from keyledger.domain import KeyStatus
from keyledger.lifecycle.spec import KeySpec
from keyledger.lifecycle.versions import KeyVersion

# Rotation-before-expiry lead: a tenth of the version's life, at most the warning time,
# so a 10 s test key rotates at 9 s and a 365 d key 14 days early.
PRE_EXPIRY_FRACTION = 10


@dataclass(frozen=True)
class Schedule:
    next_rotation_at: datetime | None
    expiring_from: datetime | None
    expires_at: datetime | None
    rollback_closes_at: datetime | None
    # The earliest expiry of any version still able to expire (older ones included).
    any_expiry_at: datetime | None = None

    def next_due(self, now: datetime) -> datetime | None:
        """The earliest future moment at which something changes."""
        moments = [
            m
            for m in (
                self.next_rotation_at,
                self.expiring_from,
                self.expires_at,
                self.rollback_closes_at,
                self.any_expiry_at,
            )
            if m is not None and m > now
        ]
        return min(moments, default=None)


def rotation_due_at(spec: KeySpec, current: KeyVersion) -> datetime | None:
    """When `current` should be replaced: by period, or just before it expires."""
    if current.status is not KeyStatus.ACTIVE or current.activated_at is None:
        return None
    candidates = []
    if spec.rotation_period is not None:
        candidates.append(current.activated_at + spec.rotation_period)
        if current.expires_at is not None:
            lifetime = current.expires_at - current.activated_at
            lead = min(spec.expiry_warning, lifetime / PRE_EXPIRY_FRACTION)
            early = current.expires_at - max(lead, timedelta(0))
            # Only if a version made then outlives this one: under `expiry.at` every
            # version ends at the same moment, and rotating would only make more.
            successor_expires = spec.expiry_for(early)
            if successor_expires is None or successor_expires > current.expires_at:
                candidates.append(early)
    return min(candidates, default=None)


def expiring_from(spec: KeySpec, current: KeyVersion) -> datetime | None:
    if current.expires_at is None:
        return None
    return current.expires_at - spec.expiry_warning


def rollback_closes_at(versions: list[KeyVersion]) -> datetime | None:
    """The earliest rollback window still open."""
    open_windows = [
        v.rollback_expires_at
        for v in versions
        if v.can_rollback and v.rollback_expires_at is not None
    ]
    return min(open_windows, default=None)


_EXPIRABLE = frozenset({KeyStatus.ACTIVE, KeyStatus.INACTIVE, KeyStatus.ROTATED})


def build_schedule(
    spec: KeySpec, current: KeyVersion | None, versions: list[KeyVersion]
) -> Schedule:
    any_expiry = min(
        (v.expires_at for v in versions if v.status in _EXPIRABLE and v.expires_at is not None),
        default=None,
    )
    if current is None:
        return Schedule(None, None, None, rollback_closes_at(versions), any_expiry)
    usable = current.status in (KeyStatus.ACTIVE, KeyStatus.INACTIVE)
    return Schedule(
        next_rotation_at=rotation_due_at(spec, current),
        expiring_from=expiring_from(spec, current) if usable else None,
        expires_at=current.expires_at if usable else None,
        rollback_closes_at=rollback_closes_at(versions),
        any_expiry_at=any_expiry,
    )
