"""One sleeping task per EncryptionKey: scheduled transitions and drift checks.

The task sleeps until the key's next scheduled moment (rotation, expiry
warning, expiry, rollback window close; published by whoever last built the
key's status) or its next drift check, whichever is first. Idle keys cost no
database or KMS calls besides their drift checks, which are spread at random
over the interval.
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
from keyledger.handlers.keys_common import admissible_provider, key_resource, last_drift
from keyledger.handlers.reporting import observe_key_status, write_outcome
from keyledger.kube import patch_status
from keyledger.metrics import observe_pass
from keyledger.operations.outcome import Outcome
from keyledger.runtime import Runtime

# With nothing published (no handler has built the status yet) the task builds it
# itself after this long; it also bounds how stale a missed publication can get.
FALLBACK = timedelta(seconds=60)


@observe_pass("scheduled")
def _run_pass(
    runtime: Runtime, body: kopf.Body, indexes: dict[str, Any], time_due: bool, drift_due: bool
) -> Outcome:
    """Scheduled transitions first (when due), then the drift check (when due)."""
    key = key_resource(body)
    provider = admissible_provider(key, indexes, runtime.settings.tenant_binding)
    backend = runtime.backends.open(provider)
    correlation_id = str(uuid.uuid4())
    previous = last_drift(body)
    outcome = Outcome()
    if time_due:
        outcome = runtime.keys.reconcile(key, backend, provider.label, correlation_id, previous)
    if drift_due:
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


async def _apply(runtime: Runtime, body: kopf.Body, outcome: Outcome) -> None:
    def write(changes: dict[str, Any]) -> None:
        namespace, name = body.metadata.namespace or "", body.metadata.name or ""
        patch_status(ENCRYPTION_KEYS, namespace, name, changes)

    changes = await asyncio.to_thread(write_outcome, outcome, body, write)
    if changes:
        observe_key_status(body, changes)
    if outcome.scheduled:
        runtime.board.publish(body.metadata.uid or "", outcome.next_due)


@kopf.daemon(GROUP, VERSION, ENCRYPTION_KEYS, cancellation_timeout=10)
async def keep_key_schedule(
    body: kopf.Body, stopped: Any, memo: kopf.Memo, logger: kopf.Logger, **indexes: Any
) -> None:
    runtime: Runtime = memo.runtime
    uid = body.metadata.uid or ""
    interval = runtime.settings.drift_interval
    jitter = random.Random()  # noqa: S311  # spreading load, not security
    started = datetime.now(UTC)
    next_drift = started + interval * jitter.random()
    failures = 0
    runtime.board.attach(uid)
    stop: asyncio.Future[object] = asyncio.ensure_future(stopped.wait())
    try:
        while not stopped:
            now = datetime.now(UTC)
            known, due = runtime.board.due(uid)
            wake = min(m for m in (due, next_drift, now + FALLBACK) if m is not None)
            if not known:
                wake = min(wake, started + FALLBACK)
            await runtime.board.sleep(uid, (wake - now).total_seconds(), stop)
            if stopped:
                break
            now = datetime.now(UTC)
            known, due = runtime.board.due(uid)
            drift_due = now >= next_drift
            time_due = (due is not None and now >= due) or (not known and now >= wake)
            if not drift_due and not time_due:
                continue  # woken by a publication: plan the next sleep
            try:
                outcome = await asyncio.to_thread(
                    _run_pass, runtime, body, indexes, time_due, drift_due
                )
                await _apply(runtime, body, outcome)
                failures = 0
                if drift_due:
                    next_drift = now + interval * jitter.uniform(0.9, 1.1)
            except KeyledgerError as error:
                # kopf posts warnings as Events; a quiet error is only logged.
                log = logger.info if error.quiet else logger.warning
                log("scheduled pass failed (%s): %s", error.reason, error.message)
                failures += 1
                await runtime.board.sleep(uid, retry_delay(failures), stop)
            except Exception:
                logger.exception("scheduled pass failed unexpectedly")
                failures += 1
                await runtime.board.sleep(uid, retry_delay(failures), stop)
    finally:
        stop.cancel()
        runtime.board.detach(uid)
