"""Which provider an EncryptionKey may use: resolution of `spec.providerRef`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keyledger.errors import InvalidSpec, ProviderNotCheckedYet, ProviderNotReady
from keyledger.lifecycle.spec import ProviderKind, ProviderRef
from keyledger.providers.registry import BACKEND_FIELDS


@dataclass(frozen=True)
class ProviderView:
    """A KeyProvider or ClusterKeyProvider as last seen by the operator."""

    kind: ProviderKind
    namespace: str | None
    name: str
    backend: str
    options: Mapping[str, Any]
    credentials_ref: Mapping[str, str] | None = None
    allowed_tenants: tuple[str, ...] = ()
    namespace_selector: Mapping[str, Any] | None = None
    ready: bool = False
    ready_message: str = ""
    # False until a check has written the provider's Ready condition.
    checked: bool = False
    spec_generation: int | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind.value} {where}{self.name} ({self.backend})"

    @classmethod
    def from_resource(
        cls,
        kind: ProviderKind,
        namespace: str | None,
        name: str,
        spec: Mapping[str, Any],
        status: Mapping[str, Any],
    ) -> ProviderView:
        backends = [f for f in BACKEND_FIELDS if spec.get(f) is not None]
        if len(backends) != 1:
            raise InvalidSpec(
                f"{kind.value} {name}: set exactly one backend in spec "
                f"({', '.join(BACKEND_FIELDS)}); found {len(backends)}"
            )
        ready = next((c for c in status.get("conditions") or () if c.get("type") == "Ready"), None)
        return cls(
            kind=kind,
            namespace=namespace,
            name=name,
            backend=backends[0],
            options=dict(spec[backends[0]]),
            credentials_ref=spec.get("credentialsRef"),
            allowed_tenants=tuple(spec.get("allowedTenants") or ()),
            namespace_selector=spec.get("namespaceSelector"),
            ready=bool(ready and ready.get("status") == "True"),
            ready_message=str(ready.get("message", "")) if ready else "not checked yet",
            checked=ready is not None,
        )

    def refusal(self, tenant: str, namespace_labels: Mapping[str, str] | None) -> str | None:
        """Why this provider will not serve `tenant` in that namespace, or None.

        A namespaced KeyProvider serves its own namespace; a cluster one may limit
        tenants (no list: all) and namespaces (no selector: all).
        """
        if self.kind is ProviderKind.NAMESPACED:
            return None
        if self.allowed_tenants and tenant not in self.allowed_tenants:
            return (
                f"does not serve tenant {tenant!r}; add it to the provider's "
                "spec.allowedTenants or use another provider"
            )
        if self.namespace_selector is not None and not selector_matches(
            self.namespace_selector, namespace_labels or {}
        ):
            return (
                "does not serve this namespace: its labels do not match the provider's "
                "spec.namespaceSelector; label the namespace or use another provider"
            )
        return None


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels AND every matchExpression)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or ():
        key, operator = expression["key"], expression["operator"]
        values = set(expression.get("values") or ())
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def resolve_provider(
    ref: ProviderRef,
    *,
    key_namespace: str,
    tenant: str,
    cluster_providers: Mapping[str, ProviderView],
    namespaced_providers: Mapping[tuple[str, str], ProviderView],
    namespace_labels: Mapping[str, str] | None = None,
) -> ProviderView:
    """The provider `ref` names, if it exists, is Ready and serves `tenant`."""
    if ref.kind is ProviderKind.CLUSTER:
        found = cluster_providers.get(ref.name)
        where = f"ClusterKeyProvider {ref.name!r}"
    else:
        found = namespaced_providers.get((key_namespace, ref.name))
        where = f"KeyProvider {ref.name!r} in namespace {key_namespace!r}"
    if found is None:
        raise ProviderNotReady(
            f"spec.providerRef: {where} does not exist; create it or fix spec.providerRef.name",
            reason="ProviderNotFound",
        )
    refusal = found.refusal(tenant, namespace_labels)
    if refusal is not None:
        raise ProviderNotReady(f"spec.providerRef: {where} {refusal}", reason="ProviderNotAllowed")
    if not found.checked:
        raise ProviderNotCheckedYet(
            f"{where} has not been checked yet; waiting for its first check"
        )
    if not found.ready:
        raise ProviderNotReady(
            f"{where} is not Ready: {found.ready_message}", reason="ProviderNotReady"
        )
    return found
