"""A version reported leaked: disabled in the KMS first, then marked for good."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from keyledger.domain import KeyEventType, KeyStatus
from keyledger.lifecycle.actions.base import (
    ByRequest,
    Cause,
    Change,
    DisableVersion,
    HandledRequest,
    KmsStep,
    NoKmsCall,
    Notice,
    RequestKind,
    RowChange,
    warn,
)
from keyledger.lifecycle.spec import KeySpec
from keyledger.lifecycle.versions import KeyVersion


@dataclass(frozen=True)
class Compromise:
    version: KeyVersion
    request_token: str
    reason: str

    @property
    def handled_request(self) -> HandledRequest:
        return HandledRequest(RequestKind.COMPROMISE, self.request_token)

    @property
    def cause(self) -> Cause:
        return ByRequest(self.handled_request)

    def kms_step(self, spec: KeySpec) -> KmsStep:
        # Disable first: a leaked key stops working before anything else happens.
        if self.version.kms_key_id is None:
            return NoKmsCall()
        return DisableVersion(self.version)

    def changes(
        self,
        versions: Sequence[KeyVersion],
        spec: KeySpec,
        now: datetime,
        kms_key_id: str | None,
    ) -> list[RowChange]:
        return [
            Change(
                self.version.id,
                KeyEventType.COMPROMISED,
                KeyStatus.COMPROMISED,
                {"can_rollback": False, "rollback_expires_at": None},
                {**self.handled_request.details(), "reason": self.reason},
            )
        ]

    def notices(self, spec: KeySpec) -> list[Notice]:
        return [
            warn(
                "KeyCompromised",
                f"version {self.version.version} disabled and marked COMPROMISED: {self.reason}",
            )
        ]
