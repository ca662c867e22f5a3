"""A provider's Ready condition, from a real connectivity and permission check."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from keyledger.errors import KeyledgerError
from keyledger.lifecycle.conditions import READY, Condition
from keyledger.lifecycle.spec import ProviderKind
from keyledger.operations.backends import BackendCache
from keyledger.operations.keys import KeyOperations
from keyledger.operations.outcome import Outcome
from keyledger.operations.providers import ProviderView
from keyledger.providers.base import KeyBackend
from keyledger.providers.local.keystore import DEV_ONLY_NOTICE


class _Resource(Protocol):
    @property
    def metadata(self) -> Any: ...

    @property
    def spec(self) -> Mapping[str, Any]: ...

    @property
    def status(self) -> Mapping[str, Any]: ...


def check_provider(
    kind: ProviderKind, body: _Resource, backends: BackendCache, keys: KeyOperations
) -> Outcome:
    """Ready from a real check; then enforce deletion windows the KMS does not keep itself."""
    outcome = Outcome()
    was_ready = any(
        c.get("type") == READY and c.get("status") == "True"
        for c in body.status.get("conditions") or ()
    )
    try:
        view = ProviderView.from_resource(
            kind, body.metadata.namespace, body.metadata.name, body.spec, body.status
        )
        backend = backends.open(view)
        backend.check()
    except KeyledgerError as error:
        outcome.conditions.append(Condition(READY, False, error.reason, error.message))
        if was_ready or not body.status.get("conditions"):
            outcome.warn(error.reason, error.message)
        return outcome
    message = f"{view.backend} backend reachable and usable"
    if view.backend == "local":
        message = f"{message}; {DEV_ONLY_NOTICE}"
        if not was_ready:
            outcome.warn("DevOnlyBackend", DEV_ONLY_NOTICE)
    outcome.status["backend"] = view.backend
    outcome.conditions.append(Condition(READY, True, "Checked", message))
    _destroy_due(backend, view, keys, outcome)
    return outcome


def _destroy_due(
    backend: KeyBackend, view: ProviderView, keys: KeyOperations, outcome: Outcome
) -> None:
    try:
        destroyed = backend.destroy_due(datetime.now(UTC))
    except KeyledgerError as error:
        outcome.warn("DeletionWindowNotEnforced", error.message)
        return
    if destroyed:
        keys.record_destroyed(destroyed, view.label)
        outcome.note(
            "DeletionWindowEnforced",
            f"destroyed {len(destroyed)} key version(s) whose deletion window ended",
        )
