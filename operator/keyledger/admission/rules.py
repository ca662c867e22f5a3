"""What an EncryptionKey must satisfy beyond its schema: the rules that need a lookup
(the namespace's tenant, the provider and its backend) or compare fields.

The validating webhook refuses a write that breaks one of them; the operator
checks the same rules on every pass as the backstop for a write that bypassed
the webhook, and reports the same reason as Ready=False. Rules the CRD schema
and CEL can express are in the CRD (they hold with the webhook down).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keyledger.api import (
    COMPROMISE_REASON,
    COMPROMISED_REQUESTED_AT,
    ROLLBACK_REQUESTED_AT,
    TENANT_LABEL,
)
from keyledger.domain import TenantBinding
from keyledger.lifecycle.conditions import ROLLBACK_AVAILABLE
from keyledger.lifecycle.durations import format_duration
from keyledger.lifecycle.spec import DeletionPolicy, KeySpec
from keyledger.operations.providers import ProviderView
from keyledger.providers.registry import AdoptableRef, builtin_backend


@dataclass(frozen=True)
class Refusal:
    reason: str
    message: str


def tenant_refusal(
    spec: KeySpec, namespace: str, labels: Mapping[str, str] | None, binding: TenantBinding
) -> Refusal | None:
    bound = (labels or {}).get(TENANT_LABEL)
    if bound is not None and bound != spec.tenant:
        return Refusal(
            "TenantMismatch",
            f"spec.tenant: namespace {namespace} is bound to tenant {bound!r} (label "
            f"{TENANT_LABEL}); set spec.tenant: {bound}, or create the key in a namespace "
            f"of tenant {spec.tenant!r}",
        )
    if bound is None and binding is TenantBinding.STRICT:
        return Refusal(
            "NamespaceNotBoundToTenant",
            f"spec.tenant: namespace {namespace} is not bound to a tenant; label it "
            f"(kubectl label namespace {namespace} {TENANT_LABEL}={spec.tenant}) before "
            "creating keys in it",
        )
    return None


def missing_provider_warning(where: str) -> str:
    """A key may name a provider that does not exist yet: GitOps tools apply a
    provider and its keys in no particular order. The key waits (Ready=False
    ProviderNotFound) and the writer is warned."""
    return (
        f"spec.providerRef: {where} does not exist yet; the key waits for it "
        "(create it, or fix spec.providerRef.name)"
    )


def provider_refusal(
    spec: KeySpec, labels: Mapping[str, str] | None, provider: ProviderView, where: str
) -> Refusal | None:
    """The provider named by spec.providerRef serves this tenant here. (Whether it
    is Ready is not checked: that changes by itself.)"""
    refusal = provider.refusal(spec.tenant, labels)
    if refusal is not None:
        return Refusal("ProviderNotAllowed", f"spec.providerRef: {where} {refusal}")
    return None


def spec_refusal(spec: KeySpec, provider: ProviderView | None) -> Refusal | None:
    """Fields that contradict each other or the provider's backend."""
    period = spec.rotation_period
    if period is not None and spec.rollback_window >= period:
        return Refusal(
            "RollbackWindowTooLong",
            f"spec.rollback.window ({format_duration(spec.rollback_window)}) must be shorter "
            f"than spec.rotation.period ({format_duration(period)}): the next rotation "
            "replaces the version a rollback returns to; shorten the window or lengthen the "
            "period",
        )
    if period is not None and spec.expire_after is not None and spec.expire_after <= period:
        return Refusal(
            "ExpiryBeforeRotation",
            f"spec.expiry.after ({format_duration(spec.expire_after)}) must be longer than "
            f"spec.rotation.period ({format_duration(period)}), or every version expires "
            "before it is rotated; lengthen expiry.after or shorten the period",
        )
    if provider is None:
        return None
    backend = builtin_backend(provider.backend)
    allowed = backend.deletion_window_days(provider.options)
    # The window matters only where deletion is scheduled.
    scheduled = spec.deletion_policy is DeletionPolicy.SCHEDULE_DELETION
    if scheduled and spec.deletion_window_days not in allowed:
        return Refusal(
            "DeletionWindowOutOfRange",
            f"spec.deletionWindowDays ({spec.deletion_window_days}) is outside what the "
            f"{provider.backend} provider {provider.name} can keep ({allowed.start} to "
            f"{allowed.stop - 1} days); choose a window in that range",
        )
    ref = spec.adopt_kms_key_id
    if ref is not None:
        return _adoption_refusal(ref, provider.backend, backend.adoptable)
    return None


def _adoption_refusal(ref: str, field: str, adoptable: AdoptableRef | str) -> Refusal | None:
    if isinstance(adoptable, str):
        return Refusal(
            "AdoptionRefused",
            f"spec.adopt: the {field} backend cannot adopt an existing key ({adoptable}); "
            "remove spec.adopt to have keyledger create the key",
        )
    if not adoptable.matches(ref):
        return Refusal(
            "AdoptionRefused",
            f"spec.adopt.kmsKeyId: {ref[:200]!r} is not a {field} key reference; it looks "
            f"like {adoptable.example}",
        )
    return None


def request_refusal(
    old_annotations: Mapping[str, str],
    new_annotations: Mapping[str, str],
    status: Mapping[str, Any],
) -> Refusal | None:
    """A request annotation set now that cannot be honoured, judged from the key's
    status as the operator last wrote it."""

    def newly_set(annotation: str) -> bool:
        value = (new_annotations.get(annotation) or "").strip()
        return bool(value) and value != (old_annotations.get(annotation) or "").strip()

    if (
        newly_set(COMPROMISED_REQUESTED_AT)
        and not (new_annotations.get(COMPROMISE_REASON) or "").strip()
    ):
        return Refusal(
            "CompromiseReasonMissing",
            f"{COMPROMISE_REASON}: say why the key is compromised (it goes into the audit "
            f"trail) alongside {COMPROMISED_REQUESTED_AT}; kubectl keyledger compromise "
            "--reason sets both",
        )
    if newly_set(ROLLBACK_REQUESTED_AT):
        available = next(
            (c for c in status.get("conditions") or () if c.get("type") == ROLLBACK_AVAILABLE),
            None,
        )
        if available is None or available.get("status") != "True":
            reason = str(available.get("reason")) if available else "NoPreviousVersion"
            why = str(available.get("message")) if available else "the key has no version yet"
            return Refusal(
                reason,
                f"{ROLLBACK_REQUESTED_AT}: nothing to roll back to: {why}",
            )
    return None
