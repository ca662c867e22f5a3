"""Encrypt with a tenant's ACTIVE key version; decrypt under any version that wrote.

The client reads the ledger the operator writes (references only) and talks
to the KMS through the same backends the operator uses; key material never
leaves the KMS except as data keys, which stay in this process's memory.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from sqlalchemy.orm import Session, sessionmaker

from keyledger.client.cache import CacheLimits, OpeningKeyCache, SealingKey, SealingKeyCache
from keyledger.client.envelope import Context, open_envelope, parse, seal
from keyledger.client.usage import UsageRecorder
from keyledger.domain import KeyStatus, KmsProvider
from keyledger.errors import KeyNotUsable
from keyledger.providers.base import KeyBackend
from keyledger.store.availability import ledger_reachable
from keyledger.store.engine import make_engine, make_session_factory
from keyledger.store.models import EncryptionKeyRecord
from keyledger.store.repository import KeyLedger

# Versions whose wrapped data keys may still be opened. COMPROMISED ones may not
# (the KMS has disabled them too); PENDING ones never wrapped anything.
DECRYPTABLE = frozenset(
    {KeyStatus.ACTIVE, KeyStatus.ROTATED, KeyStatus.INACTIVE, KeyStatus.EXPIRED}
)


@dataclass(frozen=True)
class _Version:
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

    @classmethod
    def of(cls, record: EncryptionKeyRecord) -> _Version:
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

    @property
    def label(self) -> str:
        return f"{self.tenant}/{self.key_name} v{self.version}"


class KeyledgerClient:
    """Envelope encryption for applications; safe to share between threads.

    `backends` are opened by the application with its own credentials, one per
    KMS its tenants' keys live in (several of one kind are told apart by endpoint).
    `service` names the calling service: a key version whose spec.authorizedServices
    lists others is refused to it.
    After a rotation or compromise, encryption moves to the new version within
    `version_check_s`; decryption of a compromised version stops as quickly.
    """

    def __init__(
        self,
        ledger: str | sessionmaker[Session],
        backends: Sequence[KeyBackend],
        *,
        limits: CacheLimits | None = None,
        service: str | None = None,
        version_check_s: float = 2.0,
        usage_flush_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = (
            make_session_factory(make_engine(ledger)) if isinstance(ledger, str) else ledger
        )
        self._backends = list(backends)
        self._limits = limits or CacheLimits()
        self._service = service
        self._version_check_s = version_check_s
        self._clock = clock
        self._lock = threading.Lock()
        self._sealing = SealingKeyCache(self._limits)
        self._opening = OpeningKeyCache(self._limits)
        self._active: dict[tuple[str, str], tuple[_Version, float]] = {}
        self._by_id: dict[uuid.UUID, tuple[_Version, float]] = {}
        self.usage = UsageRecorder(self._sessions, usage_flush_s, clock)

    # -- the API ------------------------------------------------------------------------

    @ledger_reachable
    def encrypt(
        self, tenant: str, key_name: str, plaintext: bytes, context: Context | None = None
    ) -> bytes:
        version = self._active_version(tenant, key_name)
        now = self._clock()
        with self._lock:
            sealing = self._sealing.take(tenant, key_name, version.id, len(plaintext), now)
        if sealing is None:
            assert version.kms_key_id is not None  # ACTIVE rows always have one
            data_key = self._backend_for(version).generate_data_key(version.kms_key_id)
            sealing = SealingKey(version.id, data_key.plaintext, data_key.wrapped, born=now)
            with self._lock:
                self._sealing.put(tenant, key_name, sealing, len(plaintext))
        blob = seal(version.id, sealing.wrapped, sealing.plaintext, plaintext, context or {})
        self.usage.record(version.id)
        return blob

    @ledger_reachable
    def decrypt(self, blob: bytes, context: Context | None = None) -> bytes:
        envelope = parse(blob)
        version = self._version(envelope.key_id)
        now = self._clock()
        with self._lock:
            data_key = self._opening.get(version.id, envelope.wrapped_key, now)
        if data_key is None:
            assert version.kms_key_id is not None  # DECRYPTABLE rows always have one
            data_key = self._backend_for(version).unwrap_data_key(
                version.kms_key_id, envelope.wrapped_key
            )
            with self._lock:
                self._opening.put(version.id, envelope.wrapped_key, data_key, now)
        plaintext = open_envelope(envelope, data_key, context or {})
        self.usage.record(version.id)
        return plaintext

    def close(self) -> None:
        """Write pending `last_used_at` and forget every cached data key.
        The backends belong to the caller and stay open."""
        self.usage.flush()
        with self._lock:
            self._sealing.clear()
            self._opening.clear()

    def __enter__(self) -> KeyledgerClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- the ledger, read at most every version_check_s per key ----------------------

    def _active_version(self, tenant: str, key_name: str) -> _Version:
        now = self._clock()
        with self._lock:
            cached = self._active.get((tenant, key_name))
        if cached is not None and now - cached[1] < self._version_check_s:
            return cached[0]
        with self._sessions() as session:
            ledger = KeyLedger(session)
            ledger.scope_to_tenant(tenant)
            record = ledger.active(tenant, key_name)
            if record is None:
                raise KeyNotUsable(_why_not_active(ledger, tenant, key_name))
            version = _Version.of(record)
        with self._lock:
            self._active[(tenant, key_name)] = (version, now)
        self._check_service(version)
        return version

    def _version(self, key_id: uuid.UUID) -> _Version:
        now = self._clock()
        with self._lock:
            cached = self._by_id.get(key_id)
        if cached is None or now - cached[1] >= self._version_check_s:
            with self._sessions() as session:
                record = KeyLedger(session).get(key_id)
                if record is None:
                    raise KeyNotUsable(
                        f"the ciphertext names key version {key_id}, which this ledger "
                        "does not hold: check that the client reads the operator's ledger"
                    )
                cached = (_Version.of(record), now)
            with self._lock:
                if len(self._by_id) >= 10 * max(self._limits.max_decrypt_entries, 100):
                    self._by_id.clear()
                self._by_id[key_id] = cached
        version = cached[0]
        self._check_service(version)
        if version.status not in DECRYPTABLE:
            with self._lock:
                self._opening.drop_version(key_id)
            raise KeyNotUsable(
                f"{version.label} is {version.status.value}: data under it cannot be "
                "decrypted"
                + (
                    "; it was marked compromised, so restore the data from a source "
                    "written under a later version"
                    if version.status is KeyStatus.COMPROMISED
                    else ""
                )
            )
        return version

    def _check_service(self, version: _Version) -> None:
        # A guard against a service wired to the wrong tenant's key, not access
        # control: that is the KMS's policy and the ledger's grants.
        if (
            self._service is not None
            and version.authorized_services
            and self._service not in version.authorized_services
        ):
            raise KeyNotUsable(
                f"service {self._service!r} is not in spec.authorizedServices of "
                f"{version.label} ({', '.join(version.authorized_services)}); add it there, "
                "or use this tenant's key meant for the service"
            )

    def _backend_for(self, version: _Version) -> KeyBackend:
        candidates = [b for b in self._backends if b.provider is version.kms_provider]
        if len(candidates) > 1:
            candidates = [b for b in candidates if b.endpoint == version.kms_endpoint] or [
                b for b in candidates if b.region == version.kms_region
            ]
        if len(candidates) != 1:
            raise KeyNotUsable(
                f"{version.label} lives in {version.kms_provider.value}"
                f"{f' at {version.kms_endpoint}' if version.kms_endpoint else ''}; pass "
                f"{'exactly one' if candidates else 'a'} backend for it to "
                "KeyledgerClient(backends=...)"
            )
        return candidates[0]


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
