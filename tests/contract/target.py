"""What a backend module hands the contract suite."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from keyledger.providers.base import KeyBackend


@dataclass
class ContractTarget:
    backend: KeyBackend
    # A backend for the same server with wrong credentials (None: the backend has none).
    with_wrong_credentials: Callable[[], KeyBackend] | None = None
    # The credential values used by with_wrong_credentials, which must never show in errors.
    wrong_secrets: tuple[str, ...] = ()
    # A backend pointed at an address where nothing listens.
    unreachable: Callable[[], KeyBackend] | None = None
    # The ref the KMS itself treats as current (alias target, primary version), when it has one.
    primary_ref: Callable[[str], str] | None = None
    # keyledger keeps the deletion schedule and destroys due versions itself (destroy_due);
    # False where the KMS destroys scheduled keys on its own.
    keeps_deletion_schedule: bool = False
    notes: list[str] = field(default_factory=list)
