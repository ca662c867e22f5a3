"""Making the previous version primary again, and closing that possibility."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from keyledger.domain import KeyEventType, KeyStatus
from keyledger.lifecycle.actions.base import (
    ByOperator,
    ByRequest,
    Cause,
    Change,
    HandledRequest,
    KmsStep,
    LedgerOnly,
    MakePrimary,
    Notice,
    RequestKind,
    RowChange,
    note,
)
from keyledger.lifecycle.spec import KeySpec
from keyledger.lifecycle.versions import KeyVersion


@dataclass(frozen=True)
class Rollback:
    current: KeyVersion
    target: KeyVersion
    request_token: str

    @property
    def handled_request(self) -> HandledRequest:
        return HandledRequest(RequestKind.ROLLBACK, self.request_token)

    @property
    def cause(self) -> Cause:
        return ByRequest(self.handled_request)

    def kms_step(self, spec: KeySpec) -> KmsStep:
        return MakePrimary(self.target)

    def changes(
        self,
        versions: Sequence[KeyVersion],
        spec: KeySpec,
        now: datetime,
        kms_key_id: str | None,
    ) -> list[RowChange]:
        details = self.handled_request.details()
        # The old primary leaves ACTIVE first: one ACTIVE version at every moment.
        return [
            Change(
                self.current.id,
                KeyEventType.ROLLED_BACK,
                KeyStatus.INACTIVE,
                {},
                {**details, "rolled_back_to": self.target.version},
            ),
            Change(
                self.target.id,
                KeyEventType.ROLLED_BACK,
                KeyStatus.ACTIVE,
                {"activated_at": now, "can_rollback": False, "rollback_expires_at": None},
                {**details, "rolled_back_from": self.current.version},
            ),
        ]

    def notices(self, spec: KeySpec) -> list[Notice]:
        return [
            note(
                "RolledBack",
                f"version {self.target.version} is primary again; "
                f"version {self.current.version} is INACTIVE",
            )
        ]


@dataclass(frozen=True)
class CloseRollbackWindow(LedgerOnly):
    """The rollback window of a ROTATED version ended: it stays decryptable only."""

    version: KeyVersion

    @property
    def cause(self) -> Cause:
        return ByOperator()

    def changes(
        self,
        versions: Sequence[KeyVersion],
        spec: KeySpec,
        now: datetime,
        kms_key_id: str | None,
    ) -> list[RowChange]:
        return [
            Change(
                self.version.id, KeyEventType.ROLLBACK_WINDOW_CLOSED, None, {"can_rollback": False}
            )
        ]

    def notices(self, spec: KeySpec) -> list[Notice]:
        return [
            note(
                "RollbackWindowClosed",
                f"version {self.version.version} can no longer be made primary",
            )
        ]
