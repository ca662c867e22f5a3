"""Applies an operation's outcome to the resource: status patch and Events."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import kopf

from keyledger.errors import KeyledgerError
from keyledger.key_metrics import forget_key, observe_key
from keyledger.lifecycle.conditions import READY, Condition, merge_conditions
from keyledger.operations.outcome import Outcome

# Where a status change goes: kopf's patch in handlers; a direct merge patch in the
# schedule task, which lives as long as the key and so has no per-pass kopf patch.
StatusWriter = Callable[[dict[str, Any]], None]


def status_changes(outcome: Outcome, body: kopf.Body) -> dict[str, Any]:
    """The status fields `outcome` changes, as a merge patch; empty when it changes
    nothing, so that an unchanged key costs no API write."""
    if not outcome.status and not outcome.conditions:
        return {}  # the operation had nothing to say about the status
    wanted: dict[str, Any] = dict(outcome.status)
    wanted["conditions"] = _conditions(body, outcome.conditions)
    wanted["observedGeneration"] = body.metadata.get("generation")
    return {name: value for name, value in wanted.items() if body.status.get(name) != value}


def write_outcome(outcome: Outcome, body: kopf.Body, write: StatusWriter) -> dict[str, Any]:
    """The one way status is written, from handlers and the schedule task alike:
    only what changed, then the outcome's events. Returns what was written."""
    changes = status_changes(outcome, body)
    if changes:
        write(changes)
    post_events(outcome, body)
    return changes


def failure_outcome(error: KeyledgerError) -> Outcome:
    """Ready=False with the error's constant reason and its (sanitized) message;
    nothing at all for a quiet error (the last word on the key stands)."""
    outcome = Outcome()
    if error.quiet:
        return outcome
    outcome.conditions.append(Condition(READY, False, error.reason, error.message))
    outcome.warn(error.reason, error.message)
    return outcome


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


def _conditions(body: kopf.Body, updates: Iterable[Condition]) -> list[dict[str, Any]]:
    return merge_conditions(
        body.status.get("conditions"),
        updates,
        generation=body.metadata.get("generation"),
        now=datetime.now(UTC),
    )
