"""Status is written one way, by handlers and the schedule task alike: only the
fields an outcome changes, and nothing at all when it changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import kopf

from keyledger.errors import ProviderNotCheckedYet, ProviderNotReady
from keyledger.handlers.reporting import failure_outcome, status_changes, write_outcome
from keyledger.lifecycle.conditions import READY, Condition, merge_conditions
from keyledger.operations.outcome import Outcome


def _body(status: dict[str, Any]) -> kopf.Body:
    raw = {
        "metadata": {"name": "phi", "namespace": "t", "uid": "u", "generation": 3},
        "spec": {"tenant": "acme"},
        "status": status,
    }
    # kopf's RawMeta leaves out metadata.generation, which every real object has.
    return kopf.Body(cast(kopf.RawBody, raw))


def _ready(message: str) -> Outcome:
    outcome = Outcome(status={"phase": "ACTIVE", "version": 2})
    outcome.conditions.append(Condition(READY, True, "KeyActive", message))
    return outcome


def _written(outcome: Outcome, body: kopf.Body) -> list[dict[str, Any]]:
    writes: list[dict[str, Any]] = []
    write_outcome(outcome, body, writes.append)
    return writes


def test_an_outcome_that_changes_nothing_writes_nothing() -> None:
    conditions = merge_conditions(
        None, _ready("version 2 is ACTIVE").conditions, generation=3, now=datetime.now(UTC)
    )
    body = _body(
        {"phase": "ACTIVE", "version": 2, "conditions": conditions, "observedGeneration": 3}
    )
    assert _written(_ready("version 2 is ACTIVE"), body) == []
    assert _written(Outcome(), body) == []  # nothing to say: not even observedGeneration


def test_only_the_changed_fields_are_written() -> None:
    conditions = merge_conditions(
        None, _ready("version 2 is ACTIVE").conditions, generation=3, now=datetime.now(UTC)
    )
    body = _body(
        {"phase": "ACTIVE", "version": 1, "conditions": conditions, "observedGeneration": 3}
    )
    assert _written(_ready("version 2 is ACTIVE"), body) == [{"version": 2}]


def test_a_failure_writes_ready_false_with_its_reason() -> None:
    changes = status_changes(
        failure_outcome(ProviderNotReady("provider x is not Ready")), _body({})
    )
    assert changes["observedGeneration"] == 3
    [ready] = changes["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == (
        "Ready",
        "False",
        "ProviderNotReady",
    )


def test_a_provider_not_checked_yet_writes_nothing_and_posts_nothing() -> None:
    quiet = failure_outcome(ProviderNotCheckedYet("provider x has not been checked yet"))
    assert status_changes(quiet, _body({})) == {}
    assert quiet.events == []
