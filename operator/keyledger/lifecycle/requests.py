"""Annotation requests (`keyledger.io/*-requested-at`) and which are still to do."""

from __future__ import annotations

from collections.abc import Mapping, Set

from keyledger.api import (
    COMPROMISE_REASON,
    COMPROMISED_REQUESTED_AT,
    PAUSED,
    ROLLBACK_REQUESTED_AT,
    ROTATE_REQUESTED_AT,
)
from keyledger.lifecycle.plan import RequestKind, Requests

ANNOTATIONS = {
    RequestKind.ROTATE: ROTATE_REQUESTED_AT,
    RequestKind.ROLLBACK: ROLLBACK_REQUESTED_AT,
    RequestKind.COMPROMISE: COMPROMISED_REQUESTED_AT,
}


def pending_requests(
    annotations: Mapping[str, str], handled: Mapping[RequestKind, Set[str]]
) -> Requests:
    """The requests whose token the ledger has not recorded yet.

    The annotation's value is the token: re-applying the same YAML repeats the
    token and so never repeats the action.
    """
    tokens: dict[RequestKind, str | None] = {}
    for kind, annotation in ANNOTATIONS.items():
        token = (annotations.get(annotation) or "").strip()
        tokens[kind] = token if token and token not in handled.get(kind, ()) else None
    return Requests(
        rotate=tokens[RequestKind.ROTATE],
        rollback=tokens[RequestKind.ROLLBACK],
        compromise=tokens[RequestKind.COMPROMISE],
        compromise_reason=annotations.get(COMPROMISE_REASON),
    )


def is_paused(annotations: Mapping[str, str]) -> bool:
    """`keyledger.io/paused: "true"`: scheduled and requested changes wait; requests
    made meanwhile are carried out once it is removed."""
    return (annotations.get(PAUSED) or "").strip().lower() == "true"
