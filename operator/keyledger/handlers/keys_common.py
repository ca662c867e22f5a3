"""Reading an EncryptionKey body and its provider, shared by handlers and the daemon."""

from __future__ import annotations

from typing import Any

import kopf

from keyledger.admission.rules import spec_refusal, tenant_refusal
from keyledger.domain import TenantBinding
from keyledger.errors import InvalidSpec
from keyledger.lifecycle.conditions import DRIFTED
from keyledger.lifecycle.requesters import spec_digest
from keyledger.lifecycle.spec import KeySpec
from keyledger.lifecycle.status import Drift
from keyledger.operations.providers import ProviderView, resolve_provider
from keyledger.operations.views import KeyResource

# The kopf indexes (handlers/providers.py) a key's provider is resolved against.
PROVIDER_INDEXES = ("cluster_provider_index", "key_provider_index", "namespace_label_index")


def key_resource(body: kopf.Body) -> KeyResource:
    return KeyResource(
        uid=body.metadata.uid or "",
        namespace=body.metadata.namespace or "",
        name=body.metadata.name or "",
        generation=body.metadata.get("generation"),
        spec=KeySpec.from_resource(body.metadata.name or "", body.spec),
        annotations=dict(body.metadata.annotations),
        spec_digest=spec_digest(dict(body.spec)),
    )


def provider_for(key: KeyResource, indexes: dict[str, Any]) -> ProviderView:
    """Resolve against the provider indexes kopf passes as handler kwargs."""
    cluster: kopf.Index[str, ProviderView] = indexes["cluster_provider_index"]
    namespaced: kopf.Index[tuple[str, str], ProviderView] = indexes["key_provider_index"]
    return resolve_provider(
        key.spec.provider_ref,
        key_namespace=key.namespace,
        tenant=key.spec.tenant,
        cluster_providers={name: next(iter(store)) for name, store in cluster.items()},
        namespaced_providers={ref: next(iter(store)) for ref, store in namespaced.items()},
        namespace_labels=_namespace_labels(key, indexes),
    )


def admissible_provider(
    key: KeyResource, indexes: dict[str, Any], binding: TenantBinding
) -> ProviderView:
    """The key's provider, once the key passes the admission rules: the backstop for
    a write that bypassed the webhook, refused with the webhook's reason."""
    labels = _namespace_labels(key, indexes)
    # A namespace kopf has not indexed yet (created a moment ago) is judged at the
    # next pass; the webhook judged it already, from the API server.
    refusal = None if labels is None else tenant_refusal(key.spec, key.namespace, labels, binding)
    if refusal is None:
        provider = provider_for(key, indexes)
        refusal = spec_refusal(key.spec, provider)
        if refusal is None:
            return provider
    raise InvalidSpec(refusal.message, reason=refusal.reason)


def _namespace_labels(key: KeyResource, indexes: dict[str, Any]) -> dict[str, str] | None:
    namespaces: kopf.Index[str, dict[str, str]] = indexes["namespace_label_index"]
    return next(iter(namespaces.get(key.namespace, [])), None)


def last_drift(body: kopf.Body) -> Drift | None:
    """The drift the last check reported, so other passes keep Ready honest until the next."""
    for condition in body.status.get("conditions") or ():
        if condition.get("type") == DRIFTED:
            return Drift(condition.get("status") == "True", str(condition.get("message", "")))
    return None
