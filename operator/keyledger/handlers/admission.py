"""Admission webhooks for EncryptionKeys, served by the operator when
KEYLEDGER_WEBHOOK_PORT is set.

- `requesters` (mutating) writes who asked for the key, its spec and each request
  into the `keyledger.io/requesters` annotation, from the admission request's
  user; whatever the writer put there is replaced.
- `rules` (validating) refuses what the schema and CEL cannot: a tenant the
  namespace is not bound to, a provider that does not exist or does not serve the
  tenant, contradictory durations, a deletion window or adoption reference the
  backend cannot take, a request that cannot be honoured.

Both fail closed (failurePolicy Fail): with the operator down, keys cannot be
changed unseen. Neither has side effects (sideEffects None), so dry runs work.
"""

from __future__ import annotations

from typing import Any

import kopf

from keyledger.admission.rules import (
    Refusal,
    missing_provider_warning,
    provider_refusal,
    request_refusal,
    spec_refusal,
    tenant_refusal,
)
from keyledger.api import (
    CLUSTER_KEY_PROVIDERS,
    ENCRYPTION_KEYS,
    GROUP,
    KEY_PROVIDERS,
    REQUESTERS,
    VERSION,
)
from keyledger.errors import KeyledgerError
from keyledger.kube import namespace_labels, read_custom_object
from keyledger.lifecycle.requesters import Requester, admitted_record
from keyledger.lifecycle.spec import KeySpec, ProviderKind
from keyledger.operations.providers import ProviderView
from keyledger.settings import get_settings

_WRITES: list[kopf.Operation] = ["CREATE", "UPDATE"]


@kopf.on.mutate(
    GROUP,
    VERSION,
    ENCRYPTION_KEYS,
    id="requesters",
    operations=_WRITES,
    side_effects=False,
    ignore_failures=False,
)
def record_requesters(
    body: kopf.Body, userinfo: kopf.UserInfo, patch: kopf.Patch, **kwargs: Any
) -> None:
    old: kopf.Body | None = kwargs.get("old")  # the stored object; None on create
    stored = (dict(old.spec), dict(old.metadata.annotations)) if old is not None else None
    incoming = (dict(body.spec), dict(body.metadata.annotations))
    record = admitted_record(stored, incoming, Requester.from_userinfo(dict(userinfo)))
    if body.metadata.annotations.get(REQUESTERS) != record:
        patch.metadata.setdefault("annotations", {})[REQUESTERS] = record


@kopf.on.validate(
    GROUP,
    VERSION,
    ENCRYPTION_KEYS,
    id="rules",
    operations=_WRITES,
    side_effects=False,
    ignore_failures=False,
)
def validate_encryption_key(body: kopf.Body, warnings: list[str], **kwargs: Any) -> None:
    refusal = _refusal(body, kwargs.get("old"), warnings)
    if refusal is not None:
        raise kopf.AdmissionError(f"{refusal.reason}: {refusal.message}", code=422)


def _refusal(body: kopf.Body, old: kopf.Body | None, warnings: list[str]) -> Refusal | None:
    old_annotations = dict(old.metadata.annotations) if old is not None else {}
    new_annotations = dict(body.metadata.annotations)
    requests = request_refusal(old_annotations, new_annotations, old.status if old else {})
    if requests is not None:
        return requests
    if old is not None and old.spec == body.spec:
        # Only what changed is judged: the operator's own writes (finalizers, its
        # annotations) must pass even on a key a later namespace relabel made invalid.
        return None
    namespace = body.metadata.namespace or ""
    try:
        spec = KeySpec.from_resource(body.metadata.name or "", body.spec)
    except KeyledgerError as error:
        return Refusal(error.reason, error.message)
    labels = namespace_labels(namespace)
    refusal = tenant_refusal(spec, namespace, labels, get_settings().tenant_binding)
    if refusal is not None:
        return refusal
    provider, where = _provider(spec, namespace)
    if provider is None:
        warnings.append(missing_provider_warning(where))
        return spec_refusal(spec, None)
    return provider_refusal(spec, labels, provider, where) or spec_refusal(spec, provider)


def _provider(spec: KeySpec, namespace: str) -> tuple[ProviderView | None, str]:
    ref = spec.provider_ref
    if ref.kind is ProviderKind.CLUSTER:
        found = read_custom_object(CLUSTER_KEY_PROVIDERS, None, ref.name)
        where = f"ClusterKeyProvider {ref.name!r}"
    else:
        found = read_custom_object(KEY_PROVIDERS, namespace, ref.name)
        where = f"KeyProvider {ref.name!r} in namespace {namespace!r}"
    if found is None:
        return None, where
    metadata = found.get("metadata") or {}
    try:
        view = ProviderView.from_resource(
            ref.kind,
            metadata.get("namespace"),
            ref.name,
            found.get("spec") or {},
            found.get("status") or {},
        )
    except KeyledgerError:
        return None, f"{where} (its spec names no single backend)"
    return view, where
