"""The client's view of the ledger: key versions, cached, forgotten when they change.

Entries are re-read after `version_check_s` (polling, the fallback that works on
every database) or dropped at once when the ledger says a key changed (on
PostgreSQL, see notify.py).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from keyledger.domain import KeyStatus
from keyledger.errors import KeyNotUsable, TenantMismatch
from keyledger.store.lookup import VersionLookup, VersionRow
from keyledger.store.models import EncryptionKeyRecord
from keyledger.store.repository import KeyLedger

# Versions whose wrapped data keys may be opened. COMPROMISED ones only with a
# break glass (the KMS has disabled them too); PENDING ones never wrapped anything.
DECRYPTABLE = frozenset(
    {KeyStatus.ACTIVE, KeyStatus.ROTATED, KeyStatus.INACTIVE, KeyStatus.EXPIRED}
)


@dataclass(frozen=True)
class Version(VersionRow):
    """A key version as the client seals and opens with it: the ledger's row, and
    what the client checks against it."""

    @classmethod
    def of(cls, record: EncryptionKeyRecord) -> Version:
        return cls(
            record.id,
            record.tenant_id,
            record.key_name,
            record.version,
            record.status,
            record.kms_key_id,
            record.kms_provider,
            record.kms_endpoint,
            record.kms_region,
            tuple(record.authorized_services or ()),
        )

    @classmethod
    def of_row(cls, row: VersionRow) -> Version:
        return cls(**{field.name: getattr(row, field.name) for field in fields(VersionRow)})

    @property
    def label(self) -> str:
        return f"{self.tenant}/{self.key_name} v{self.version}"

    def check_tenant(self, expected: str) -> None:
        """Refuse a ciphertext under another tenant's key version (format 1 blobs name
        no tenant: their version's owner is theirs)."""
        check_sealed_for(self.tenant, expected)


def check_sealed_for(tenant: str | None, expected: str) -> None:
    """Refuse a ciphertext of another tenant before any ledger read or KMS call (a
    confused deputy: a row id mixed up, a cache keyed wrongly)."""
    if tenant is not None and tenant != expected:
        raise TenantMismatch(
            f"the ciphertext was sealed for tenant {tenant!r}, but it was opened on "
            f"behalf of tenant {expected!r}: pass the tenant the data belongs to, or "
            "find where the ciphertext was mixed up with another tenant's"
        )


class LedgerVersions:
    """Thread-safe; `forget` may be called from any thread (the notification listener)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        version_check_s: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        # On PostgreSQL one round trip per uncached read (the session path only explains
        # a miss); an embedded SQLite ledger has no round trips to save.
        engine = sessions.kw.get("bind")
        self._lookup = (
            VersionLookup(engine)
            if isinstance(engine, Engine) and engine.dialect.name == "postgresql"
            else None
        )
        self._check_s = version_check_s
        self._max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._active: dict[tuple[str, str], tuple[Version, float]] = {}
        self._by_id: dict[uuid.UUID, tuple[Version, float]] = {}
        # Bumped by every forget: a read that began before it must not be cached
        # after it, or a notification could be undone by a slow, stale read.
        self._generation = 0

    @property
    def generation(self) -> int:
        """Bumped by every forget: what a cache built on a read taken before compares."""
        return self._generation

    @property
    def check_s(self) -> float:
        return self._check_s

    def active(self, tenant: str, key_name: str) -> Version:
        return self.active_checked(tenant, key_name)[0]

    def active_checked(self, tenant: str, key_name: str) -> tuple[Version, float]:
        """The ACTIVE version and when it was read from the ledger (on the clock)."""
        now = self._clock()
        with self._lock:
            cached = self._active.get((tenant, key_name))
            generation = self._generation
        if cached is not None and now - cached[1] < self._check_s:
            return cached
        row = self._lookup.active(tenant, key_name) if self._lookup is not None else None
        if row is not None:
            version = Version.of_row(row)
        else:
            with self._sessions() as session:
                ledger = KeyLedger(session)
                ledger.scope_to_tenant(tenant)
                record = ledger.active(tenant, key_name)
                if record is None:
                    raise KeyNotUsable(_why_not_active(ledger, tenant, key_name))
                version = Version.of(record)
        with self._lock:
            if generation == self._generation:
                self._active[(tenant, key_name)] = (version, now)
        return version, now

    def by_id(self, key_id: uuid.UUID, tenant: str) -> Version:
        """The version `key_id`, read as `tenant` (row-level security on PostgreSQL);
        the caller still checks that it is that tenant's."""
        return self.by_id_checked(key_id, tenant)[0]

    def by_id_checked(self, key_id: uuid.UUID, tenant: str) -> tuple[Version, float]:
        """`by_id`, and when the version was read from the ledger (on the clock)."""
        now = self._clock()
        with self._lock:
            cached = self._by_id.get(key_id)
            generation = self._generation
        if cached is not None and now - cached[1] < self._check_s:
            return cached
        row = self._lookup.by_id(key_id) if self._lookup is not None else None
        if row is not None and row.tenant == tenant:
            version = Version.of_row(row)
        else:  # not found, or another tenant's: as the tenant-scoped read says it
            with self._sessions() as session:
                ledger = KeyLedger(session)
                ledger.scope_to_tenant(tenant)
                record = ledger.get(key_id)
                if record is None:
                    raise KeyNotUsable(
                        f"the ciphertext names key version {key_id}, which this ledger "
                        "does not hold: check that the client reads the operator's ledger"
                    )
                version = Version.of(record)
        with self._lock:
            if generation == self._generation:
                if len(self._by_id) >= self._max_entries:
                    self._by_id.clear()
                self._by_id[key_id] = (version, now)
        return version, now

    def forget(self, tenant: str, key_name: str, key_id: uuid.UUID | None) -> None:
        with self._lock:
            self._generation += 1
            self._active.pop((tenant, key_name), None)
            if key_id is not None:
                self._by_id.pop(key_id, None)
            for other in [k for k, (v, _) in self._by_id.items() if v.key_name == key_name]:
                if self._by_id[other][0].tenant == tenant:
                    del self._by_id[other]

    def close(self) -> None:
        if self._lookup is not None:
            self._lookup.close()

    def forget_all(self) -> None:
        with self._lock:
            self._generation += 1
            self._active.clear()
            self._by_id.clear()


def _why_not_active(ledger: KeyLedger, tenant: str, key_name: str) -> str:
    latest = ledger.latest(tenant, key_name)
    if latest is None:
        return (
            f"tenant {tenant!r} has no key {key_name!r} in the ledger: apply an "
            f"EncryptionKey with spec.tenant: {tenant} and spec.keyName: {key_name}"
        )
    return (
        f"{tenant}/{key_name} has no ACTIVE version to encrypt with (newest: "
        f"v{latest.version} {latest.status.value}); see `kubectl get ek` for why"
    )
