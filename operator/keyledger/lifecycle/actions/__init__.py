"""Lifecycle actions: each one class that says what it asks of the KMS, which
ledger rows it changes and what the user is told (see `base`).

`Action` is the closed set the planner returns. A class added here must define
every part of `LifecycleAction`, or mypy rejects the executor's calls on the
union; a new kind of KMS step must be handled by the executor's exhaustive
`match`, or mypy rejects its `assert_never`.
"""

from keyledger.lifecycle.actions.base import (
    ByCreator,
    ByOperator,
    ByRequest,
    BySpec,
    ByVersionCreator,
    Cause,
    Change,
    DisableVersion,
    HandledRequest,
    KmsStep,
    LifecycleAction,
    MakePrimary,
    NewVersion,
    NoKmsCall,
    Notice,
    ProvideVersion,
    RequestKind,
    RowChange,
    Trigger,
    VerifyAdoptable,
)
from keyledger.lifecycle.actions.compromise import Compromise
from keyledger.lifecycle.actions.desired_state import Deactivate, Reactivate
from keyledger.lifecycle.actions.expiry import Expire
from keyledger.lifecycle.actions.refusal import RefuseRequest
from keyledger.lifecycle.actions.rollback import CloseRollbackWindow, Rollback
from keyledger.lifecycle.actions.rotation import CreateVersion, FinishPending, adopts_existing_key

Action = (
    CreateVersion
    | FinishPending
    | Rollback
    | RefuseRequest
    | Compromise
    | Expire
    | CloseRollbackWindow
    | Deactivate
    | Reactivate
)

__all__ = [
    "Action",
    "ByCreator",
    "ByOperator",
    "ByRequest",
    "BySpec",
    "ByVersionCreator",
    "Cause",
    "Change",
    "CloseRollbackWindow",
    "Compromise",
    "CreateVersion",
    "Deactivate",
    "DisableVersion",
    "Expire",
    "FinishPending",
    "HandledRequest",
    "KmsStep",
    "LifecycleAction",
    "MakePrimary",
    "NewVersion",
    "NoKmsCall",
    "Notice",
    "ProvideVersion",
    "Reactivate",
    "RefuseRequest",
    "RequestKind",
    "Rollback",
    "RowChange",
    "Trigger",
    "VerifyAdoptable",
    "adopts_existing_key",
]
