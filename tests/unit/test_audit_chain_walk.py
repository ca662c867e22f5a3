"""verify_rows on in-memory rows: each kind of tampering is named at the right row."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from keyledger.domain import KeyEventType, KeyStatus
from keyledger.store.audit import GENESIS, Break, event_hash, verify_rows
from keyledger.store.models import KeyEventRecord

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def chain(length: int) -> list[KeyEventRecord]:
    rows: list[KeyEventRecord] = []
    for n in range(length):
        row = KeyEventRecord(
            id=10 + 2 * n,  # another tenant's rows take the ids between
            occurred_at=NOW + timedelta(minutes=n),
            key_id=uuid.UUID(int=1),
            tenant_id="acme",
            key_name="phi",
            version=1,
            event_type=KeyEventType.DRIFT_DETECTED,
            from_status=KeyStatus.ACTIVE,
            to_status=KeyStatus.ACTIVE,
            actor="keyledger-operator",
            details={"n": n, "nested": {"b": 1, "a": [1, 2]}},
            prev_event_id=rows[-1].id if rows else None,
            prev_hash=rows[-1].row_hash if rows else GENESIS,
        )
        row.row_hash = event_hash(row)
        rows.append(row)
    return rows


def test_an_untouched_chain_holds() -> None:
    result = verify_rows("acme", chain(5))
    assert (result.intact, result.rows, result.head_id) == (True, 5, 18)
    assert verify_rows("acme", []).intact


def test_a_changed_field_names_its_row() -> None:
    rows = chain(5)
    rows[2].details = {"n": 99}
    broken = verify_rows("acme", rows).broken
    assert broken is not None and (broken.row_id, broken.kind) == (14, Break.CHANGED)


def test_a_changed_row_with_a_recomputed_hash_is_named_by_its_successor() -> None:
    rows = chain(5)
    rows[2].actor = "mallory"
    rows[2].row_hash = event_hash(rows[2])
    broken = verify_rows("acme", rows).broken
    assert broken is not None and (broken.row_id, broken.kind) == (14, Break.CHANGED)


def test_a_deleted_row_is_named_by_the_id_its_successor_links_to() -> None:
    rows = chain(5)
    del rows[0]
    broken = verify_rows("acme", rows).broken
    assert broken is not None and (broken.row_id, broken.kind) == (10, Break.DELETED)


def test_a_row_spliced_in_with_a_valid_hash_is_named_when_the_next_row_links_past_it() -> None:
    rows = chain(4)
    forged = chain(4)[1]
    forged.id, forged.actor = 13, "mallory"
    forged.row_hash = event_hash(forged)
    rows.insert(2, forged)  # ids 10, 12, 13, 14, 16: 14 still links to 12
    broken = verify_rows("acme", rows).broken
    assert broken is not None and (broken.row_id, broken.kind) == (13, Break.INSERTED)


def test_a_row_spliced_in_before_the_genuine_one_is_named_too() -> None:
    rows = chain(4)
    forged = chain(4)[1]
    forged.id, forged.actor = 11, "mallory"
    forged.row_hash = event_hash(forged)
    rows.insert(1, forged)  # ids 10, 11, 12, 14, 16: 14 goes on from 12
    broken = verify_rows("acme", rows).broken
    assert broken is not None and (broken.row_id, broken.kind) == (11, Break.INSERTED)
