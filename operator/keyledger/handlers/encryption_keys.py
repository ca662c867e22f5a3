"""EncryptionKey: one idempotent reconcile for create/resume/update; deletion policy."""

from __future__ import annotations

import time
import uuid
from typing import Any

import kopf

from keyledger.api import ENCRYPTION_KEYS, GROUP, VERSION
from keyledger.board import UNKNOWN
from keyledger.errors import InvalidSpec, KeyledgerError
from keyledger.handlers.errors import UNEXPECTED_ERROR_BACKOFF, to_kopf_error
from keyledger.handlers.keys_common import (
    admissible_provider,
    key_resource,
    last_drift,
    provider_for,
)
from keyledger.handlers.reporting import (
    failure_outcome,
    forget_key_status,
    observe_key_status,
    post_events,
    write_outcome,
)
from keyledger.handlers.schedule import publish_key
from keyledger.metrics import observe_pass
from keyledger.runtime import Runtime


# No field filter: spec changes and the keyledger.io/*-requested-at annotations
# both arrive here; kopf leaves out its own annotations and status.
@kopf.on.resume(GROUP, VERSION, ENCRYPTION_KEYS, backoff=UNEXPECTED_ERROR_BACKOFF)
@kopf.on.create(GROUP, VERSION, ENCRYPTION_KEYS, backoff=UNEXPECTED_ERROR_BACKOFF)
@kopf.on.update(GROUP, VERSION, ENCRYPTION_KEYS, backoff=UNEXPECTED_ERROR_BACKOFF)
def reconcile_encryption_key(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: kopf.Logger,
    retry: int,
    **indexes: Any,
) -> None:
    runtime: Runtime = memo.runtime
    read_at = time.monotonic()
    correlation_id = str(uuid.uuid4())
    logger.info("reconciling, correlation id %s", correlation_id)
    try:
        with observe_pass("reconcile"):
            key = key_resource(body)
            provider = admissible_provider(key, indexes, runtime.settings.tenant_binding)
            outcome = runtime.keys.reconcile(
                key,
                runtime.backends.open(provider),
                provider.label,
                correlation_id,
                last_drift(body),
            )
    except KeyledgerError as error:
        written = write_outcome(failure_outcome(error), body, patch.status.update)
        observe_key_status(body, written)
        # On the board all the same: its passes retry it until a handler succeeds.
        publish_key(runtime.board, body, indexes, written, UNKNOWN, read_at)
        raise to_kopf_error(error, retry) from error
    written = write_outcome(outcome, body, patch.status.update)
    observe_key_status(body, written)
    publish_key(runtime.board, body, indexes, written, outcome.next_due, read_at)


@kopf.on.delete(GROUP, VERSION, ENCRYPTION_KEYS, backoff=UNEXPECTED_ERROR_BACKOFF)
def retire_encryption_key(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, retry: int, **indexes: Any
) -> None:
    runtime: Runtime = memo.runtime
    runtime.board.forget(body.metadata.uid or "")  # this handler applies the policy
    try:
        key = key_resource(body)
    except InvalidSpec as error:
        logger.warning("spec unreadable, nothing to retire: %s", error.message)
        return
    try:
        backend = runtime.backends.open(provider_for(key, indexes))
    except KeyledgerError:
        backend = None  # Retain needs no provider; the other policies wait for one.
    try:
        outcome = runtime.keys.retire(key, backend, str(uuid.uuid4()))
    except KeyledgerError as error:
        kopf.event(body, type="Warning", reason=error.reason, message=error.message)
        raise to_kopf_error(error, retry) from error
    post_events(outcome, body)
    forget_key_status(body)
