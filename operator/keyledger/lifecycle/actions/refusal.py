"""A request that cannot be honoured: audited and told, never retried."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from keyledger.domain import KeyEventType
from keyledger.lifecycle.actions.base import (
    ByRequest,
    Cause,
    Change,
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
class RefuseRequest:
    kind: RequestKind
    request_token: str
    version: KeyVersion
    reason: str
    message: str

    @property
    def handled_request(self) -> HandledRequest:
        return HandledRequest(self.kind, self.request_token)

    @property
    def cause(self) -> Cause:
        return ByRequest(self.handled_request)

    def kms_step(self, spec: KeySpec) -> KmsStep:
        return NoKmsCall()

    def changes(
        self,
        versions: Sequence[KeyVersion],
        spec: KeySpec,
        now: datetime,
        kms_key_id: str | None,
    ) -> list[RowChange]:
        details = {**self.handled_request.details(), "reason": self.reason}
        return [
            Change(
                self.version.id,
                KeyEventType.REQUEST_REFUSED,
                None,
                {},
                {**details, "message": self.message},
            )
        ]

    def notices(self, spec: KeySpec) -> list[Notice]:
        return [warn(self.reason, f"{self.kind.value} request refused: {self.message}")]
