"""The compliance report's findings, from ledger facts alone."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from keyledger.compliance import Finding, VersionFacts, build_report
from keyledger.domain import KeyStatus

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)

ACTIVE = VersionFacts(
    id=uuid.uuid4(),
    tenant="acme",
    key_name="phi",
    version=1,
    status=KeyStatus.ACTIVE,
    created_at=NOW - 40 * DAY,
    activated_at=NOW - 30 * DAY,
    expires_at=None,
    rotated_at=None,
    last_used_at=None,
    can_rollback=False,
    rollback_expires_at=None,
    created_by="alice",
    rotated_by=None,
    rotation_period=30 * DAY,
)


def findings(*versions: VersionFacts) -> list[tuple[Finding, ...]]:
    return [line.findings for line in build_report(versions, [], now=NOW).versions]


def test_rotation_is_due_a_period_after_activation_not_creation() -> None:
    assert findings(ACTIVE) == [(Finding.ROTATION_OVERDUE,)]
    assert findings(replace(ACTIVE, activated_at=NOW - 29 * DAY)) == [()]
    assert findings(replace(ACTIVE, rotation_period=None)) == [()]
    # Only the ACTIVE version is held to the period.
    assert findings(replace(ACTIVE, status=KeyStatus.INACTIVE)) == [()]


def test_an_open_rollback_window_past_its_end_is_a_finding_a_closed_one_is_not() -> None:
    rotated = replace(
        ACTIVE, status=KeyStatus.ROTATED, can_rollback=True, rollback_expires_at=NOW - DAY
    )
    assert findings(rotated) == [(Finding.ROLLBACK_WINDOW_PAST,)]
    assert findings(replace(rotated, can_rollback=False)) == [()]
    assert findings(replace(rotated, rollback_expires_at=NOW + DAY)) == [()]


def test_expiry_past_on_a_live_version_and_statuses_reported() -> None:
    expired_late = replace(ACTIVE, rotation_period=None, expires_at=NOW - DAY)
    assert findings(expired_late) == [(Finding.EXPIRY_PAST,)]
    assert findings(replace(expired_late, status=KeyStatus.EXPIRED)) == [(Finding.EXPIRED,)]
    assert findings(replace(ACTIVE, status=KeyStatus.COMPROMISED)) == [(Finding.COMPROMISED,)]


def test_compliant_means_no_overdue_duty() -> None:
    replaced = replace(ACTIVE, status=KeyStatus.COMPROMISED)
    current = replace(ACTIVE, id=uuid.uuid4(), version=2, activated_at=NOW)
    report = build_report([replaced, current], [], now=NOW)
    assert report.compliant
    assert report.counts["Compromised"] == 1
    assert not build_report([ACTIVE], [], now=NOW).compliant
