"""Making versions: the first one, rotations, and finishing a version left PENDING."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from keyledger.domain import KeyEventType, KeyStatus
from keyledger.lifecycle.actions.base import (
    ByCreator,
    ByOperator,
    ByRequest,
    ByVersionCreator,
    Cause,
    Change,
    HandledRequest,
    KmsStep,
    NewVersion,
    NoKmsCall,
    Notice,
    ProvideVersion,
    RequestKind,
    RowChange,
    Trigger,
    VerifyAdoptable,
    note,
    request_details,
)
from keyledger.lifecycle.spec import KeySpec
from keyledger.lifecycle.versions import KeyVersion, by_id


def adopts_existing_key(spec: KeySpec, pending: KeyVersion) -> bool:
    """Whether this version takes over `spec.adopt.kmsKeyId` instead of making a key:
    only the key's first version does; rotations make new keys as always."""
    return spec.adopt_kms_key_id is not None and pending.parent_id is None


@dataclass(frozen=True)
class CreateVersion:
    """Write the PENDING row of a new version (the first, or a rotation of `parent`).

    The row comes before the KMS key so that a crash in between leaves a trace
    that `FinishPending` resumes from."""

    trigger: Trigger
    parent: KeyVersion | None
    request_token: str | None = None

    @property
    def handled_request(self) -> HandledRequest | None:
        if self.request_token is None:
            return None
        return HandledRequest(RequestKind.ROTATE, self.request_token)

    @property
    def cause(self) -> Cause:
        if self.trigger is Trigger.CREATE:
            return ByCreator()
        if self.handled_request is not None:
            return ByRequest(self.handled_request)
        return ByOperator()

    def kms_step(self, spec: KeySpec) -> KmsStep:
        if self.parent is None and spec.adopt_kms_key_id is not None:
            # Refuse before the ledger holds anything: nothing half-created.
            return VerifyAdoptable(spec.adopt_kms_key_id)
        return NoKmsCall()

    def changes(
        self,
        versions: Sequence[KeyVersion],
        spec: KeySpec,
        now: datetime,
        kms_key_id: str | None,
    ) -> list[RowChange]:
        number = max((v.version for v in versions), default=0) + 1
        details = {"trigger": self.trigger.value, **request_details(self.handled_request)}
        return [NewVersion(number, self.parent.id if self.parent else None, details)]

    def notices(self, spec: KeySpec) -> list[Notice]:
        if self.parent is None:
            return []  # the first version speaks when it is finished
        return [note("Rotating", f"rotating version {self.parent.version} ({self.trigger.value})")]


@dataclass(frozen=True)
class FinishPending:
    """Complete a version whose ledger row exists but whose KMS step may not."""

    pending: KeyVersion

    @property
    def handled_request(self) -> HandledRequest | None:
        return None

    @property
    def cause(self) -> Cause:
        return ByVersionCreator(self.pending)

    def kms_step(self, spec: KeySpec) -> KmsStep:
        adopt = spec.adopt_kms_key_id if adopts_existing_key(spec, self.pending) else None
        return ProvideVersion(self.pending, adopt_ref=adopt)

    def changes(
        self,
        versions: Sequence[KeyVersion],
        spec: KeySpec,
        now: datetime,
        kms_key_id: str | None,
    ) -> list[RowChange]:
        if kms_key_id is None:
            raise AssertionError("FinishPending needs the KMS key its KMS step produced")
        changes: list[RowChange] = []
        parent = by_id(versions, self.pending.parent_id)
        # The old primary leaves ACTIVE first: one ACTIVE version at every moment.
        if parent is not None and parent.status is KeyStatus.ACTIVE:
            changes.append(
                Change(
                    parent.id,
                    KeyEventType.ROTATED,
                    KeyStatus.ROTATED,
                    {
                        "rotated_at": now,
                        "can_rollback": True,
                        "rollback_expires_at": now + spec.rollback_window,
                    },
                    {"replaced_by_version": self.pending.version},
                )
            )
        adopted = adopts_existing_key(spec, self.pending)
        changes.append(
            Change(
                self.pending.id,
                KeyEventType.ADOPTED if adopted else KeyEventType.ACTIVATED,
                KeyStatus.ACTIVE,
                {
                    "kms_key_id": kms_key_id,
                    "activated_at": now,
                    "expires_at": spec.expiry_for(now),
                },
            )
        )
        return changes

    def notices(self, spec: KeySpec) -> list[Notice]:
        number = self.pending.version
        if adopts_existing_key(spec, self.pending):
            return [
                note("Adopted", f"version {number} is the existing KMS key {spec.adopt_kms_key_id}")
            ]
        if self.pending.parent_id is None:
            return [note("Activated", f"version {number} created and ACTIVE")]
        return [note("Rotated", f"version {number} is ACTIVE")]
