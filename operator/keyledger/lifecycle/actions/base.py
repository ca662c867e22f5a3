"""The vocabulary every lifecycle action is written in.

An action says three things and nothing else does: what it needs from the KMS
(a `KmsStep`, data the executor interprets), which ledger rows it changes
(`RowChange`s committed in one transaction after the KMS step), and what the
user is told (`Notice`s that become Kubernetes events). Actions are pure: the
planner returns them, the property tests apply them in memory, and the
executor carries them out.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Protocol

from keyledger.domain import KeyEventType, KeyStatus
from keyledger.lifecycle.spec import KeySpec
from keyledger.lifecycle.versions import KeyVersion


class Trigger(StrEnum):
    """Why a new version is made; recorded in the audit row."""

    CREATE = "create"
    SCHEDULE = "schedule"
    BEFORE_EXPIRY = "before-expiry"
    REQUEST = "request"
    REPLACE_COMPROMISED = "replace-compromised"
    REPLACE_EXPIRED = "replace-expired"


class RequestKind(StrEnum):
    ROTATE = "rotate"
    ROLLBACK = "rollback"
    COMPROMISE = "compromise"


@dataclass(frozen=True)
class HandledRequest:
    """An annotation request an action settles (carried out or refused): its token
    is recorded with the action's ledger step, so it is never acted on twice."""

    kind: RequestKind
    token: str

    def details(self) -> dict[str, Any]:
        return {"request": self.kind.value, "token": self.token}


def request_details(request: HandledRequest | None) -> dict[str, Any]:
    return request.details() if request is not None else {}


# -- what the user is told -----------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """A Kubernetes event about the key: Normal for progress, Warning for trouble."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def note(reason: str, message: str) -> Notice:
    return Notice("Normal", reason, message)


def warn(reason: str, message: str) -> Notice:
    return Notice("Warning", reason, message)


# -- which ledger rows change ----------------------------------------------------------


@dataclass(frozen=True)
class NewVersion:
    """Insert a PENDING row."""

    version: int
    parent_id: uuid.UUID | None
    details: dict[str, Any]


@dataclass(frozen=True)
class Change:
    """Update one version's row (and write its audit row)."""

    version_id: uuid.UUID
    event: KeyEventType
    to_status: KeyStatus | None = None  # None: status unchanged
    fields: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


RowChange = NewVersion | Change


# -- what is asked of the KMS ----------------------------------------------------------


@dataclass(frozen=True)
class NoKmsCall:
    """A ledger-only step."""


@dataclass(frozen=True)
class VerifyAdoptable:
    """Prove that `spec.adopt.kmsKeyId` can be taken over, before any row is written."""

    ref: str


@dataclass(frozen=True)
class ProvideVersion:
    """Make (or, with `adopt_ref`, take over) the KMS key of a PENDING version and make
    it primary. Idempotent: the version's marker finds a key made before a crash."""

    version: KeyVersion
    adopt_ref: str | None = None


@dataclass(frozen=True)
class MakePrimary:
    """Point the KMS's primary (alias, primary version) back at an existing version."""

    version: KeyVersion


@dataclass(frozen=True)
class DisableVersion:
    """Disable a version's KMS key unless it is disabled already."""

    version: KeyVersion


KmsStep = NoKmsCall | VerifyAdoptable | ProvideVersion | MakePrimary | DisableVersion


# -- on whose behalf -------------------------------------------------------------------


@dataclass(frozen=True)
class ByOperator:
    """Time did it: a schedule, an expiry, a window closing, an automatic replacement."""


@dataclass(frozen=True)
class ByRequest:
    """The user who set the request annotation with this token."""

    request: HandledRequest


@dataclass(frozen=True)
class ByCreator:
    """The user who created the EncryptionKey."""


@dataclass(frozen=True)
class BySpec:
    """The user who last changed the spec (e.g. spec.state)."""


@dataclass(frozen=True)
class ByVersionCreator:
    """Whoever caused the version's PENDING row: finishing it is their act too."""

    version: KeyVersion


Cause = ByOperator | ByRequest | ByCreator | BySpec | ByVersionCreator


class LedgerOnly:
    """For actions that ask nothing of the KMS and settle no request: what time and
    spec.state do to the ledger."""

    @property
    def handled_request(self) -> HandledRequest | None:
        return None

    def kms_step(self, spec: KeySpec) -> KmsStep:
        return NoKmsCall()


class LifecycleAction(Protocol):
    """What every action defines; `Action` (in the package) is the closed union of them."""

    @property
    def handled_request(self) -> HandledRequest | None: ...

    @property
    def cause(self) -> Cause: ...

    def kms_step(self, spec: KeySpec) -> KmsStep: ...

    def changes(
        self,
        versions: Sequence[KeyVersion],
        spec: KeySpec,
        now: datetime,
        kms_key_id: str | None,
    ) -> list[RowChange]: ...

    def notices(self, spec: KeySpec) -> list[Notice]: ...
