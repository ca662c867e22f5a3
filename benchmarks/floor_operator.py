"""The convergence floor: a kopf operator making the API writes keyledger makes for a
new key, and nothing else: no KMS, no ledger. The writes are the finalizer patch,
one status patch of the same shape keyledger writes (the version, its entry in
`versions`, five conditions) and the one Event keyledger posts (Activated). Same
framework, same settings, same ServiceAccount; run by bench_convergence.py as
`kopf run --standalone`."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import kopf

from keyledger.api import ENCRYPTION_KEYS, FINALIZER, GROUP, KOPF_ANNOTATION_PREFIX, VERSION

# What keyledger's status says of a new key, with messages of the same length.
CONDITIONS = (
    ("Ready", "True", "KeyActive", "version 1 is ACTIVE in KeyProvider floor/bench-local (local)"),
    ("Rotating", "False", "Idle", "no rotation in progress"),
    ("RollbackAvailable", "False", "NoPreviousVersion", "version 1 has no previous version"),
    ("Expiring", "False", "NoExpiry", "the current version does not expire"),
    ("Paused", "False", "Reconciling", "changes are made as spec and requests say"),
)


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
    generation = body.metadata.get("generation")
    version = {
        "version": 1,
        "phase": "ACTIVE",
        "keyId": str(uuid.uuid4()),
        "kmsKeyRef": f"local:floor/{uuid.uuid4()}",
        "activatedAt": now,
    }
    patch.status.update({key: value for key, value in version.items() if key != "version"})
    patch.status["version"] = 1
    patch.status["versions"] = [version]
    patch.status["conditions"] = [
        {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now,
            "observedGeneration": generation,
        }
        for kind, status, reason, message in CONDITIONS
    ]
    patch.status["observedGeneration"] = generation
    kopf.event(body, type="Normal", reason="Activated", message="version 1 created and ACTIVE")


@kopf.on.delete(GROUP, VERSION, ENCRYPTION_KEYS)
def forget(**_: Any) -> None:
    """Present so that kopf keeps a finalizer on every key, as keyledger does."""
