"""Annotation requests (`keyledger.io/*-requested-at`) and which are still to do."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Set
from dataclasses import dataclass

from keyledger.api import (
    COMPROMISE_REASON,
    COMPROMISED_REQUESTED_AT,
    PAUSED,
    ROLLBACK_REQUESTED_AT,
    ROTATE_REQUESTED_AT,
)
from keyledger.lifecycle.actions.base import RequestKind

ANNOTATIONS = {
    RequestKind.ROTATE: ROTATE_REQUESTED_AT,
    RequestKind.ROLLBACK: ROLLBACK_REQUESTED_AT,
    RequestKind.COMPROMISE: COMPROMISED_REQUESTED_AT,
}

# Tokens are recorded in an indexed ledger column; a longer annotation value is
# recorded by its digest, which is just as unique and never acted on twice.
MAX_TOKEN_LENGTH = 128


@dataclass(frozen=True)
class Requests:
    """Annotation requests not yet handled (tokens already in the ledger are dropped)."""

    rotate: str | None = None
    rollback: str | None = None
    compromise: str | None = None
    compromise_reason: str | None = None


def request_tokens(annotations: Mapping[str, str]) -> dict[RequestKind, str]:
    """The token each request annotation carries now (its value, trimmed)."""
    tokens: dict[RequestKind, str] = {}
    for kind, annotation in ANNOTATIONS.items():
        token = (annotations.get(annotation) or "").strip()
        if len(token) > MAX_TOKEN_LENGTH:
            token = "sha256:" + hashlib.sha256(token.encode()).hexdigest()
        if token:
            tokens[kind] = token
    return tokens


def pending_requests(
    annotations: Mapping[str, str], handled: Mapping[RequestKind, Set[str]]
) -> Requests:
    """The requests whose token the ledger has not recorded yet.

    The annotation's value is the token: re-applying the same YAML repeats the
    token and so never repeats the action.
    """
    tokens = {
        kind: token
        for kind, token in request_tokens(annotations).items()
        if token not in handled.get(kind, ())
    }
    return Requests(
        rotate=tokens.get(RequestKind.ROTATE),
        rollback=tokens.get(RequestKind.ROLLBACK),
        compromise=tokens.get(RequestKind.COMPROMISE),
        compromise_reason=annotations.get(COMPROMISE_REASON),
    )


def is_paused(annotations: Mapping[str, str]) -> bool:
    """`keyledger.io/paused: "true"`: scheduled and requested changes wait; requests
    made meanwhile are carried out once it is removed."""
    return (annotations.get(PAUSED) or "").strip().lower() == "true"
