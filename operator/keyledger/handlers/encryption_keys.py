"""EncryptionKey: one idempotent reconcile for create/resume/update; deletion policy."""

from __future__ import annotations

import uuid
from typing import Any

import kopf

from keyledger.api import ENCRYPTION_KEYS, GROUP, VERSION
from keyledger.errors import InvalidSpec, KeyledgerError
from keyledger.handlers.errors import UNEXPECTED_ERROR_BACKOFF, to_kopf_error
from keyledger.handlers.reporting import apply_outcome, report_failure
from keyledger.lifecycle.spec import KeySpec
from keyledger.operations.keys import KeyResource
from keyledger.operations.providers import ProviderView, resolve_provider
from keyledger.runtime import Runtime


def _key_resource(body: kopf.Body) -> KeyResource:
    return KeyResource(
        uid=body.metadata.uid or "",
        namespace=body.metadata.namespace or "",
        name=body.metadata.name or "",
        generation=body.metadata.get("generation"),
        spec=KeySpec.from_resource(body.metadata.name or "", body.spec),
    )


def _provider(key: KeyResource, indexes: dict[str, Any]) -> ProviderView:
    """Resolve against the provider indexes kopf passes as handler kwargs."""
    cluster: kopf.Index[str, ProviderView] = indexes["cluster_provider_index"]
    namespaced: kopf.Index[tuple[str, str], ProviderView] = indexes["key_provider_index"]
    return resolve_provider(
        key.spec.provider_ref,
        key_namespace=key.namespace,
        tenant=key.spec.tenant,
        cluster_providers={name: next(iter(store)) for name, store in cluster.items()},
        namespaced_providers={ref: next(iter(store)) for ref, store in namespaced.items()},
    )


@kopf.on.resume(GROUP, VERSION, ENCRYPTION_KEYS, backoff=UNEXPECTED_ERROR_BACKOFF)
@kopf.on.create(GROUP, VERSION, ENCRYPTION_KEYS, backoff=UNEXPECTED_ERROR_BACKOFF)
@kopf.on.update(GROUP, VERSION, ENCRYPTION_KEYS, field="spec", backoff=UNEXPECTED_ERROR_BACKOFF)
def reconcile_encryption_key(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: kopf.Logger,
    retry: int,
    **indexes: Any,
) -> None:
    runtime: Runtime = memo.runtime
    correlation_id = str(uuid.uuid4())
    logger.info("reconciling, correlation id %s", correlation_id)
    try:
        key = _key_resource(body)
        provider = _provider(key, indexes)
        outcome = runtime.keys.reconcile(
            key, runtime.backends.open(provider), provider.label, correlation_id
        )
    except KeyledgerError as error:
        report_failure(error, body, patch)
        raise to_kopf_error(error, retry) from error
    apply_outcome(outcome, body, patch)


@kopf.on.delete(GROUP, VERSION, ENCRYPTION_KEYS, backoff=UNEXPECTED_ERROR_BACKOFF)
def retire_encryption_key(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, retry: int, **indexes: Any
) -> None:
    runtime: Runtime = memo.runtime
    try:
        key = _key_resource(body)
    except InvalidSpec as error:
        logger.warning("spec unreadable, nothing to retire: %s", error.message)
        return
    try:
        provider = _provider(key, indexes)
        backend = runtime.backends.open(provider)
    except KeyledgerError:
        backend = None  # Retain needs no provider; the other policies wait for one.
    try:
        outcome = runtime.keys.retire(key, backend, str(uuid.uuid4()))
    except KeyledgerError as error:
        kopf.event(body, type="Warning", reason=error.reason, message=error.message)
        raise to_kopf_error(error, retry) from error
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
