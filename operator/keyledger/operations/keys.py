"""Drives an EncryptionKey's versions: plan the next action, do it, report.

Each KMS step happens outside a database transaction and is idempotent (the
marker ties a KMS key to its ledger row); each ledger step is one transaction.
After every action the planner is asked again, over what the action committed,
and every pass starts from a fresh read of the ledger, so a crash at any point
resumes from the ledger alone.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.orm import Session, sessionmaker

from keyledger.domain import KeyEventType, KeyStatus
from keyledger.errors import InvalidSpec, ProviderNotReady
from keyledger.lifecycle.actions import RequestKind
from keyledger.lifecycle.plan import plan_next
from keyledger.lifecycle.requests import is_paused, pending_requests, request_tokens
from keyledger.lifecycle.spec import DeletionPolicy
from keyledger.lifecycle.status import VERSION_HISTORY_LIMIT, Drift, build_status, shown_usage
from keyledger.lifecycle.versions import KeyVersion, current_version
from keyledger.operations.executor import ActionExecutor
from keyledger.operations.locks import KeyLocks
from keyledger.operations.outcome import Outcome
from keyledger.operations.steps import apply_deletion_policy, observe_drift
from keyledger.operations.views import Clock, KeyResource, LedgerView, to_version, utcnow
from keyledger.providers.base import KeyBackend
from keyledger.store.availability import ledger_reachable
from keyledger.store.engine import make_read_session_factory
from keyledger.store.repository import HandledRequests, KeyLedger, Transition

# More than any real sequence needs (e.g. finish, compromise, replace, close window).
MAX_ACTIONS_PER_PASS = 12
# A pass reads the newest versions the status shows, and older ones only while the
# planner can still act on them (see KeyLedger.live_versions).
LIVE_RECENT = VERSION_HISTORY_LIMIT
REQUEST_KINDS = tuple(kind.value for kind in RequestKind)


class KeyOperations:
    def __init__(self, sessions: sessionmaker[Session], actor: str, clock: Clock = utcnow) -> None:
        self.sessions = sessions
        # The pass's reads (versions, request tokens): no transaction needed.
        self.reads = make_read_session_factory(sessions)
        self.actor = actor
        self.clock = clock
        self.locks = KeyLocks()
        self.executor = ActionExecutor(sessions, clock)

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
        with self.locks.hold(key.uid):
            view = self._load(key)
            if view.versions and view.owner != key.uid:
                self._claim(key, why, outcome, take=not paused)
                view = self._load(key)
            for _ in range(0 if paused else MAX_ACTIONS_PER_PASS):
                requests = pending_requests(key.annotations, view.handled)
                action = plan_next(key.spec, view.versions, requests, self.clock())
                if action is None:
                    break
                written = self.executor.execute(action, view.versions, key, backend, why, outcome)
                view = view.after(written)
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
        with self.locks.hold(key.uid):
            # The versions alone (one read): the request history only if there is a
            # status to build, which an idle key's check does not need.
            versions, owner = self._versions(key)
            if versions and owner != key.uid:
                # Another resource's key (or one not claimed yet): its reconcile
                # claims or refuses it; a drift check reports nothing for it.
                return outcome
            current = current_version(versions)
            if current is None or current.kms_key_id is None:
                self._report(key, provider_label, None, outcome)
                return outcome
            drift = observe_drift(current, backend.describe(current.kms_key_id).state)
            if drift.drifted == was_drifted:
                # Nothing changed: no ledger or API writes, so idle keys stay cheap.
                if shown_usage(versions) != (shown or {}):
                    self._report(key, provider_label, drift, outcome)
                return outcome
            self._record_drift(key, current, drift, correlation_id, outcome)
            self._report(key, provider_label, drift, outcome)
        return outcome

    @ledger_reachable
    def retire(
        self, key: KeyResource, backend: KeyBackend | None, correlation_id: str | None
    ) -> Outcome:
        """Apply `spec.deletionPolicy` when the resource is deleted; ledger rows stay.

        The KMS calls come first, outside any transaction (each is idempotent: it
        looks at the key's state before changing it), then one transaction records
        them and releases the key name. A crash in between repeats the calls."""
        outcome = Outcome()
        spec = key.spec
        why = Transition(
            actor=self.actor,
            correlation_id=correlation_id,
            reason=f"EncryptionKey {key.qualified_name} deleted",
        )
        with self.locks.hold(key.uid):
            with self.sessions() as session:
                live = [
                    to_version(r)
                    for r in KeyLedger(session).versions(spec.tenant, spec.key_name)
                    if r.resource_uid == key.uid
                    and r.kms_key_id
                    and r.status is not KeyStatus.COMPROMISED
                ]
            if spec.deletion_policy is not DeletionPolicy.RETAIN and live and backend is None:
                raise ProviderNotReady(
                    f"spec.deletionPolicy {spec.deletion_policy.value} needs the provider, which "
                    "is unavailable; restore it, or set deletionPolicy: Retain to delete anyway"
                )
            applied = {
                v.id: apply_deletion_policy(spec, backend, v.kms_key_id)
                for v in live
                if v.kms_key_id is not None
            }
            with self.sessions.begin() as session:
                ledger = KeyLedger(session)
                now = self.clock()
                for version_id, event in applied.items():
                    record = ledger.get(version_id)
                    assert record is not None, "ledger rows are never deleted"
                    ledger.record_event(
                        record,
                        event,
                        from_status=record.status,
                        to_status=record.status,
                        now=now,
                        why=why,
                    )
                ledger.release(spec.tenant, spec.key_name, resource_uid=key.uid, now=now)
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
        or one whose resource was replaced under the same name. Called only when the
        pass's read shows another owner (or none), so an owned key's pass skips it."""
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
        """The key's live versions and its request tokens: two reads whose cost grows
        neither with the key's history of handled requests nor with its retired versions."""
        tokens = request_tokens(key.annotations)
        with self.reads() as session:
            ledger = KeyLedger(session)
            records = ledger.live_versions(key.spec.tenant, key.spec.key_name, LIVE_RECENT)
            versions = [to_version(r) for r in records]
            # A request is settled on a version: a key without any has settled none.
            requests = (
                ledger.handled_requests(
                    key.spec.tenant,
                    key.spec.key_name,
                    kinds=REQUEST_KINDS,
                    tokens={kind.value: token for kind, token in tokens.items()},
                )
                if records
                else HandledRequests(frozenset(), {})
            )
        handled: dict[RequestKind, set[str]] = {}
        for kind, token in requests.handled:
            handled.setdefault(RequestKind(kind), set()).add(token)
        return LedgerView(
            versions, handled, requests.last, records[0].resource_uid if records else None
        )

    def _versions(self, key: KeyResource) -> tuple[list[KeyVersion], str | None]:
        """The key's live versions, and the resource the ledger says manages them."""
        with self.reads() as session:
            ledger = KeyLedger(session)
            records = ledger.live_versions(key.spec.tenant, key.spec.key_name, LIVE_RECENT)
            owner = records[0].resource_uid if records else None
            return [to_version(r) for r in records], owner

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
