"""Applies an operation's outcome to the resource: status patch and Events."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import kopf

from keyledger.errors import KeyledgerError
from keyledger.key_metrics import forget_key, observe_key
from keyledger.lifecycle.conditions import READY, Condition, merge_conditions
from keyledger.operations.outcome import Outcome


def status_patch(outcome: Outcome, body: kopf.Body) -> dict[str, Any]:
    """The merge patch for `status`: the outcome's fields and its conditions merged in."""
    status: dict[str, Any] = dict(outcome.status)
    status["conditions"] = _conditions(body, outcome.conditions)
    status["observedGeneration"] = body.metadata.get("generation")
    return status


def changes_status(patch: dict[str, Any], body: kopf.Body) -> bool:
    """Whether merging `patch` would change the status (an unchanged one is not sent)."""
    return any(body.status.get(field) != value for field, value in patch.items())


def apply_outcome(outcome: Outcome, body: kopf.Body, patch: kopf.Patch) -> None:
    patch.status.update(status_patch(outcome, body))
    post_events(outcome, body)


def observe_key_status(body: kopf.Body, patched: dict[str, Any]) -> None:
    """The key's gauges, from its status as this patch leaves it."""
    if body.metadata.get("deletionTimestamp"):
        return  # being deleted: its gauges are about to go; a late pass must not revive them
    observe_key(
        body.metadata.namespace or "",
        body.metadata.name or "",
        str(body.spec.get("tenant", "")),
        {**body.status, **patched},
    )


def forget_key_status(body: kopf.Body) -> None:
    forget_key(
        body.metadata.namespace or "", body.metadata.name or "", str(body.spec.get("tenant", ""))
    )


def post_events(outcome: Outcome, body: kopf.Body) -> None:
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def report_failure(error: KeyledgerError, body: kopf.Body, patch: kopf.Patch) -> None:
    """Ready=False with the error's constant reason and its (sanitized) message."""
    condition = Condition(READY, False, error.reason, error.message)
    patch.status["conditions"] = _conditions(body, [condition])
    patch.status["observedGeneration"] = body.metadata.get("generation")
    kopf.event(body, type="Warning", reason=error.reason, message=error.message)


def _conditions(body: kopf.Body, updates: Iterable[Condition]) -> list[dict[str, Any]]:
    return merge_conditions(
        body.status.get("conditions"),
        updates,
        generation=body.metadata.get("generation"),
        now=datetime.now(UTC),
    )
