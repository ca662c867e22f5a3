"""`spec.state`: the current version switched between ACTIVE and INACTIVE."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from keyledger.domain import KeyEventType, KeyStatus
from keyledger.lifecycle.actions.base import (
    BySpec,
    Cause,
    Change,
    LedgerOnly,
    Notice,
    RowChange,
    note,
)
from keyledger.lifecycle.spec import KeySpec
from keyledger.lifecycle.versions import KeyVersion


@dataclass(frozen=True)
class Deactivate(LedgerOnly):
    version: KeyVersion

    @property
    def cause(self) -> Cause:
        return BySpec()

    def changes(
        self,
        versions: Sequence[KeyVersion],
        spec: KeySpec,
        now: datetime,
        kms_key_id: str | None,
    ) -> list[RowChange]:
        return [Change(self.version.id, KeyEventType.DISABLED, KeyStatus.INACTIVE)]

    def notices(self, spec: KeySpec) -> list[Notice]:
        return [note("Deactivated", f"version {self.version.version} is INACTIVE (spec.state)")]


@dataclass(frozen=True)
class Reactivate(LedgerOnly):
    version: KeyVersion

    @property
    def cause(self) -> Cause:
        return BySpec()

    def changes(
        self,
        versions: Sequence[KeyVersion],
        spec: KeySpec,
        now: datetime,
        kms_key_id: str | None,
    ) -> list[RowChange]:
        return [Change(self.version.id, KeyEventType.ENABLED, KeyStatus.ACTIVE)]

    def notices(self, spec: KeySpec) -> list[Notice]:
        return [note("Reactivated", f"version {self.version.version} is ACTIVE again")]
