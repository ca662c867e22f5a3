"""The compliance report: every key version, what its own policy asks of it, and
whether the audit trail is intact. Pure: built from what the ledger holds.

What the ledger can tell, and how:
- rotation overdue: an ACTIVE version older (since activation) than the rotation
  period recorded in its CREATED audit row; versions made before that was
  recorded, and keys rotated by hand only, show no period and are never overdue;
- rollback window past: a version that may still be rolled back to
  (`can_rollback`) after `rollback_expires_at`: the timer that closes windows
  has not run;
- expiry past: an ACTIVE or INACTIVE version after its `expires_at`;
- compromised and expired versions, by status;
- the audit chain of each tenant, verified (keyledger.store.audit).
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from keyledger.domain import KeyStatus
from keyledger.lifecycle.durations import format_duration
from keyledger.store.audit import ChainResult


class Finding(StrEnum):
    ROTATION_OVERDUE = "RotationOverdue"
    ROLLBACK_WINDOW_PAST = "RollbackWindowPast"
    EXPIRY_PAST = "ExpiryPast"
    COMPROMISED = "Compromised"
    EXPIRED = "Expired"


@dataclass(frozen=True)
class VersionFacts:
    """One ledger row, as much of it as the report needs."""

    id: uuid.UUID
    tenant: str
    key_name: str
    version: int
    status: KeyStatus
    created_at: datetime
    activated_at: datetime | None
    expires_at: datetime | None
    rotated_at: datetime | None
    last_used_at: datetime | None
    can_rollback: bool
    rollback_expires_at: datetime | None
    created_by: str | None
    rotated_by: str | None
    rotation_period: timedelta | None
    # The actor of the version's COMPROMISED audit row.
    compromised_by: str | None = None


@dataclass(frozen=True)
class VersionLine:
    facts: VersionFacts
    age: timedelta
    rotation_due_at: datetime | None
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class ComplianceReport:
    generated_at: datetime
    tenant: str | None
    versions: tuple[VersionLine, ...]
    chains: tuple[ChainResult, ...]
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def chains_intact(self) -> bool:
        return all(chain.intact for chain in self.chains)

    @property
    def compliant(self) -> bool:
        """No overdue duty and an intact audit trail. Compromised or expired versions
        that were replaced are history, not a breach of policy."""
        duties = (Finding.ROTATION_OVERDUE, Finding.ROLLBACK_WINDOW_PAST, Finding.EXPIRY_PAST)
        return self.chains_intact and not any(self.counts.get(f.value) for f in duties)


def build_report(
    versions: Sequence[VersionFacts],
    chains: Sequence[ChainResult],
    *,
    now: datetime,
    tenant: str | None = None,
) -> ComplianceReport:
    ordered = sorted(versions, key=lambda v: (v.tenant, v.key_name, -v.version))
    lines = tuple(_line(v, now) for v in ordered)
    counts = {f.value: sum(f in line.findings for line in lines) for f in Finding}
    counts["keys"] = len({(v.tenant, v.key_name) for v in versions})
    counts["versions"] = len(versions)
    return ComplianceReport(now, tenant, lines, tuple(chains), counts)


def _line(facts: VersionFacts, now: datetime) -> VersionLine:
    findings: list[Finding] = []
    due: datetime | None = None
    if facts.status is KeyStatus.ACTIVE and facts.rotation_period is not None:
        due = (facts.activated_at or facts.created_at) + facts.rotation_period
        if due <= now:
            findings.append(Finding.ROTATION_OVERDUE)
    if facts.can_rollback and facts.rollback_expires_at and facts.rollback_expires_at <= now:
        findings.append(Finding.ROLLBACK_WINDOW_PAST)
    live = facts.status in (KeyStatus.ACTIVE, KeyStatus.INACTIVE)
    if live and facts.expires_at is not None and facts.expires_at <= now:
        findings.append(Finding.EXPIRY_PAST)
    if facts.status is KeyStatus.COMPROMISED:
        findings.append(Finding.COMPROMISED)
    if facts.status is KeyStatus.EXPIRED:
        findings.append(Finding.EXPIRED)
    return VersionLine(facts, now - facts.created_at, due, tuple(findings))


# -- rendering --------------------------------------------------------------------------


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _span(value: timedelta) -> str:
    days = value.days
    return f"{days}d" if days else format_duration(value)


def _chain_entry(chain: ChainResult) -> dict[str, Any]:
    return {
        "tenant": chain.tenant,
        "rows": chain.rows,
        "intact": chain.intact,
        "head_row": chain.head_id,
        "head_hash": chain.head_hash,
        "problem": None if chain.broken is None else str(chain.broken),
    }


VERSION_FIELDS = (
    "tenant",
    "key_name",
    "version",
    "key_id",
    "status",
    "created_at",
    "age_days",
    "activated_at",
    "last_used_at",
    "created_by",
    "rotated_at",
    "rotated_by",
    "compromised_by",
    "rotation_period",
    "rotation_due_at",
    "rotation_overdue_days",
    "rollback_expires_at",
    "can_rollback",
    "expires_at",
    "findings",
)


def _version_entry(line: VersionLine, now: datetime) -> dict[str, Any]:
    v = line.facts
    return {
        "tenant": v.tenant,
        "key_name": v.key_name,
        "version": v.version,
        "key_id": str(v.id),
        "status": v.status.value,
        "created_at": _time(v.created_at),
        "age_days": line.age.days,
        "activated_at": _time(v.activated_at),
        "last_used_at": _time(v.last_used_at),
        "created_by": v.created_by,
        "rotated_at": _time(v.rotated_at),
        "rotated_by": v.rotated_by,
        "compromised_by": v.compromised_by,
        "rotation_period": None
        if v.rotation_period is None
        else format_duration(v.rotation_period),
        "rotation_due_at": _time(line.rotation_due_at),
        "rotation_overdue_days": (
            (now - line.rotation_due_at).days
            if Finding.ROTATION_OVERDUE in line.findings and line.rotation_due_at
            else None
        ),
        "rollback_expires_at": _time(v.rollback_expires_at),
        "can_rollback": v.can_rollback,
        "expires_at": _time(v.expires_at),
        "findings": [f.value for f in line.findings],
    }


def render_json(report: ComplianceReport) -> str:
    document = {
        "generated_at": _time(report.generated_at),
        "tenant": report.tenant,
        "compliant": report.compliant,
        "summary": dict(report.counts),
        "audit_chains": [_chain_entry(c) for c in report.chains],
        "versions": [_version_entry(line, report.generated_at) for line in report.versions],
    }
    return json.dumps(document, indent=2) + "\n"


def render_csv(report: ComplianceReport) -> str:
    """One row per version; its tenant's audit chain verdict on every row."""
    entries = [_version_entry(line, report.generated_at) for line in report.versions]
    chains = {c.tenant: c for c in report.chains}
    out = io.StringIO()
    columns = [*VERSION_FIELDS, "audit_chain"]
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for entry in entries:
        chain = chains.get(entry["tenant"])
        writer.writerow(
            {
                **entry,
                "findings": ";".join(entry["findings"]),
                "audit_chain": "none"
                if chain is None
                else ("intact" if chain.intact else "BROKEN"),
            }
        )
    return out.getvalue()


_TABLE_COLUMNS = (
    "TENANT",
    "KEY",
    "VER",
    "STATUS",
    "AGE",
    "LAST USED",
    "CREATED BY",
    "ROTATED BY",
    "ROTATION",
    "FINDINGS",
)


def render_table(report: ComplianceReport) -> str:
    now = report.generated_at
    rows = [_TABLE_COLUMNS]
    for line in report.versions:
        v = line.facts
        if v.rotation_period is None:
            rotation = "manual" if v.status is KeyStatus.ACTIVE else "-"
        elif line.rotation_due_at is None:
            rotation = f"every {format_duration(v.rotation_period)}"
        elif Finding.ROTATION_OVERDUE in line.findings:
            rotation = f"OVERDUE {_span(now - line.rotation_due_at)}"
        else:
            rotation = f"due in {_span(line.rotation_due_at - now)}"
        rows.append(
            (
                v.tenant,
                v.key_name,
                str(v.version),
                v.status.value,
                _span(line.age),
                "never" if v.last_used_at is None else f"{_span(now - v.last_used_at)} ago",
                v.created_by or "-",
                v.rotated_by or (f"{v.compromised_by} (compromise)" if v.compromised_by else "-"),
                rotation,
                ",".join(f.value for f in line.findings) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_TABLE_COLUMNS))]
    text = [
        f"keyledger compliance report, {_time(now)}"
        + (f", tenant {report.tenant}" if report.tenant else ", all tenants"),
        "",
    ]
    text += [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    text.append("")
    text.append("audit chains:")
    for chain in report.chains:
        text.append(
            f"  {chain.tenant}: intact, {chain.rows} rows"
            if chain.intact
            else f"  {chain.tenant}: BROKEN: {chain.broken}"
        )
    if not report.chains:
        text.append("  (no audit rows)")
    counts = report.counts
    text.append("")
    text.append(
        f"{counts['keys']} keys, {counts['versions']} versions: "
        + ", ".join(f"{counts[f.value]} {f.value}" for f in Finding)
    )
    text.append(f"compliant: {'yes' if report.compliant else 'no'}")
    return "\n".join(text) + "\n"
