"""Carries out one lifecycle action: its KMS step, then its ledger step, then its notices.

The KMS step runs outside any database transaction and is idempotent (the
marker ties a KMS key to its ledger row); the ledger step is one transaction
that also records the request token the action settles. Failpoints mark the
boundaries the crash tests kill the operator at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, assert_never

from sqlalchemy.engine import Row
from sqlalchemy.orm import Session, sessionmaker

from keyledger.errors import InvalidSpec, LedgerConflict
from keyledger.failpoints import failpoint
from keyledger.lifecycle.actions import (
    Action,
    DisableVersion,
    HandledRequest,
    KmsStep,
    MakePrimary,
    NewVersion,
    NoKmsCall,
    ProvideVersion,
    RowChange,
    VerifyAdoptable,
)
from keyledger.lifecycle.transitions import changes_for
from keyledger.lifecycle.versions import KeyVersion
from keyledger.operations.attribution import attribute
from keyledger.operations.outcome import Outcome
from keyledger.operations.steps import ADOPTION_REFUSED, check_adoptable, version_request
from keyledger.operations.views import Clock, KeyResource, Written, to_version
from keyledger.providers.base import KeyBackend, KmsKeyState
from keyledger.store.repository import KeyLedger, Transition


class ActionExecutor:
    def __init__(self, sessions: sessionmaker[Session], clock: Clock) -> None:
        self.sessions = sessions
        self.clock = clock

    def execute(
        self,
        action: Action,
        versions: Sequence[KeyVersion],
        key: KeyResource,
        backend: KeyBackend,
        why: Transition,
        outcome: Outcome,
    ) -> Written:
        """Carry out `action`; what its ledger step wrote, as committed."""
        attribution = attribute(action.cause, key, why.actor)
        requester = attribution.requester
        why = replace(
            why,
            actor=attribution.actor,
            requester=requester.as_details() if requester is not None else None,
        )
        kms_key_id = self.run_kms_step(action.kms_step(key.spec), key, backend)
        changes = changes_for(action, versions, key.spec, self.clock(), kms_key_id)
        written = self._commit(key, backend, versions, changes, action.handled_request, why)
        failpoint(f"{type(action).__name__}.after-ledger")
        outcome.events.extend(action.notices(key.spec))
        return written

    def run_kms_step(self, step: KmsStep, key: KeyResource, backend: KeyBackend) -> str | None:
        """Do what the action asks of the KMS; the KMS key id a new version got, if any."""
        match step:
            case NoKmsCall():
                return None
            case VerifyAdoptable(ref=ref):
                self._check_adoption(backend, ref, None)
                return None
            case ProvideVersion(version=version, adopt_ref=adopt_ref):
                request = version_request(key, version)
                if adopt_ref is not None:
                    ref = self._check_adoption(backend, adopt_ref, version)
                else:
                    ref = backend.create_key_version(request).ref
                    failpoint("finish-pending.after-kms-create")
                backend.make_primary(ref, request)
                failpoint("finish-pending.after-make-primary")
                return ref
            case MakePrimary(version=version):
                assert version.kms_key_id is not None, "only a created version can be primary"
                backend.make_primary(version.kms_key_id, version_request(key, version))
                failpoint("rollback.after-make-primary")
                return None
            case DisableVersion(version=version):
                assert version.kms_key_id is not None, "only a created version can be disabled"
                if backend.describe(version.kms_key_id).state is KmsKeyState.ENABLED:
                    backend.disable(version.kms_key_id)
                failpoint("compromise.after-kms-disable")
                return None
            case _:
                assert_never(step)

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
        planned: Sequence[KeyVersion],
        changes: list[RowChange],
        request: HandledRequest | None,
        why: Transition,
    ) -> Written:
        spec = key.spec
        statuses = {v.id: v.status for v in planned}
        settled_on: Row[*tuple[Any, ...]] | None = None
        versions: list[KeyVersion] = []
        record: Row[*tuple[Any, ...]]
        with self.sessions.begin() as session:
            ledger = KeyLedger(session)
            now = self.clock()
            for change in changes:
                if isinstance(change, NewVersion):
                    record = ledger.add_pending(
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
                        parent_id=change.parent_id,
                        resource_uid=key.uid,
                        resource_name=key.qualified_name,
                        now=now,
                        why=why,
                        details=change.details,
                        rotation_period=spec.rotation_period,
                    )
                else:
                    changed = ledger.transition(
                        change.version_id,
                        change.event,
                        planned=statuses[change.version_id],
                        to_status=change.to_status,
                        fields=change.fields,
                        now=now,
                        why=why,
                        details=change.details,
                    )
                    if changed is None:
                        # Someone else moved this version since we planned: plan again.
                        raise LedgerConflict(f"version {change.version_id} changed while planning")
                    record = changed
                settled_on = settled_on or record
                versions.append(to_version(record))  # as the row now stands
            if request is not None and settled_on is not None:
                ledger.record_request(settled_on, request.kind.value, request.token, now=now)
        return Written(versions, request if settled_on is not None else None)
