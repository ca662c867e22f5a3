"""The audit trail's hash chain: one chain per tenant through `key_events`.

Each row carries `prev_event_id` and `prev_hash` (the id and `row_hash` of the
tenant's previous row; none and GENESIS for the first) and `row_hash`, the
SHA-256 of its canonical serialization (`canonical_event`), which covers the
link too. A row edited, inserted or deleted behind keyledger's back breaks the
chain where it happened, and `verify_chain` names that row.

What the chain cannot prove on its own: that the newest rows were not cut off
(nothing points at them yet), or that someone with write access did not rebuild
the whole chain from the edit onwards. Both are caught by comparing the chain
heads with a copy kept elsewhere: `keyledger audit export` ships every row with
its hash to a SIEM.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    String,
    Table,
    Text,
    bindparam,
    column,
    func,
    insert,
    literal,
    select,
    true,
)
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

from keyledger.store.models import KeyEventRecord

GENESIS = "0" * 64
CHAIN_FORMAT = "keyledger-audit-v1"
# The first key of PostgreSQL's two-key advisory locks, so that the per-tenant
# audit lock never collides with another advisory lock in the same database.
AUDIT_LOCK_CLASS = 0x4B4C  # "KL"


def _timestamp(value: datetime) -> str:
    # SQLite reads back naive datetimes; the ledger stores UTC only.
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="microseconds")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.value if isinstance(value, StrEnum) else str(value)


def canonical_event(
    *,
    tenant_id: str,
    key_id: uuid.UUID | str | None,
    key_name: str,
    version: int | None,
    event_type: Any,
    from_status: Any,
    to_status: Any,
    actor: str,
    correlation_id: str | None,
    reason: str | None,
    details: Any,
    occurred_at: datetime,
    prev_event_id: int | None,
    prev_hash: str,
) -> bytes:
    """The bytes a row's hash is taken over: every field but the row's own id and
    hash, as JSON with sorted keys and no whitespace, under a format tag.

    The row's id is left out because it is assigned by the INSERT; the link to
    the previous row's id is in, so rows cannot be reordered unseen."""
    fields = {
        "format": CHAIN_FORMAT,
        "tenant_id": tenant_id,
        "key_id": None if key_id is None else str(key_id),
        "key_name": key_name,
        "version": version,
        "event_type": _text(event_type),
        "from_status": _text(from_status),
        "to_status": _text(to_status),
        "actor": actor,
        "correlation_id": correlation_id,
        "reason": reason,
        "details": details,
        "occurred_at": _timestamp(occurred_at),
        "prev_event_id": prev_event_id,
        "prev_hash": prev_hash,
    }
    return json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def event_hash(event: KeyEventRecord) -> str:
    """The hash `event` should carry, from the fields it holds now."""
    return hashlib.sha256(_canonical(event, event.prev_event_id, event.prev_hash)).hexdigest()


def _canonical(event: KeyEventRecord, prev_event_id: int | None, prev_hash: str) -> bytes:
    return canonical_event(
        tenant_id=event.tenant_id,
        key_id=event.key_id,
        key_name=event.key_name,
        version=event.version,
        event_type=event.event_type,
        from_status=event.from_status,
        to_status=event.to_status,
        actor=event.actor,
        correlation_id=event.correlation_id,
        reason=event.reason,
        details=event.details,
        occurred_at=event.occurred_at,
        prev_event_id=prev_event_id,
        prev_hash=prev_hash,
    )


# The link as it stands in the canonical bytes of a row with no link yet. Keys are
# sorted, so the top-level link is the last occurrence: only `details` (sorted before
# it) can hold the same text unescaped, and the fields after it are strings (their
# quotes escaped) and a number.
_NO_LINK = '"prev_event_id":null,"prev_hash":""'


def around_link(event: KeyEventRecord) -> tuple[str, str]:
    """`event`'s canonical serialization before and after the link to its previous row,
    which the database fills in between (see `_INSERT_LINKED`)."""
    before, found, after = _canonical(event, None, "").decode().rpartition(_NO_LINK)
    assert found, "the canonical form always holds the link"
    return before, after


def append_to_chain(session: Session, event: KeyEventRecord) -> None:
    """Queue `event` for its tenant's chain: it is linked, hashed and inserted just
    before the transaction commits (and dropped if it rolls back).

    Writers of one tenant take turns at the chain's head: on PostgreSQL through a
    transaction-scoped advisory lock keyed by the tenant, held until COMMIT, so no
    two rows claim the same predecessor; SQLite's BEGIN IMMEDIATE already lets one
    writer in at a time. Linking last keeps that lock for the fewest statements:
    every key of a tenant waits on it, so what a transaction does before its audit
    rows must not be done while holding it."""
    session.info.setdefault(_QUEUED, []).append(event)


_QUEUED = "keyledger.audit.queued"


@sa_event.listens_for(Session, "before_commit")
def link_queued(session: Session) -> None:
    """Link and insert the rows queued in `session`'s transaction; done before every
    commit, and callable earlier by whoever needs the rows in the database now."""
    queued: list[KeyEventRecord] | None = session.info.pop(_QUEUED, None)
    if not queued:
        return
    session.flush()  # the transaction's other rows first, before the lock is taken
    # Core statements on the transaction's connection: no ORM machinery while the
    # tenant's lock is held. Tenants in one order, so that writers cannot deadlock.
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # Each row one statement: the tenant's lock, its head, the row linked and hashed.
        for event in sorted(queued, key=lambda e: e.tenant_id):  # stable: a chain's order
            _insert_linked(connection, event)
        return
    heads = {tenant: _head(connection, tenant) for tenant in sorted({e.tenant_id for e in queued})}
    for event in queued:
        previous = heads[event.tenant_id]
        event.prev_event_id = None if previous is None else previous[0]
        event.prev_hash = GENESIS if previous is None else previous[1]
        event.row_hash = event_hash(event)
        # A plain INSERT, not the ORM's unit of work: this runs under the tenant's
        # lock, which every key of the tenant waits on; its id is the next row's link.
        row = {name: getattr(event, name) for name in _INSERTED}
        event.id = connection.execute(_INSERT_EVENT, row).scalar_one()
        heads[event.tenant_id] = (event.id, event.row_hash)


@sa_event.listens_for(Session, "after_rollback")
def _drop_queued(session: Session) -> None:
    session.info.pop(_QUEUED, None)


def _head(connection: Connection, tenant: str) -> tuple[int, str] | None:
    """The id and hash of `tenant`'s newest audit row (SQLite: its one writer at a
    time holds the database, so no lock is needed to read it)."""
    found = connection.execute(_HEAD, {"tenant": tenant}).one_or_none()
    return None if found is None else (found.id, found.row_hash)


def _insert_linked(connection: Connection, event: KeyEventRecord) -> None:
    """Insert `event` at the head of its tenant's chain in one round trip (PostgreSQL).

    The statement calls migration 0008's function, which waits for the tenant's lock
    and then reads the head with a snapshot of its own, so it sees the row the lock's
    previous holder committed. The row's hash is taken in the database over the
    canonical bytes made here with the link put in: the same bytes `event_hash`
    hashes, which `verify_rows` checks."""
    before, after = around_link(event)
    row = {name: getattr(event, name) for name in _UNLINKED}
    link = {"lock_class": AUDIT_LOCK_CLASS, "lock_tenant": event.tenant_id}
    params = {**row, **link, "before": before, "after": after}
    linked = connection.execute(_INSERT_LINKED, params).one()
    event.id, event.prev_event_id, event.prev_hash, event.row_hash = linked


# Built once: both run under the tenant's lock, on every ledger write.
_EVENTS = cast(Table, KeyEventRecord.__table__)
_INSERTED = tuple(column.key for column in _EVENTS.columns if column.key != "id")
_INSERT_EVENT = insert(_EVENTS).returning(_EVENTS.c.id)
_LINK = ("prev_event_id", "prev_hash", "row_hash")
_UNLINKED = tuple(name for name in _INSERTED if name not in _LINK)


def _insert_linked_statement() -> ReturningInsert[int, int | None, str, str]:
    """PostgreSQL: the row, its link and its hash in one INSERT ... SELECT over the
    chain's head (no row for a tenant's first). The bytes hashed are those
    canonical_event makes: `before`, the link as json.dumps writes it (a number or
    null, then a hex string), `after`."""
    head = (
        func.keyledger_chain_head(bindparam("lock_class"), bindparam("lock_tenant"))
        .table_valued(column("head_id", BigInteger), column("head_hash", String))
        .alias("head")
    )
    one = select(literal(1).label("one")).subquery("one")
    prev_hash = func.coalesce(head.c.head_hash, literal(GENESIS, Text))
    canonical = (
        bindparam("before", type_=Text)
        + literal('"prev_event_id":', Text)
        + func.coalesce(head.c.head_id.cast(Text), literal("null", Text))
        + literal(',"prev_hash":"', Text)
        + prev_hash
        + literal('"', Text)
        + bindparam("after", type_=Text)
    )
    row_hash = func.encode(func.sha256(func.convert_to(canonical, "UTF8")), "hex")
    values = (bindparam(name, type_=_EVENTS.c[name].type) for name in _UNLINKED)
    linked = select(*values, head.c.head_id, prev_hash, row_hash).select_from(
        one.outerjoin(head, true())
    )
    return (
        insert(_EVENTS)
        .from_select([*_UNLINKED, *_LINK], linked)
        .returning(_EVENTS.c.id, _EVENTS.c.prev_event_id, _EVENTS.c.prev_hash, _EVENTS.c.row_hash)
    )


_INSERT_LINKED = _insert_linked_statement()
_HEAD = (
    select(_EVENTS.c.id, _EVENTS.c.row_hash)
    .where(_EVENTS.c.tenant_id == bindparam("tenant"))
    .order_by(_EVENTS.c.id.desc())
    .limit(1)
)


# -- verification ----------------------------------------------------------------------


class Break(StrEnum):
    CHANGED = "changed"
    INSERTED = "inserted"
    DELETED = "deleted"


@dataclass(frozen=True)
class ChainBreak:
    """The first place a tenant's chain does not hold, and the row to blame."""

    tenant: str
    row_id: int
    kind: Break
    detail: str

    def __str__(self) -> str:
        return f"tenant {self.tenant!r}: row {self.row_id} {self.kind.value}: {self.detail}"


@dataclass(frozen=True)
class ChainResult:
    tenant: str
    rows: int
    head_id: int | None
    head_hash: str | None
    broken: ChainBreak | None

    @property
    def intact(self) -> bool:
        return self.broken is None


def verify_rows(tenant: str, rows: Sequence[KeyEventRecord]) -> ChainResult:
    """Walk one tenant's rows in id order; stop at the first break."""
    ids = {row.id for row in rows}
    linked = {row.prev_event_id for row in rows if row.prev_event_id is not None}
    good: KeyEventRecord | None = None
    before_good: int | None = None  # the id good itself links to
    for row in rows:
        broken = _check_link(tenant, row, good, before_good, ids, linked)
        if broken is not None:
            return ChainResult(tenant, len(rows), None, None, broken)
        before_good = good.id if good is not None else None
        good = row
    return ChainResult(
        tenant,
        len(rows),
        good.id if good else None,
        good.row_hash if good else None,
        None,
    )


def _check_link(
    tenant: str,
    row: KeyEventRecord,
    good: KeyEventRecord | None,
    before_good: int | None,
    ids: set[int],
    linked: set[int],
) -> ChainBreak | None:
    expected_id = good.id if good is not None else None
    expected_hash = good.row_hash if good is not None else GENESIS
    content_holds = row.row_hash is not None and row.row_hash == event_hash(row)
    if row.prev_event_id == expected_id:
        if row.prev_hash == expected_hash:
            if content_holds:
                return None
            return ChainBreak(
                tenant, row.id, Break.CHANGED, "its fields no longer match the hash written with it"
            )
        if content_holds and good is not None:
            # The row is as written, so its predecessor was edited and re-hashed.
            return ChainBreak(
                tenant,
                good.id,
                Break.CHANGED,
                f"its hash is not the one row {row.id} recorded for it when it was written",
            )
        return ChainBreak(tenant, row.id, Break.CHANGED, "its link to the previous row was edited")
    if row.prev_event_id is not None and row.prev_event_id not in ids and content_holds:
        return ChainBreak(
            tenant,
            row.prev_event_id,
            Break.DELETED,
            f"row {row.id} follows it in the chain, but it is gone",
        )
    if good is not None and row.prev_event_id == before_good and content_holds:
        # Two rows claim one predecessor: the one the chain goes on from is genuine.
        start = "the start of the chain" if before_good is None else f"row {before_good}"
        if good.id not in linked and row.id in linked:
            return ChainBreak(
                tenant, good.id, Break.INSERTED, f"row {row.id} links past it to {start}"
            )
        return ChainBreak(
            tenant,
            row.id,
            Break.INSERTED,
            f"it claims {start} as its predecessor, which row {good.id} follows already",
        )
    return ChainBreak(
        tenant,
        row.id,
        Break.INSERTED,
        "it is not linked to "
        + ("the start of the chain" if good is None else f"row {good.id}, the row before it,")
        + " by a hash keyledger wrote",
    )


def tenants(session: Session) -> list[str]:
    return list(
        session.scalars(
            select(KeyEventRecord.tenant_id)
            .group_by(KeyEventRecord.tenant_id)
            .order_by(KeyEventRecord.tenant_id)
        )
    )


def verify_chains(session: Session, tenant: str | None = None) -> list[ChainResult]:
    """Every tenant's chain (or one tenant's), read in one consistent snapshot."""
    names = [tenant] if tenant is not None else tenants(session)
    results = []
    for name in names:
        rows = session.scalars(
            select(KeyEventRecord)
            .where(KeyEventRecord.tenant_id == name)
            .order_by(KeyEventRecord.id)
        ).all()
        results.append(verify_rows(name, rows))
    return results


# -- export ---------------------------------------------------------------------------


def export_events(
    session: Session, *, tenant: str | None = None, since: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Audit rows as flat JSON-ready records, oldest first, hashes included so that
    the receiving side can check the chain and keep its heads."""
    query = select(KeyEventRecord).order_by(KeyEventRecord.id)
    if tenant is not None:
        query = query.where(KeyEventRecord.tenant_id == tenant)
    if since is not None:
        query = query.where(KeyEventRecord.occurred_at >= since)
    for event in session.scalars(query.execution_options(yield_per=500)):
        yield export_record(event)


def export_record(event: KeyEventRecord) -> dict[str, Any]:
    return {
        "id": event.id,
        "occurred_at": _timestamp(event.occurred_at),
        "tenant": event.tenant_id,
        "key_name": event.key_name,
        "key_id": None if event.key_id is None else str(event.key_id),
        "version": event.version,
        "event_type": _text(event.event_type),
        "from_status": _text(event.from_status),
        "to_status": _text(event.to_status),
        "actor": event.actor,
        "correlation_id": event.correlation_id,
        "reason": event.reason,
        "details": event.details,
        "prev_event_id": event.prev_event_id,
        "prev_hash": event.prev_hash,
        "row_hash": event.row_hash,
    }


def describe(results: Iterable[ChainResult]) -> list[str]:
    """One line per tenant, for people."""
    lines = []
    for result in results:
        if result.broken is not None:
            lines.append(f"BROKEN {result.broken}")
        else:
            lines.append(
                f"ok     tenant {result.tenant!r}: {result.rows} rows, head row "
                f"{result.head_id} {result.head_hash}"
            )
    return lines
