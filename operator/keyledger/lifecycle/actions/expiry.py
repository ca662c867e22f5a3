"""A version whose expiry time came: no new encryption with it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from keyledger.domain import KeyEventType, KeyStatus
from keyledger.lifecycle.actions.base import (
    ByOperator,
    Cause,
    Change,
    LedgerOnly,
    Notice,
    RowChange,
    warn,
)
from keyledger.lifecycle.spec import KeySpec
from keyledger.lifecycle.versions import KeyVersion


@dataclass(frozen=True)
class Expire(LedgerOnly):
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
                self.version.id, KeyEventType.EXPIRED, KeyStatus.EXPIRED, {"can_rollback": False}
            )
        ]

    def notices(self, spec: KeySpec) -> list[Notice]:
        return [warn("KeyExpired", f"version {self.version.version} expired")]
