"""Drives an EncryptionKey's versions: plan the next action, do it, report.

Each KMS step happens outside a database transaction and is idempotent (the
marker ties a KMS key to its ledger row); each ledger step is one transaction.
After every action the ledger is read again and the planner asked again, so a
crash at any point resumes from the ledger alone.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping

from sqlalchemy.orm import Session, sessionmaker

from keyledger.domain import KeyEventType, KeyStatus
from keyledger.errors import InvalidSpec, LedgerConflict, ProviderNotReady
from keyledger.failpoints import failpoint
from keyledger.lifecycle.plan import (
    Action,
    Compromise,
    CreateVersion,
    FinishPending,
    RequestKind,
    Rollback,
    plan_next,
)
from keyledger.lifecycle.requests import is_paused, pending_requests
from keyledger.lifecycle.spec import DeletionPolicy
from keyledger.lifecycle.status import Drift, build_status, shown_usage
from keyledger.lifecycle.transitions import (
    NewVersion,
    RowChange,
    adopts_existing_key,
    changes_for,
)
from keyledger.lifecycle.versions import KeyVersion, current_version
from keyledger.operations.outcome import Outcome
from keyledger.operations.steps import (
    ADOPTION_REFUSED,
    apply_deletion_policy,
    check_adoptable,
    narrate,
    observe_drift,
    version_request,
)
from keyledger.operations.views import Clock, KeyResource, LedgerView, to_version, utcnow
from keyledger.providers.base import (
    KeyBackend,
    KmsKeyState,
)
from keyledger.store.availability import ledger_reachable
from keyledger.store.repository import KeyLedger, Transition

# More than any real sequence needs (e.g. finish, compromise, replace, close window).
MAX_ACTIONS_PER_PASS = 12


class KeyOperations:
    def __init__(self, sessions: sessionmaker[Session], actor: str, clock: Clock = utcnow) -> None:
        self.sessions = sessions
        self.actor = actor
        self.clock = clock
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()

    def _lock(self, key: KeyResource) -> threading.Lock:
        # Handlers and the schedule daemon may act on one key at once; one at a time.
        with self._locks_guard:
            return self._locks[key.uid]

    # -- entry points -----------------------------------------------------------------

    @ledger_reachable
    def reconcile(
        self,
        key: KeyResource,
        backend: KeyBackend,
        provider_label: str,
        correlation_id: str | None = None,
        drift: Drift | None = None,
    ) -> Outcome:
        """Bring the key to where spec, requests and time say it should be."""
        outcome = Outcome()
        why = Transition(actor=self.actor, correlation_id=correlation_id)
        paused = is_paused(key.annotations)
        with self._lock(key):
            self._claim(key, why, outcome, take=not paused)
            view = self._load(key)
            for _ in range(0 if paused else MAX_ACTIONS_PER_PASS):
                requests = pending_requests(key.annotations, view.handled)
                action = plan_next(key.spec, view.versions, requests, self.clock())
                if action is None:
                    break
                self._execute(action, view.versions, key, backend, why, outcome)
                view = self._load(key)
            # The ledger as the last step left it: reported without reading it again.
            self._report(key, provider_label, drift, outcome, view)
        return outcome

    @ledger_reachable
    def check_drift(
        self,
        key: KeyResource,
        backend: KeyBackend,
        provider_label: str,
        was_drifted: bool,
        correlation_id: str | None = None,
        shown: Mapping[int, str | None] | None = None,
    ) -> Outcome:
        """Compare the current version with the KMS; report, never repair.

        The outcome is empty unless the drift state changed, or the clients' last
        use of a version (`last_used_at`) moved past what the status shows (`shown`:
        version number to its `lastUsedAt` in `status.versions`)."""
        outcome = Outcome()
        with self._lock(key):
            view = self._load(key)
            current = current_version(view.versions)
            if current is None or current.kms_key_id is None:
                self._report(key, provider_label, None, outcome)
                return outcome
            drift = observe_drift(current, backend.describe(current.kms_key_id).state)
            if drift.drifted == was_drifted:
                # Nothing changed: no ledger or API writes, so idle keys stay cheap.
                if shown_usage(view.versions) != (shown or {}):
                    self._report(key, provider_label, drift, outcome, view)
                return outcome
            self._record_drift(key, current, drift, correlation_id, outcome)
            self._report(key, provider_label, drift, outcome)
        return outcome

    @ledger_reachable
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
        with self._lock(key), self.sessions.begin() as session:
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
                event = apply_deletion_policy(spec, backend, record.kms_key_id)
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

    @ledger_reachable
    def record_destroyed(self, refs: list[str], provider_label: str) -> None:
        """Audit rows for versions a backend destroyed when their deletion window ended."""
        why = Transition(actor=self.actor, reason=f"deletion window ended ({provider_label})")
        with self.sessions.begin() as session:
            ledger = KeyLedger(session)
            for ref in refs:
                record = ledger.by_kms_key_id(ref)
                if record is not None:
                    ledger.record_event(
                        record,
                        KeyEventType.DESTROYED,
                        from_status=record.status,
                        to_status=record.status,
                        now=self.clock(),
                        why=why,
                    )

    # -- steps --------------------------------------------------------------------------

    def _claim(self, key: KeyResource, why: Transition, outcome: Outcome, take: bool) -> None:
        """Refuse a key name another resource manages; take over a released history,
        or one whose resource was replaced under the same name."""
        spec = key.spec
        with self.sessions.begin() as session:
            ledger = KeyLedger(session)
            latest = ledger.latest(spec.tenant, spec.key_name)
            if latest is None or latest.resource_uid == key.uid:
                return
            # The recorded owner has this very namespace/name but another uid: it was
            # deleted while the operator could not see it (a rebuilt cluster, GitOps
            # re-applying the same YAML against a surviving ledger). Two resources
            # cannot share a name, so the history is taken over, not refused.
            if latest.resource_uid is not None and latest.resource_name != key.qualified_name:
                raise InvalidSpec(
                    f"spec.keyName: tenant {spec.tenant!r} already has a key "
                    f"{spec.key_name!r} managed by EncryptionKey {latest.resource_name}; "
                    "choose another spec.keyName",
                    reason="KeyNameTaken",
                )
            if not take:
                return  # paused: refuse what is not ours, but take nothing over yet
            now = self.clock()
            ledger.claim(
                spec.tenant,
                spec.key_name,
                resource_uid=key.uid,
                resource_name=key.qualified_name,
                now=now,
            )
            ledger.record_event(
                latest,
                KeyEventType.ADOPTED,
                from_status=latest.status,
                to_status=latest.status,
                now=now,
                why=why,
                details={"resource": key.qualified_name},
            )
        outcome.note(
            "Adopted",
            f"took over the ledger history of {spec.tenant}/"
            f"{spec.key_name} (latest version {latest.version})",
        )

    def _load(self, key: KeyResource) -> LedgerView:
        with self.sessions() as session:
            ledger = KeyLedger(session)
            versions = [to_version(r) for r in ledger.versions(key.spec.tenant, key.spec.key_name)]
            history = ledger.request_history(key.spec.tenant, key.spec.key_name)
        handled: dict[RequestKind, set[str]] = defaultdict(set)
        last: dict[str, str] = {}
        for kind, token in history:
            handled[RequestKind(kind)].add(token)
            last[kind] = token
        return LedgerView(versions, dict(handled), last)

    def _execute(
        self,
        action: Action,
        versions: list[KeyVersion],
        key: KeyResource,
        backend: KeyBackend,
        why: Transition,
        outcome: Outcome,
    ) -> None:
        kms_key_id: str | None = None
        adopt = key.spec.adopt_kms_key_id
        match action:
            case CreateVersion(parent=None) if adopt is not None:
                # Refuse before the ledger holds anything: nothing half-created.
                self._check_adoption(backend, adopt, None)
            case FinishPending(pending=pending):
                request = version_request(key, pending)
                if adopt is not None and adopts_existing_key(key.spec, pending):
                    kms_key_id = self._check_adoption(backend, adopt, pending)
                else:
                    kms_key_id = backend.create_key_version(request).ref
                    failpoint("finish-pending.after-kms-create")
                backend.make_primary(kms_key_id, request)
                failpoint("finish-pending.after-make-primary")
            case Rollback(target=target):
                assert target.kms_key_id is not None
                backend.make_primary(target.kms_key_id, version_request(key, target))
                failpoint("rollback.after-make-primary")
            case Compromise(version=version) if version.kms_key_id is not None:
                # Disable first: a leaked key stops working before anything else happens.
                if backend.describe(version.kms_key_id).state is KmsKeyState.ENABLED:
                    backend.disable(version.kms_key_id)
                failpoint("compromise.after-kms-disable")
        changes = changes_for(action, versions, key.spec, self.clock(), kms_key_id)
        self._commit(key, backend, versions, changes, why)
        failpoint(f"{type(action).__name__}.after-ledger")
        narrate(action, outcome, key.spec)

    def _check_adoption(self, backend: KeyBackend, ref: str, pending: KeyVersion | None) -> str:
        with self.sessions() as session:
            owner = KeyLedger(session).by_kms_key_id(ref)
            if owner is not None and (pending is None or owner.id != pending.id):
                raise InvalidSpec(
                    f"spec.adopt.kmsKeyId: {ref} is already version {owner.version} of "
                    f"{owner.tenant_id}/{owner.key_name}; a KMS key belongs to one key version",
                    reason=ADOPTION_REFUSED,
                )
        check_adoptable(backend, ref)
        return ref

    def _commit(
        self,
        key: KeyResource,
        backend: KeyBackend,
        planned: list[KeyVersion],
        changes: list[RowChange],
        why: Transition,
    ) -> None:
        spec = key.spec
        statuses = {v.id: v.status for v in planned}
        with self.sessions.begin() as session:
            ledger = KeyLedger(session)
            now = self.clock()
            for change in changes:
                if isinstance(change, NewVersion):
                    parent = ledger.get(change.parent_id) if change.parent_id else None
                    ledger.add_pending(
                        tenant=spec.tenant,
                        key_name=spec.key_name,
                        key_type=spec.key_type,
                        version=change.version,
                        provider=backend.provider,
                        region=backend.region,
                        endpoint=backend.endpoint,
                        algorithm=spec.algorithm,
                        purpose=spec.purpose,
                        compliance_tags=dict(spec.compliance_tags),
                        authorized_services=list(spec.authorized_services),
                        access_policy=dict(spec.access_policy),
                        parent=parent,
                        resource_uid=key.uid,
                        resource_name=key.qualified_name,
                        now=now,
                        why=why,
                        details=change.details,
                    )
                    continue
                record = ledger.get(change.version_id)
                if record is None or record.status is not statuses[change.version_id]:
                    # Someone else moved this version since we planned: plan again.
                    raise LedgerConflict(f"version {change.version_id} changed while planning")
                ledger.update_version(
                    record,
                    change.event,
                    to_status=change.to_status,
                    fields=change.fields,
                    now=now,
                    why=why,
                    details=change.details,
                )

    def _record_drift(
        self,
        key: KeyResource,
        current: KeyVersion,
        drift: Drift,
        correlation_id: str | None,
        outcome: Outcome,
    ) -> None:
        why = Transition(actor=self.actor, correlation_id=correlation_id, reason=drift.message)
        event = KeyEventType.DRIFT_DETECTED if drift.drifted else KeyEventType.DRIFT_RESOLVED
        with self.sessions.begin() as session:
            ledger = KeyLedger(session)
            record = ledger.get(current.id)
            assert record is not None
            ledger.record_event(
                record,
                event,
                from_status=record.status,
                to_status=record.status,
                now=self.clock(),
                why=why,
            )
        if drift.drifted:
            outcome.warn("DriftDetected", drift.message)
        else:
            outcome.note("DriftResolved", drift.message)

    def _report(
        self,
        key: KeyResource,
        provider_label: str,
        drift: Drift | None,
        outcome: Outcome,
        view: LedgerView | None = None,
    ) -> None:
        view = view or self._load(key)
        status = build_status(
            key.spec,
            view.versions,
            provider_label,
            self.clock(),
            drift=drift,
            handled_requests=view.last_handled,
            paused=is_paused(key.annotations),
        )
        outcome.status.update(status.fields)
        outcome.conditions.extend(status.conditions)
        outcome.next_due = status.next_due
        outcome.scheduled = True
