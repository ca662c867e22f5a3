"""Ledger reads and writes. Repositories take a session; callers own the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    CompoundSelect,
    Table,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from keyledger.domain import KeyEventType, KeyStatus, KeyType, KmsProvider
from keyledger.errors import LedgerConflict, TenantNotGranted
from keyledger.lifecycle.durations import format_duration
from keyledger.store.audit import append_to_chain
from keyledger.store.models import (
    ACTING_VERSION,
    EncryptionKeyRecord,
    HandledRequestRecord,
    KeyEventRecord,
    TenantGrantRecord,
)

# The session setting that scopes a role to one tenant (migration 0005's policies).
TENANT_SCOPE_SETTING = "keyledger.tenant"
# The CREATED row's details key holding the rotation period, spelled as in specs (90d).
ROTATION_PERIOD = "rotation_period"


@dataclass(frozen=True)
class Transition:
    """Who or what caused a change, for the audit row."""

    actor: str
    correlation_id: str | None = None
    reason: str | None = None
    # The requesting user's username, uid and groups, as the admission webhook saw them.
    requester: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class HandledRequests:
    """`handled`: (kind, token) pairs asked about that are settled; `last`: the last
    settled token of each kind."""

    handled: frozenset[tuple[str, str]]
    last: dict[str, str]


class KeyLedger:
    """The versions of tenants' keys and their audit trail."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # -- reads --------------------------------------------------------------------

    def scope_to_tenant(self, tenant: str) -> None:
        """Narrow this transaction to one tenant's rows (PostgreSQL row-level security).

        Sets `keyledger.tenant` for the transaction; a role the policies apply to
        and that is not granted `tenant` is refused here, with what to do, rather
        than left to find no rows. On SQLite, and for the operator's role (which
        the policies do not apply to), there is nothing to narrow."""
        if self.session.get_bind().dialect.name != "postgresql":
            return
        restricted = self.session.scalar(text("SELECT row_security_active('encryption_keys')"))
        if restricted:
            role = self.session.scalar(text("SELECT current_user"))
            granted = self.session.scalar(
                select(TenantGrantRecord.tenant_id).where(
                    TenantGrantRecord.role_name == role, TenantGrantRecord.tenant_id == tenant
                )
            )
            if granted is None:
                raise TenantNotGranted(
                    f"database role {role!r} is not granted tenant {tenant!r}, so the ledger "
                    "shows it none of that tenant's keys: connect with the role meant for "
                    f"that tenant, or have the ledger's owner run `keyledger grant {role} "
                    f"{tenant}`"
                )
        self.session.execute(
            text("SELECT set_config(:setting, :tenant, true)"),
            {"setting": TENANT_SCOPE_SETTING, "tenant": tenant},
        )

    def versions(
        self, tenant: str, key_name: str, limit: int | None = None
    ) -> Sequence[EncryptionKeyRecord]:
        """All versions of a key, newest first."""
        query = (
            select(EncryptionKeyRecord)
            .where(
                EncryptionKeyRecord.tenant_id == tenant, EncryptionKeyRecord.key_name == key_name
            )
            .order_by(EncryptionKeyRecord.version.desc())
        )
        if limit is not None:
            query = query.limit(limit)
        return self.session.scalars(query).all()

    def live_versions(
        self, tenant: str, key_name: str, recent: int
    ) -> Sequence[Row[*tuple[Any, ...]]]:
        """The versions a pass can act on or show, newest first: the `recent` newest,
        every PENDING, ACTIVE and INACTIVE one, every one whose rollback window is
        open or that can still expire, and the parents of the `recent` newest and of
        the PENDING, ACTIVE and INACTIVE ones (the current version, the one whose
        parent a rollback and the status name, need not be the newest: a COMPROMISED
        one is followed by its PENDING replacement). The rest (long ROTATED, EXPIRED or
        COMPROMISED history) stays in the database, unread, so that a pass over a
        key rotated for years reads what one over a young key does."""
        # One statement built once (its cache key and compiled form are kept), not
        # rebuilt per pass: this read is on every pass and every drift check.
        params = {"tenant": tenant, "key_name": key_name, "recent": recent}
        return self.session.execute(_LIVE_VERSIONS, params).all()

    def latest(self, tenant: str, key_name: str) -> EncryptionKeyRecord | None:
        found = self.versions(tenant, key_name, limit=1)
        return found[0] if found else None

    def active(self, tenant: str, key_name: str) -> EncryptionKeyRecord | None:
        return self.session.scalars(
            select(EncryptionKeyRecord).where(
                EncryptionKeyRecord.tenant_id == tenant,
                EncryptionKeyRecord.key_name == key_name,
                EncryptionKeyRecord.status == KeyStatus.ACTIVE,
            )
        ).one_or_none()

    def active_by_type(self, tenant: str, key_type: KeyType) -> Sequence[EncryptionKeyRecord]:
        return self.session.scalars(
            select(EncryptionKeyRecord).where(
                EncryptionKeyRecord.tenant_id == tenant,
                EncryptionKeyRecord.key_type == key_type,
                EncryptionKeyRecord.status == KeyStatus.ACTIVE,
            )
        ).all()

    def by_kms_key_id(self, kms_key_id: str) -> EncryptionKeyRecord | None:
        return self.session.scalars(
            select(EncryptionKeyRecord).where(EncryptionKeyRecord.kms_key_id == kms_key_id)
        ).one_or_none()

    def get(self, key_id: uuid.UUID) -> EncryptionKeyRecord | None:
        return self.session.get(EncryptionKeyRecord, key_id)

    def events(self, key_id: uuid.UUID) -> Sequence[KeyEventRecord]:
        return self.session.scalars(
            select(KeyEventRecord)
            .where(KeyEventRecord.key_id == key_id)
            .order_by(KeyEventRecord.id)
        ).all()

    def handled_requests(
        self, tenant: str, key_name: str, kinds: Iterable[str], tokens: Mapping[str, str]
    ) -> HandledRequests:
        """Which of `tokens` (request kind to the token an annotation carries) are
        handled, and the last handled token of each of `kinds`: one statement of
        index probes, whatever the length of the key's history."""
        # One statement per set of kinds, built once (building it per pass cost more
        # than running it), and the same for every key: a token absent is bound as
        # NULL, which matches no row. Not one statement per set of tokens present:
        # PostgreSQL caches a plan per prepared statement, and one cached while the
        # table was nearly empty (a young ledger, not analyzed since) stays a scan of
        # the whole table for the keys using that statement alone.
        kinds = tuple(kinds)
        statement = _HANDLED_REQUESTS.get(kinds)
        if statement is None:
            statement = _HANDLED_REQUESTS[kinds] = _handled_requests_statement(kinds)
        params: dict[str, str | None] = {"tenant": tenant, "key_name": key_name}
        for index, kind in enumerate(kinds):
            params[f"token_{index}"] = tokens.get(kind)
        unknown = set(tokens) - set(kinds)
        if unknown:
            raise ValueError(f"tokens of kinds not asked about: {sorted(unknown)}")
        handled: set[tuple[str, str]] = set()
        last: dict[str, str] = {}
        for kind, token, is_latest in self.session.execute(statement, params).all():
            handled.add((kind, token))
            if is_latest:
                last[kind] = token
        return HandledRequests(frozenset(handled), last)

    # -- writes -------------------------------------------------------------------

    def add_pending(
        self,
        *,
        tenant: str,
        key_name: str,
        key_type: KeyType,
        version: int,
        provider: KmsProvider,
        region: str | None,
        endpoint: str | None,
        algorithm: str,
        purpose: str | None,
        compliance_tags: dict[str, str],
        authorized_services: list[str],
        access_policy: dict[str, Any],
        parent_id: uuid.UUID | None,
        resource_uid: str,
        resource_name: str,
        now: datetime,
        why: Transition,
        details: dict[str, Any] | None = None,
        rotation_period: timedelta | None = None,
    ) -> Row[*tuple[Any, ...]]:
        """A new PENDING version and its CREATED audit row; the version as `transition`
        returns one (the live-version columns, then its tenant and key name).

        `rotation_period` is the spec's rotation policy the version is made under;
        it is kept in the CREATED row's details (hash-chained with it), which is
        where the compliance report reads "overdue" from."""
        if rotation_period is not None:
            details = {**(details or {}), ROTATION_PERIOD: format_duration(rotation_period)}
        # A plain INSERT ... RETURNING on the table, built once: no ORM object to track
        # and flush, no statement to build and key for the cache on every new version.
        row = {
            "id": uuid.uuid4(),
            "created_at": now,
            "updated_at": now,
            "correlation_id": why.correlation_id,
            "tenant_id": tenant,
            "key_name": key_name,
            "key_type": key_type,
            "kms_key_id": None,
            "kms_provider": provider,
            "kms_region": region,
            "kms_endpoint": endpoint,
            "status": KeyStatus.PENDING,
            "version": version,
            "parent_key_id": parent_id,
            "can_rollback": False,
            "key_algorithm": algorithm,
            "key_purpose": purpose,
            "compliance_tags": compliance_tags,
            "authorized_services": authorized_services,
            "access_policy": access_policy,
            "created_by": why.actor,
            "resource_uid": resource_uid,
            "resource_name": resource_name,
        }
        record = self.session.execute(_INSERT_VERSION, row).one()
        self.record_event(
            record,
            KeyEventType.CREATED,
            from_status=None,
            to_status=KeyStatus.PENDING,
            now=now,
            why=why,
            details=details,
        )
        return record

    def transition(
        self,
        version_id: uuid.UUID,
        event_type: KeyEventType,
        *,
        planned: KeyStatus,
        to_status: KeyStatus | None,
        fields: dict[str, Any],
        now: datetime,
        why: Transition,
        details: dict[str, Any] | None = None,
    ) -> Row[*tuple[Any, ...]] | None:
        """Change one version if it is still `planned` (the status its change was
        planned from), and write its audit row. One UPDATE ... RETURNING, run at once
        so that the database checks (one ACTIVE per key) see each step in order.

        Returns the version as it now stands (the live-version columns, then its
        tenant and key name); None when someone else moved it since."""
        values: dict[str, Any] = {**fields, "updated_at": now}
        if to_status is not None:
            values["status"] = to_status
            if to_status is KeyStatus.ROTATED:
                values["rotated_by"] = why.actor
        # The table's UPDATE, built once (the ORM's would synchronize the session, and
        # one built per call is keyed for the cache per call): the columns set are the
        # parameters that name one.
        params = {**values, "changed_id": version_id, "planned_status": planned}
        changed = self.session.execute(_TRANSITION, params).one_or_none()
        if changed is None:
            return None
        self.record_event(
            changed,
            event_type,
            from_status=planned,
            to_status=changed.status,
            now=now,
            why=why,
            details=details or None,
        )
        return changed

    def update_version(
        self,
        record: EncryptionKeyRecord,
        event_type: KeyEventType,
        *,
        to_status: KeyStatus | None,
        fields: dict[str, Any],
        now: datetime,
        why: Transition,
        details: dict[str, Any] | None = None,
    ) -> None:
        """`transition` for a version loaded in this session, which is brought up to
        date with the row afterwards."""
        changed = self.transition(
            record.id,
            event_type,
            planned=record.status,
            to_status=to_status,
            fields=fields,
            now=now,
            why=why,
            details=details,
        )
        if changed is None:
            raise LedgerConflict(f"version {record.id} changed since it was loaded")
        self.session.refresh(record)

    def mark_used(self, uses: Mapping[uuid.UUID, datetime]) -> None:
        """When versions last encrypted or decrypted; never moves `last_used_at` back.

        Not a transition: no audit row, `updated_at` stays."""
        for key_id, used_at in uses.items():
            self.session.execute(
                update(EncryptionKeyRecord)
                .where(
                    EncryptionKeyRecord.id == key_id,
                    or_(
                        EncryptionKeyRecord.last_used_at.is_(None),
                        EncryptionKeyRecord.last_used_at < used_at,
                    ),
                )
                .values(last_used_at=used_at)
                .execution_options(synchronize_session=False)
            )

    def mark_refused(self, refusals: Mapping[uuid.UUID, datetime]) -> None:
        """When clients last refused to open data under versions (compromised ones):
        such data still exists. Never moves `last_refused_at` back; no audit row."""
        for key_id, refused_at in refusals.items():
            self.session.execute(
                update(EncryptionKeyRecord)
                .where(
                    EncryptionKeyRecord.id == key_id,
                    or_(
                        EncryptionKeyRecord.last_refused_at.is_(None),
                        EncryptionKeyRecord.last_refused_at < refused_at,
                    ),
                )
                .values(last_refused_at=refused_at)
                .execution_options(synchronize_session=False)
            )

    def last_needed_at(self, key_id: uuid.UUID) -> datetime | None:
        """The last moment a client sealed, opened or was asked to open data under the
        version, as far as clients have reported (they write in batches): the version
        is unused since then, and safe to destroy once that is long enough ago. None: never."""
        record = self.get(key_id)
        if record is None:
            return None
        moments = [m for m in (record.last_used_at, record.last_refused_at) if m is not None]
        return max(moments, default=None)

    def release(self, tenant: str, key_name: str, *, resource_uid: str, now: datetime) -> None:
        """Forget that resource `resource_uid` manages the key; the rows stay for audit.
        Rows another resource manages are left alone: a refused resource's deletion,
        or an owner's delete handler run again after the name was taken over."""
        for record in self.versions(tenant, key_name):
            if record.resource_uid != resource_uid:
                continue
            record.resource_uid = None
            record.resource_name = None
            record.updated_at = now

    def claim(
        self, tenant: str, key_name: str, *, resource_uid: str, resource_name: str, now: datetime
    ) -> None:
        for record in self.versions(tenant, key_name):
            record.resource_uid = resource_uid
            record.resource_name = resource_name
            record.updated_at = now

    def record_event(
        self,
        record: EncryptionKeyRecord | Row[*tuple[Any, ...]],
        event_type: KeyEventType,
        *,
        from_status: KeyStatus | None,
        to_status: KeyStatus | None,
        now: datetime,
        why: Transition,
        details: dict[str, Any] | None = None,
    ) -> KeyEventRecord:
        """Add an audit row to its tenant's hash chain, linked when the transaction commits."""
        event = KeyEventRecord(
            occurred_at=now,
            key_id=record.id,
            tenant_id=record.tenant_id,
            key_name=record.key_name,
            version=record.version,
            event_type=event_type,
            from_status=from_status,
            to_status=to_status,
            actor=why.actor,
            correlation_id=why.correlation_id,
            reason=why.reason,
            details={**(details or {}), "requester": dict(why.requester)}
            if why.requester is not None
            else details,
        )
        append_to_chain(self.session, event)
        return event

    def record_request(
        self,
        record: EncryptionKeyRecord | Row[*tuple[Any, ...]],
        kind: str,
        token: str,
        *,
        now: datetime,
    ) -> None:
        """Mark an annotation request settled on `record`, with the action's audit row;
        it becomes the key's latest of its kind."""
        table = HandledRequestRecord
        self.session.execute(
            update(table)
            .where(
                table.tenant_id == record.tenant_id,
                table.key_name == record.key_name,
                table.kind == kind,
                table.latest,
            )
            .values(latest=False)
            .execution_options(synchronize_session=False)
        )
        self.session.add(
            table(
                tenant_id=record.tenant_id,
                key_name=record.key_name,
                kind=kind,
                token=token,
                handled_at=now,
                key_id=record.id,
                latest=True,
            )
        )


def _handled_requests_statement(kinds: tuple[str, ...]) -> CompoundSelect[Any]:
    """The last settled token of each of `kinds`, and which of the bound tokens
    (`token_<i>` for the i-th kind, NULL for none) are settled: each part one probe of
    a unique index (uq_handled_requests_latest, uq_handled_requests_key_kind_token)."""
    table = HandledRequestRecord
    of_key = (table.tenant_id == bindparam("tenant"), table.key_name == bindparam("key_name"))
    latest = select(table.kind, table.token, literal(True).label("latest")).where(
        *of_key, table.latest, table.kind.in_(kinds)
    )
    settled = (
        select(table.kind, table.token, literal(False).label("latest")).where(
            *of_key, table.kind == kind, table.token == bindparam(f"token_{index}")
        )
        for index, kind in enumerate(kinds)
    )
    return union_all(latest, *settled)


# What a pass reads of each live version: the fields of lifecycle's KeyVersion, in
# their order (operations.views.to_version makes a version of a row by position),
# then the managing resource. Plain rows, not ORM objects: no identity map, and
# none of the columns a pass never looks at to transfer or parse.
_KEYS = cast(Table, EncryptionKeyRecord.__table__)
_LIVE_COLUMNS = (
    _KEYS.c.id,
    _KEYS.c.version,
    _KEYS.c.status,
    _KEYS.c.kms_key_id,
    _KEYS.c.activated_at,
    _KEYS.c.expires_at,
    _KEYS.c.rotated_at,
    _KEYS.c.last_used_at,
    _KEYS.c.can_rollback,
    _KEYS.c.rollback_expires_at,
    _KEYS.c.parent_key_id.label("parent_id"),
    _KEYS.c.created_by,
    _KEYS.c.resource_uid,
)


def _live_versions_statement() -> CompoundSelect[Any]:
    """The newest `recent` versions, the older ones acting (ACTING_VERSION), and the
    parents of both that neither holds (of the acting, only the unsettled or current
    ones' parents). The newest come whole from the key's version index, the older
    acting from their own, the missing parents by primary key: no part reads the
    settled history in between. Core columns, not the ORM's: a plain statement, its
    rows not made into objects.

    The newest are read whole as the index finds them, not as ids looked up again by
    primary key: ten versions more cost PostgreSQL 40 us this way, against 50-60 us
    (a key with one version costs 6-9 us more)."""
    table = _KEYS.c
    of_key = (table.tenant_id == bindparam("tenant"), table.key_name == bindparam("key_name"))
    recent = (
        select(*_LIVE_COLUMNS)
        .where(*of_key)
        .order_by(table.version.desc())
        .limit(bindparam("recent"))
        .cte("recent")
    )
    # Older than the oldest of the newest: exactly the acting versions `recent` lacks.
    acting = (
        select(*_LIVE_COLUMNS)
        .where(
            *of_key,
            ACTING_VERSION,
            table.version < select(func.min(recent.c.version)).scalar_subquery(),
        )
        .cte("acting")
    )
    known = select(recent.c.id).union_all(select(acting.c.id))
    missing_parents = union_all(
        select(recent.c.parent_id).where(recent.c.parent_id.not_in(known)),
        select(acting.c.parent_id).where(
            acting.c.status.in_(_UNSETTLED_OR_CURRENT), acting.c.parent_id.not_in(known)
        ),
    )
    # A parent must be a version of this key too. Compared with IS NOT DISTINCT FROM
    # (the columns are NOT NULL: the same as =), which PostgreSQL cannot answer from
    # an index: with =, it may prefer reading the key's whole history through the
    # version index to the few primary-key lookups of the wanted ids.
    parents = select(*_LIVE_COLUMNS).where(
        table.id.in_(missing_parents),
        table.tenant_id.is_not_distinct_from(bindparam("tenant")),
        table.key_name.is_not_distinct_from(bindparam("key_name")),
    )
    return union_all(select(recent), select(acting), parents).order_by(recent.c.version.desc())


# What a transition returns of the version: the live-version columns, in their order
# (operations.views.to_version reads them by position), then its tenant and key name.
_TRANSITIONED = (*_LIVE_COLUMNS, _KEYS.c.tenant_id, _KEYS.c.key_name)
_INSERT_VERSION = insert(_KEYS).returning(*_TRANSITIONED)
_TRANSITION = (
    update(_KEYS)
    .where(
        _KEYS.c.id == bindparam("changed_id", type_=_KEYS.c.id.type),
        _KEYS.c.status == bindparam("planned_status", type_=_KEYS.c.status.type),
    )
    .returning(*_TRANSITIONED)
)
_UNSETTLED_OR_CURRENT = (KeyStatus.PENDING, KeyStatus.ACTIVE, KeyStatus.INACTIVE)
_LIVE_VERSIONS = _live_versions_statement()
_HANDLED_REQUESTS: dict[tuple[str, ...], CompoundSelect[Any]] = {}
