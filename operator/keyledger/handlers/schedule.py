"""Scheduled transitions and drift checks of every EncryptionKey, from one task.

The key's handlers publish it on the schedule board as they leave it (its body
with the status they wrote); the board's one task wakes at the earliest moment
any key falls due (a rotation, expiry warning, expiry, rollback window close,
published by whoever last built the key's status, or its next drift check) and
runs that key's pass here. Idle keys cost no database, KMS or API calls besides
their drift checks, which are spread at random over the interval.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

import kopf

from keyledger.api import ENCRYPTION_KEYS, KOPF_ANNOTATION_PREFIX
from keyledger.board import GONE, UNCHANGED, Due, Gone, ScheduleBoard, Unchanged, Unknown
from keyledger.errors import KeyledgerError
from keyledger.handlers.errors import retry_delay
from keyledger.handlers.keys_common import (
    PROVIDER_INDEXES,
    admissible_provider,
    key_resource,
    last_drift,
)
from keyledger.handlers.reporting import observe_key_status, write_outcome
from keyledger.kube import patch_status, read_custom_object
from keyledger.metrics import observe_pass
from keyledger.operations.outcome import Outcome
from keyledger.runtime import Runtime

KOPF_PREFIX = f"{KOPF_ANNOTATION_PREFIX}/"
# How long passes in flight get to finish when the operator stops.
STOP_TIMEOUT_S = 10.0


class ScheduledKey:
    """A key as its handler or its last pass left it, and the provider indexes to
    resolve it by.

    The body is kept as its JSON text: a pass reads it a few times an hour, and as
    text it takes a fifth of the memory its parsed dicts would, times every key."""

    __slots__ = ("_body", "indexes")

    def __init__(self, body: Mapping[str, Any], indexes: dict[str, Any]) -> None:
        self._body = b""
        self.indexes = indexes
        self.body = kopf.Body(cast(kopf.RawBody, body))

    @property
    def body(self) -> kopf.Body:
        return kopf.Body(cast(kopf.RawBody, json.loads(self._body)))

    @body.setter
    def body(self, body: kopf.Body) -> None:
        self._body = json.dumps(_slim(body), separators=(",", ":")).encode()


def publish_key(
    board: ScheduleBoard[ScheduledKey],
    body: kopf.Body,
    kwargs: Mapping[str, Any],
    written: Mapping[str, Any],
    due: datetime | Unknown | None,
    read_at: float,
) -> None:
    """A handler's last word on a key: the body it read, with the status it wrote
    (kopf applies the handler's patch after it returns), and the key's due moment."""
    raw = dict(body)
    raw["status"] = {**body.status, **written}
    indexes = {name: kwargs[name] for name in PROVIDER_INDEXES}
    board.publish(body.metadata.uid or "", ScheduledKey(raw, indexes), due, read_at)


def start_schedule(runtime: Runtime, memo: kopf.Memo) -> None:
    """Start the board's task (once; on the event loop)."""
    runtime.board.start(lambda uid, key, due: _run(runtime, memo, key, due), retry_delay)


@kopf.on.cleanup()
async def stop_schedule(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime | None = getattr(memo, "runtime", None)
    if runtime is not None:
        await runtime.board.stop(STOP_TIMEOUT_S)


def _slim(body: kopf.Body) -> dict[str, Any]:
    """The body without what no pass reads: managedFields and kopf's own annotations."""
    raw = dict(body)
    metadata = {k: v for k, v in body.metadata.items() if k != "managedFields"}
    metadata["annotations"] = {
        k: v for k, v in body.metadata.annotations.items() if not k.startswith(KOPF_PREFIX)
    }
    raw["metadata"] = metadata
    return raw


async def _run(
    runtime: Runtime, memo: kopf.Memo, key: ScheduledKey, due: Due
) -> datetime | Unchanged | Gone | None:
    body = key.body
    if due.reread:
        found = await asyncio.to_thread(
            read_custom_object, ENCRYPTION_KEYS, body.metadata.namespace, body.metadata.name or ""
        )
        if found is None or found.get("metadata", {}).get("uid") != body.metadata.uid:
            return GONE  # deleted (or replaced under its name) while the board held it
        key.body = body = kopf.Body(cast(kopf.RawBody, found))
        if body.metadata.deletion_timestamp:
            return GONE  # the delete handler applies the deletion policy
    try:
        outcome = await asyncio.to_thread(_run_pass, runtime, body, key.indexes, due)
        await _apply(key, body, outcome)
    except KeyledgerError as error:
        # Warnings become Events on the key; a quiet error is only logged.
        logger = _logger(memo, body)
        log = logger.info if error.quiet else logger.warning
        log("scheduled pass failed (%s): %s", error.reason, error.message)
        raise
    except Exception:
        _logger(memo, body).exception("scheduled pass failed unexpectedly")
        raise
    return outcome.next_due if outcome.scheduled else UNCHANGED


@observe_pass("scheduled")
def _run_pass(runtime: Runtime, body: kopf.Body, indexes: dict[str, Any], due: Due) -> Outcome:
    """Scheduled transitions first (when due), then the drift check (when due)."""
    key = key_resource(body)
    provider = admissible_provider(key, indexes, runtime.settings.tenant_binding)
    backend = runtime.backends.open(provider)
    correlation_id = str(uuid.uuid4())
    previous = last_drift(body)
    outcome = Outcome()
    if due.time:
        outcome = runtime.keys.reconcile(key, backend, provider.label, correlation_id, previous)
    if due.drift:
        checked = runtime.keys.check_drift(
            key,
            backend,
            provider.label,
            bool(previous and previous.drifted),
            correlation_id,
            shown={
                entry.get("version"): entry.get("lastUsedAt")
                for entry in body.status.get("versions") or ()
            },
        )
        if checked.scheduled:
            checked.events[:0] = outcome.events
            outcome = checked
    return outcome


async def _apply(key: ScheduledKey, body: kopf.Body, outcome: Outcome) -> None:
    written: list[dict[str, Any]] = []

    def write(changes: dict[str, Any]) -> None:
        namespace, name = body.metadata.namespace or "", body.metadata.name or ""
        written.append(patch_status(ENCRYPTION_KEYS, namespace, name, changes))

    changes = await asyncio.to_thread(write_outcome, outcome, body, write)
    if changes:
        # The key as the API server holds it after the patch: the next pass's base.
        key.body = kopf.Body(cast(kopf.RawBody, written[-1]))
        observe_key_status(body, changes)


def _logger(memo: kopf.Memo, body: kopf.Body) -> kopf.ObjectLogger:
    """The key's own logger: its warnings become Events on the key, as a handler's do."""
    return kopf.ObjectLogger(body=body, settings=memo.operator_settings)
