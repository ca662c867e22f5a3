"""Builds an EncryptionKey's status from ledger versions and the spec."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keyledger.domain import KeyStatus
from keyledger.lifecycle.conditions import READY, Condition, rfc3339
from keyledger.lifecycle.spec import DesiredState, KeySpec
from keyledger.lifecycle.versions import KeyVersion, current_version

# Status keeps this many versions; the ledger keeps them all.
VERSION_HISTORY_LIMIT = 10


@dataclass(frozen=True)
class KeyStatusView:
    fields: dict[str, Any]
    conditions: list[Condition]


def _time(moment: datetime | None) -> str | None:
    return rfc3339(moment) if moment is not None else None


def _version_entry(version: KeyVersion) -> dict[str, Any]:
    entry = {
        "version": version.version,
        "phase": version.status.value,
        "keyId": str(version.id),
        "kmsKeyRef": version.kms_key_id,
        "activatedAt": _time(version.activated_at),
        "rotatedAt": _time(version.rotated_at),
        "expiresAt": _time(version.expires_at),
        "rollbackExpiresAt": _time(version.rollback_expires_at) if version.can_rollback else None,
    }
    return {k: v for k, v in entry.items() if v is not None}


def build_status(spec: KeySpec, versions: list[KeyVersion], provider_label: str) -> KeyStatusView:
    """Status fields and the Ready condition for `versions` (newest first)."""
    current = current_version(versions)
    if current is None:
        return KeyStatusView(
            fields={"phase": KeyStatus.PENDING.value},
            conditions=[Condition(READY, False, "Creating", "no version exists yet")],
        )
    previous = next((v for v in versions if v.version < current.version), None)
    fields: dict[str, Any] = {
        "phase": current.status.value,
        "version": current.version,
        "keyId": str(current.id),
        "kmsKeyRef": current.kms_key_id,
        "activatedAt": _time(current.activated_at),
        "expiresAt": _time(current.expires_at),
        "rotatedAt": _time(current.rotated_at),
        "lastUsedAt": _time(current.last_used_at),
        "previousVersion": _version_entry(previous) if previous else None,
        "versions": [_version_entry(v) for v in versions[:VERSION_HISTORY_LIMIT]],
    }
    return KeyStatusView(fields=fields, conditions=[_ready(spec, current, provider_label)])


def _ready(spec: KeySpec, current: KeyVersion, provider_label: str) -> Condition:
    if current.status is KeyStatus.ACTIVE and spec.state is DesiredState.ACTIVE:
        return Condition(
            READY,
            True,
            "KeyActive",
            f"version {current.version} is ACTIVE in {provider_label}",
        )
    if current.status is KeyStatus.PENDING:
        return Condition(
            READY,
            False,
            "Creating",
            f"version {current.version} is being created in {provider_label}",
        )
    return Condition(
        READY,
        False,
        f"Key{current.status.value.capitalize()}",
        f"version {current.version} is {current.status.value}",
    )
