"""What each action does to the ledger, as data.

`changes_for` turns an action into the row changes that must commit together;
the executor applies them in one transaction after any KMS step, and the
property tests apply them to an in-memory ledger. One definition, two users.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from keyledger.domain import KeyEventType, KeyStatus
from keyledger.lifecycle.plan import (
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
)
from keyledger.lifecycle.spec import KeySpec
from keyledger.lifecycle.states import check_transition
from keyledger.lifecycle.versions import KeyVersion, by_id


@dataclass(frozen=True)
class NewVersion:
    """Insert a PENDING row."""

    version: int
    parent_id: uuid.UUID | None
    details: dict[str, Any]


@dataclass(frozen=True)
class Change:
    """Update one version's row (and write its audit row)."""

    version_id: uuid.UUID
    event: KeyEventType
    to_status: KeyStatus | None = None  # None: status unchanged
    fields: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


RowChange = NewVersion | Change


def adopts_existing_key(spec: KeySpec, pending: KeyVersion) -> bool:
    """Whether this version takes over `spec.adopt.kmsKeyId` instead of making a key:
    only the key's first version does; rotations make new keys as always."""
    return spec.adopt_kms_key_id is not None and pending.parent_id is None


def request_details(kind: RequestKind, token: str | None) -> dict[str, Any]:
    return {"request": kind.value, "token": token} if token is not None else {}


def changes_for(
    action: Action,
    versions: list[KeyVersion],
    spec: KeySpec,
    now: datetime,
    kms_key_id: str | None = None,
) -> list[RowChange]:
    """The ledger changes of `action`. FinishPending needs the KMS ref it produced."""
    changes = _changes(action, versions, spec, now, kms_key_id)
    for change in changes:
        if isinstance(change, Change) and change.to_status is not None:
            before = by_id(versions, change.version_id)
            assert before is not None, "change to a version the ledger does not have"
            check_transition(before.status, change.to_status)
    return changes


def _changes(
    action: Action, versions: list[KeyVersion], spec: KeySpec, now: datetime, kms_key_id: str | None
) -> list[RowChange]:
    match action:
        case CreateVersion(trigger=trigger, parent=parent, request_token=token):
            number = max((v.version for v in versions), default=0) + 1
            details = {"trigger": trigger.value, **request_details(RequestKind.ROTATE, token)}
            return [NewVersion(number, parent.id if parent else None, details)]
        case FinishPending(pending=pending):
            if kms_key_id is None:
                raise ValueError("FinishPending needs the KMS key it created")
            changes: list[RowChange] = []
            parent = by_id(versions, pending.parent_id)
            # The old primary leaves ACTIVE first: one ACTIVE version at every moment.
            if parent is not None and parent.status is KeyStatus.ACTIVE:
                changes.append(
                    Change(
                        parent.id,
                        KeyEventType.ROTATED,
                        KeyStatus.ROTATED,
                        {
                            "rotated_at": now,
                            "can_rollback": True,
                            "rollback_expires_at": now + spec.rollback_window,
                        },
                        {"replaced_by_version": pending.version},
                    )
                )
            adopted = adopts_existing_key(spec, pending)
            changes.append(
                Change(
                    pending.id,
                    KeyEventType.ADOPTED if adopted else KeyEventType.ACTIVATED,
                    KeyStatus.ACTIVE,
                    {
                        "kms_key_id": kms_key_id,
                        "activated_at": now,
                        "expires_at": spec.expiry_for(now),
                    },
                )
            )
            return changes
        case Rollback(current=current, target=target, request_token=token):
            details = request_details(RequestKind.ROLLBACK, token)
            # The old primary leaves ACTIVE first: one ACTIVE version at every moment.
            return [
                Change(
                    current.id,
                    KeyEventType.ROLLED_BACK,
                    KeyStatus.INACTIVE,
                    {},
                    {**details, "rolled_back_to": target.version},
                ),
                Change(
                    target.id,
                    KeyEventType.ROLLED_BACK,
                    KeyStatus.ACTIVE,
                    {"activated_at": now, "can_rollback": False, "rollback_expires_at": None},
                    {**details, "rolled_back_from": current.version},
                ),
            ]
        case RefuseRequest(
            kind=kind, request_token=token, version=version, reason=reason, message=message
        ):
            return [
                Change(
                    version.id,
                    KeyEventType.REQUEST_REFUSED,
                    None,
                    {},
                    {**request_details(kind, token), "reason": reason, "message": message},
                )
            ]
        case Compromise(version=version, request_token=token, reason=reason):
            return [
                Change(
                    version.id,
                    KeyEventType.COMPROMISED,
                    KeyStatus.COMPROMISED,
                    {"can_rollback": False, "rollback_expires_at": None},
                    {**request_details(RequestKind.COMPROMISE, token), "reason": reason},
                )
            ]
        case Expire(version=version):
            return [
                Change(version.id, KeyEventType.EXPIRED, KeyStatus.EXPIRED, {"can_rollback": False})
            ]
        case CloseRollbackWindow(version=version):
            return [
                Change(
                    version.id, KeyEventType.ROLLBACK_WINDOW_CLOSED, None, {"can_rollback": False}
                )
            ]
        case Deactivate(version=version):
            return [Change(version.id, KeyEventType.DISABLED, KeyStatus.INACTIVE)]
        case Reactivate(version=version):
            return [Change(version.id, KeyEventType.ENABLED, KeyStatus.ACTIVE)]
    raise AssertionError(f"unhandled action {action!r}")


def apply_in_memory(
    versions: list[KeyVersion], changes: list[RowChange], now: datetime
) -> list[KeyVersion]:
    """`versions` after `changes`, newest first: the ledger's behaviour without a database."""
    result = {v.id: v for v in versions}
    for change in changes:
        if isinstance(change, NewVersion):
            new_id = uuid.uuid4()
            result[new_id] = KeyVersion(
                id=new_id,
                version=change.version,
                status=KeyStatus.PENDING,
                kms_key_id=None,
                created_at=now,
                parent_id=change.parent_id,
            )
            continue
        updated = replace(result[change.version_id], **change.fields)
        if change.to_status is not None:
            updated = replace(updated, status=change.to_status)
        result[change.version_id] = updated
    return sorted(result.values(), key=lambda v: v.version, reverse=True)
