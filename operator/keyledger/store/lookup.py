"""The client's hot reads: a key's ACTIVE version, a version by id. One round trip.

A read through a Session costs four round trips on PostgreSQL (the pool's
pre-ping, BEGIN, the SELECT, ROLLBACK) and an ORM object: 1.07 ms against
0.09 ms for the query alone. These reads need none of that: one statement,
no transaction to be consistent with, a prepared query and a plain row.
Instead of pinging a connection before every use, a read that finds its
connection dead (the database restarted) is tried once more on a fresh one.

Under row-level security (a service's role, see migration 0005) the reads
see only the tenants granted to the role, as any read does; they do not set
the session's tenant scope, which only narrows further. A lookup that finds
nothing is for the caller to explain through the ledger session
(`KeyLedger.scope_to_tenant` says when the role lacks the grant).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Engine, Select, bindparam, select
from sqlalchemy.exc import OperationalError

from keyledger.domain import KeyStatus, KmsProvider
from keyledger.store.models import EncryptionKeyRecord

_table = EncryptionKeyRecord.__table__
_COLUMNS = (
    _table.c.id,
    _table.c.tenant_id,
    _table.c.key_name,
    _table.c.version,
    _table.c.status,
    _table.c.kms_key_id,
    _table.c.kms_provider,
    _table.c.kms_endpoint,
    _table.c.kms_region,
    _table.c.authorized_services,
)


@dataclass(frozen=True)
class VersionRow:
    """What a client needs to know of a key version to seal or open with it."""

    id: uuid.UUID
    tenant: str
    key_name: str
    version: int
    status: KeyStatus
    kms_key_id: str | None
    kms_provider: KmsProvider
    kms_endpoint: str | None
    kms_region: str | None
    authorized_services: tuple[str, ...]


class VersionLookup:
    """Thread-safe: on PostgreSQL each thread keeps one autocommit connection of its
    own (no pool checkout, no pre-ping, no BEGIN/ROLLBACK) and runs driver-prepared
    statements on it; elsewhere (SQLite, embedded: no round trips to save) the
    engine's pool serves a Core statement."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._local = threading.local()
        self._opened: list[Any] = []
        self._lock = threading.Lock()
        self._active = select(*_COLUMNS).where(
            _table.c.tenant_id == bindparam("tenant"),
            _table.c.key_name == bindparam("key_name"),
            _table.c.status == KeyStatus.ACTIVE,
        )
        self._by_id = select(*_COLUMNS).where(_table.c.id == bindparam("key_id"))

    def active(self, tenant: str, key_name: str) -> VersionRow | None:
        if self._postgres:
            return self._on_own_connection(_ACTIVE_SQL, (tenant, key_name))
        return self._through_pool(self._active, {"tenant": tenant, "key_name": key_name})

    def by_id(self, key_id: uuid.UUID) -> VersionRow | None:
        if self._postgres:
            return self._on_own_connection(_BY_ID_SQL, (key_id,))
        return self._through_pool(self._by_id, {"key_id": key_id})

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()

    def _on_own_connection(self, sql: str, params: tuple[Any, ...]) -> VersionRow | None:
        try:
            connection = getattr(self._local, "connection", None)
            if connection is None or connection.closed:
                connection = self._connect()
            try:
                row = connection.execute(sql, params, prepare=True).fetchone()
            except psycopg.OperationalError:
                # The database went away (and maybe came back): once more, on a new one.
                connection.close()
                row = self._connect().execute(sql, params, prepare=True).fetchone()
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            # As SQLAlchemy reports it, so that callers handle one kind of outage.
            raise OperationalError(None, None, error) from error
        if row is None:
            return None
        key_id, tenant, key_name, version, status, ref, provider, endpoint, region, services = row
        return VersionRow(
            key_id,
            tenant,
            key_name,
            version,
            KeyStatus(status),
            ref,
            KmsProvider(provider),
            endpoint,
            region,
            tuple(services or ()),
        )

    def _connect(self) -> Any:
        # The engine's own connect arguments: the same server, user, TLS and options.
        args, options = self._engine.dialect.create_connect_args(self._engine.url)
        connection = psycopg.connect(*args, **{**options, "autocommit": True})
        self._local.connection = connection
        with self._lock:
            self._opened.append(connection)
        return connection

    def _through_pool(self, statement: Select[Any], params: dict[str, Any]) -> VersionRow | None:
        with self._engine.connect() as connection:
            row = connection.execute(statement, params).first()
        if row is None:
            return None
        return VersionRow(
            row.id,
            row.tenant_id,
            row.key_name,
            row.version,
            row.status,
            row.kms_key_id,
            row.kms_provider,
            row.kms_endpoint,
            row.kms_region,
            tuple(row.authorized_services or ()),
        )


_SELECTED = ", ".join(column.name for column in _COLUMNS)
_ACTIVE_SQL = (
    f"SELECT {_SELECTED} FROM encryption_keys "  # noqa: S608  # constant column names
    "WHERE tenant_id = %s AND key_name = %s AND status = 'ACTIVE'"
)
_BY_ID_SQL = f"SELECT {_SELECTED} FROM encryption_keys WHERE id = %s"  # noqa: S608
