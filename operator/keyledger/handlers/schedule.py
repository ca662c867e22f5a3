"""One sleeping task per EncryptionKey: scheduled transitions and drift checks.

The task sleeps until the next moment in the key's status (rotation, expiry
warning, expiry, rollback window close) or its next drift check, whichever is
first. Idle keys cost no database or KMS calls besides their drift checks,
which are spread at random over the interval.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from keyledger.api import ENCRYPTION_KEYS, GROUP, VERSION
from keyledger.errors import KeyledgerError
from keyledger.handlers.errors import retry_delay
from keyledger.handlers.keys_common import key_resource, last_drift, provider_for, served
from keyledger.handlers.reporting import changes_status, post_events, status_patch
from keyledger.kube import patch_status
from keyledger.lifecycle.wakeups import next_wakeup, overdue
from keyledger.operations.outcome import Outcome
from keyledger.runtime import Runtime

# The longest nap: spec and status changes are noticed within this, without I/O.
POLL = timedelta(seconds=5)


def _run_pass(
    runtime: Runtime, body: kopf.Body, indexes: dict[str, Any], time_due: bool, drift_due: bool
) -> Outcome:
    """Scheduled transitions first (when due), then the drift check (when due)."""
    key = key_resource(body)
    provider = provider_for(key, indexes)
    backend = runtime.backends.open(provider)
    correlation_id = str(uuid.uuid4())
    previous = last_drift(body)
    outcome = Outcome()
    if time_due:
        outcome = runtime.keys.reconcile(key, backend, provider.label, correlation_id, previous)
    if drift_due:
        checked = runtime.keys.check_drift(
            key, backend, provider.label, bool(previous and previous.drifted), correlation_id
        )
        checked.events[:0] = outcome.events
        outcome = checked
    return outcome


@kopf.daemon(GROUP, VERSION, ENCRYPTION_KEYS, when=served, cancellation_timeout=10)
async def keep_key_schedule(
    body: kopf.Body, stopped: Any, memo: kopf.Memo, logger: kopf.Logger, **indexes: Any
) -> None:
    runtime: Runtime = memo.runtime
    interval = runtime.settings.drift_interval
    jitter = random.Random()  # noqa: S311  # spreading load, not security
    next_drift = datetime.now(UTC) + interval * jitter.random()
    last_pass = datetime.now(UTC)
    failures = 0
    while not stopped:
        now = datetime.now(UTC)
        try:
            spec = key_resource(body).spec
        except KeyledgerError:
            await stopped.wait(POLL.total_seconds())
            continue
        wake = min(filter(None, [now + POLL, next_drift, next_wakeup(spec, body.status, now)]))
        await stopped.wait(max((wake - now).total_seconds(), 0.0))
        if stopped:
            break
        now = datetime.now(UTC)
        drift_due = now >= next_drift
        time_due = overdue(spec, body.status, last_pass, now)
        if not drift_due and not time_due:
            continue
        try:
            outcome = await asyncio.to_thread(
                _run_pass, runtime, body, indexes, time_due, drift_due
            )
            patch = status_patch(outcome, body)
            if outcome.conditions and changes_status(patch, body):
                await asyncio.to_thread(
                    patch_status,
                    ENCRYPTION_KEYS,
                    body.metadata.namespace or "",
                    body.metadata.name or "",
                    patch,
                )
            post_events(outcome, body)
            failures = 0
            last_pass = now
            if drift_due:
                next_drift = now + interval * jitter.uniform(0.9, 1.1)
        except KeyledgerError as error:
            logger.warning("scheduled pass failed (%s): %s", error.reason, error.message)
            failures += 1
            await stopped.wait(retry_delay(failures))
        except Exception:
            logger.exception("scheduled pass failed unexpectedly")
            failures += 1
            await stopped.wait(retry_delay(failures))
