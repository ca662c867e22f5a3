"""Create, report and retire an EncryptionKey's versions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from keyledger.domain import KeyEventType, KeyStatus
from keyledger.errors import InvalidSpec, ProviderNotReady
from keyledger.lifecycle.spec import DeletionPolicy, KeySpec
from keyledger.lifecycle.status import build_status
from keyledger.lifecycle.versions import KeyVersion
from keyledger.operations.outcome import Outcome
from keyledger.providers.base import KeyBackend, KeyVersionRequest, KmsKeyState, idempotency_marker
from keyledger.store.models import EncryptionKeyRecord
from keyledger.store.repository import KeyLedger, Transition

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class KeyResource:
    """The EncryptionKey being reconciled, reduced to what operations need."""

    uid: str
    namespace: str
    name: str
    generation: int | None
    spec: KeySpec

    @property
    def qualified_name(self) -> str:
        return f"{self.namespace}/{self.name}"


def to_version(record: EncryptionKeyRecord) -> KeyVersion:
    return KeyVersion(
        id=record.id,
        version=record.version,
        status=record.status,
        kms_key_id=record.kms_key_id,
        created_at=record.created_at,
        activated_at=record.activated_at,
        expires_at=record.expires_at,
        rotated_at=record.rotated_at,
        last_used_at=record.last_used_at,
        can_rollback=record.can_rollback,
        rollback_expires_at=record.rollback_expires_at,
    )


class KeyOperations:
    def __init__(self, sessions: sessionmaker[Session], actor: str, clock: Clock = utcnow) -> None:
        self.sessions = sessions
        self.actor = actor
        self.clock = clock

    def reconcile(
        self,
        key: KeyResource,
        backend: KeyBackend,
        provider_label: str,
        correlation_id: str | None = None,
    ) -> Outcome:
        """Make sure the key has an ACTIVE version; idempotent, resumable after a crash."""
        outcome = Outcome()
        why = Transition(actor=self.actor, correlation_id=correlation_id)
        pending = self._ensure_version_row(key, backend, why, outcome)
        if pending is not None:
            self._create_in_kms(key, pending, backend, why, outcome)
        self._report(key, provider_label, outcome)
        return outcome

    def status(self, key: KeyResource, provider_label: str) -> Outcome:
        outcome = Outcome()
        self._report(key, provider_label, outcome)
        return outcome

    def retire(
        self, key: KeyResource, backend: KeyBackend | None, correlation_id: str | None
    ) -> Outcome:
        """Apply `spec.deletionPolicy` when the resource is deleted; ledger rows stay."""
        outcome = Outcome()
        spec = key.spec
        why = Transition(
            actor=self.actor,
            correlation_id=correlation_id,
            reason=f"EncryptionKey {key.qualified_name} deleted",
        )
        with self.sessions.begin() as session:
            ledger = KeyLedger(session)
            records = [
                r for r in ledger.versions(spec.tenant, spec.key_name) if r.resource_uid == key.uid
            ]
            now = self.clock()
            live = [r for r in records if r.kms_key_id and r.status is not KeyStatus.COMPROMISED]
            if spec.deletion_policy is not DeletionPolicy.RETAIN and live and backend is None:
                raise ProviderNotReady(
                    f"spec.deletionPolicy {spec.deletion_policy.value} needs the provider, which "
                    "is unavailable; restore it, or set deletionPolicy: Retain to delete anyway"
                )
            for record in live:
                assert record.kms_key_id is not None
                event = self._apply_deletion_policy(spec, backend, record.kms_key_id)
                ledger.record_event(
                    record,
                    event,
                    from_status=record.status,
                    to_status=record.status,
                    now=now,
                    why=why,
                )
            ledger.release(spec.tenant, spec.key_name, now=now)
        outcome.note(
            "Deleted",
            f"applied deletionPolicy {spec.deletion_policy.value} to "
            f"{len(live)} version(s); ledger rows kept for audit",
        )
        return outcome

    # -- steps ----------------------------------------------------------------------

    def _ensure_version_row(
        self, key: KeyResource, backend: KeyBackend, why: Transition, outcome: Outcome
    ) -> EncryptionKeyRecord | None:
        """The PENDING version that still needs its KMS key, creating version 1 if none exists."""
        spec = key.spec
        with self.sessions.begin() as session:
            ledger = KeyLedger(session)
            latest = ledger.latest(spec.tenant, spec.key_name)
            now = self.clock()
            if latest is not None and latest.resource_uid not in (None, key.uid):
                raise InvalidSpec(
                    f"spec.keyName: tenant {spec.tenant!r} already has a key "
                    f"{spec.key_name!r} managed by EncryptionKey {latest.resource_name}; "
                    "choose another spec.keyName",
                    reason="KeyNameTaken",
                )
            if latest is not None and latest.resource_uid is None:
                ledger.claim(
                    spec.tenant,
                    spec.key_name,
                    resource_uid=key.uid,
                    resource_name=key.qualified_name,
                    now=now,
                )
                outcome.note(
                    "Adopted",
                    f"took over the ledger history of {spec.tenant}/"
                    f"{spec.key_name} (latest version {latest.version})",
                )
            if latest is None:
                latest = ledger.add_pending(
                    tenant=spec.tenant,
                    key_name=spec.key_name,
                    key_type=spec.key_type,
                    version=1,
                    provider=backend.provider,
                    region=backend.region,
                    endpoint=backend.endpoint,
                    algorithm=spec.algorithm,
                    purpose=spec.purpose,
                    compliance_tags=dict(spec.compliance_tags),
                    authorized_services=list(spec.authorized_services),
                    access_policy=dict(spec.access_policy),
                    parent=None,
                    resource_uid=key.uid,
                    resource_name=key.qualified_name,
                    now=now,
                    why=why,
                )
            return latest if latest.status is KeyStatus.PENDING else None

    def _create_in_kms(
        self,
        key: KeyResource,
        pending: EncryptionKeyRecord,
        backend: KeyBackend,
        why: Transition,
        outcome: Outcome,
    ) -> None:
        spec = key.spec
        request = KeyVersionRequest(
            tenant=spec.tenant,
            key_name=spec.key_name,
            version=pending.version,
            algorithm=spec.algorithm,
            # The marker ties the KMS key to this ledger row: a retry after a crash
            # finds the key it already made instead of making a second one.
            marker=idempotency_marker(str(pending.id), pending.version),
            labels={
                "tenant": spec.tenant,
                "key-name": spec.key_name,
                "version": str(pending.version),
            },
        )
        kms_key = backend.create_key_version(request)
        backend.make_primary(kms_key.ref, request)
        with self.sessions.begin() as session:
            ledger = KeyLedger(session)
            record = ledger.get(pending.id)
            if record is None or record.status is not KeyStatus.PENDING:
                return  # another worker finished it meanwhile
            now = self.clock()
            ledger.activate(
                record, kms_key_id=kms_key.ref, expires_at=spec.expiry_for(now), now=now, why=why
            )
        outcome.note(
            "Activated",
            f"version {pending.version} created in "
            f"{backend.provider.value} and ACTIVE: {kms_key.ref}",
        )

    def _report(self, key: KeyResource, provider_label: str, outcome: Outcome) -> None:
        with self.sessions() as session:
            records = KeyLedger(session).versions(key.spec.tenant, key.spec.key_name)
            versions = [to_version(r) for r in records]
        view = build_status(key.spec, versions, provider_label)
        outcome.status.update(view.fields)
        outcome.conditions.extend(view.conditions)

    @staticmethod
    def _apply_deletion_policy(spec: KeySpec, backend: KeyBackend | None, ref: str) -> KeyEventType:
        if spec.deletion_policy is DeletionPolicy.RETAIN or backend is None:
            return KeyEventType.DELETION_RETAINED
        state = backend.describe(ref).state
        if spec.deletion_policy is DeletionPolicy.DISABLE:
            if state is KmsKeyState.ENABLED:
                backend.disable(ref)
            return KeyEventType.DELETION_DISABLED
        if state is not KmsKeyState.PENDING_DELETION and state is not KmsKeyState.MISSING:
            backend.schedule_deletion(ref, spec.deletion_window_days)
        return KeyEventType.DELETION_SCHEDULED
