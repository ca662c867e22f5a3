"""The convergence floor: a kopf operator making the API writes keyledger makes for a
new key (the finalizer patch, then one status patch saying Ready), and nothing else:
no KMS, no ledger. Same framework, same settings, same ServiceAccount; run by
bench_convergence.py as `kopf run --standalone`."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import kopf

from keyledger.api import ENCRYPTION_KEYS, FINALIZER, GROUP, KOPF_ANNOTATION_PREFIX, VERSION


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=KOPF_ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.execution.max_workers = 8


@kopf.on.resume(GROUP, VERSION, ENCRYPTION_KEYS)
@kopf.on.create(GROUP, VERSION, ENCRYPTION_KEYS)
def make_ready(patch: kopf.Patch, body: kopf.Body, **_: Any) -> None:
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    patch.status["phase"] = "ACTIVE"
    patch.status["version"] = 1
    patch.status["observedGeneration"] = body.metadata.get("generation")
    patch.status["conditions"] = [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Floor",
            "message": "floor",
            "lastTransitionTime": now,
            "observedGeneration": body.metadata.get("generation"),
        }
    ]


@kopf.on.delete(GROUP, VERSION, ENCRYPTION_KEYS)
def forget(**_: Any) -> None:
    """Present so that kopf keeps a finalizer on every key, as keyledger does."""
