"""What an action does to the ledger, checked, and applied without a database.

`changes_for` asks the action for its row changes and checks each status
change against the state machine; the executor commits them in one
transaction after any KMS step, and the property tests apply them to an
in-memory ledger with `apply_in_memory`. One definition, two users.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from keyledger.domain import KeyStatus
from keyledger.lifecycle.actions import Action, Change, NewVersion, RowChange
from keyledger.lifecycle.spec import KeySpec
from keyledger.lifecycle.states import check_transition
from keyledger.lifecycle.versions import KeyVersion, by_id


def changes_for(
    action: Action,
    versions: Sequence[KeyVersion],
    spec: KeySpec,
    now: datetime,
    kms_key_id: str | None = None,
) -> list[RowChange]:
    """The ledger changes of `action`. FinishPending needs the KMS ref it produced."""
    changes = action.changes(versions, spec, now, kms_key_id)
    for change in changes:
        if isinstance(change, Change) and change.to_status is not None:
            before = by_id(versions, change.version_id)
            assert before is not None, "change to a version the ledger does not have"
            check_transition(before.status, change.to_status)
    return changes


def apply_in_memory(
    versions: Sequence[KeyVersion], changes: Sequence[RowChange], now: datetime
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
                parent_id=change.parent_id,
            )
            continue
        updated = replace(result[change.version_id], **change.fields)
        if change.to_status is not None:
            updated = replace(updated, status=change.to_status)
        result[change.version_id] = updated
    return sorted(result.values(), key=lambda v: v.version, reverse=True)
