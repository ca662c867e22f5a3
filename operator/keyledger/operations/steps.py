"""KMS-side pieces of the operations: version requests, drift, adoption, deletion policy.

No ledger access here."""

from __future__ import annotations

from keyledger.domain import KeyEventType, KeyStatus
from keyledger.errors import InvalidSpec, ProviderError
from keyledger.lifecycle.spec import DeletionPolicy, KeySpec
from keyledger.lifecycle.status import Drift
from keyledger.lifecycle.versions import KeyVersion
from keyledger.operations.views import KeyResource
from keyledger.providers.base import KeyBackend, KeyVersionRequest, KmsKeyState, idempotency_marker

ADOPTION_REFUSED = "AdoptionRefused"


def version_request(key: KeyResource, version: KeyVersion) -> KeyVersionRequest:
    spec = key.spec
    return KeyVersionRequest(
        tenant=spec.tenant,
        key_name=spec.key_name,
        version=version.version,
        algorithm=spec.algorithm,
        # The marker ties the KMS key to this ledger row: a retry after a crash
        # finds the key it already made instead of making a second one.
        marker=idempotency_marker(str(version.id), version.version),
        labels={"tenant": spec.tenant, "key-name": spec.key_name, "version": str(version.version)},
    )


# Ledger statuses whose KMS key should be usable.
_EXPECT_ENABLED = frozenset(
    {KeyStatus.ACTIVE, KeyStatus.INACTIVE, KeyStatus.ROTATED, KeyStatus.EXPIRED}
)


def observe_drift(current: KeyVersion, state: KmsKeyState) -> Drift:
    ref = current.kms_key_id
    if current.status in _EXPECT_ENABLED and state is not KmsKeyState.ENABLED:
        return Drift(
            True,
            f"version {current.version} is {current.status.value} in the ledger "
            f"but {state.value} in the KMS ({ref}); changed outside keyledger",
        )
    return Drift(False, f"version {current.version} matches the KMS ({state.value})")


def check_adoptable(backend: KeyBackend, ref: str) -> None:
    """The key named by spec.adopt.kmsKeyId exists, is enabled, and wraps data keys
    with the provider's credentials; otherwise say which, naming the field."""
    field = "spec.adopt.kmsKeyId"
    if backend.adoption_refusal is not None:
        raise InvalidSpec(
            f"spec.adopt: the {backend.provider.value} backend cannot adopt an existing key "
            f"({backend.adoption_refusal}); remove spec.adopt to have keyledger create the key",
            reason=ADOPTION_REFUSED,
        )
    try:
        state = backend.describe(ref).state
    except ProviderError as error:
        if error.retryable:
            raise  # the KMS is unwell, not the reference: retried
        raise InvalidSpec(f"{field}: {error.message}", reason=ADOPTION_REFUSED) from error
    if state is KmsKeyState.MISSING:
        raise InvalidSpec(
            f"{field}: {ref} does not exist in the provider's KMS; check the reference, "
            "or remove spec.adopt to create a new key",
            reason=ADOPTION_REFUSED,
        )
    if state is not KmsKeyState.ENABLED:
        raise InvalidSpec(
            f"{field}: {ref} is {state.value} in the KMS; only an enabled key can be adopted",
            reason=ADOPTION_REFUSED,
        )
    backend.generate_data_key(ref)  # usable for what keyledger will ask of it


def apply_deletion_policy(spec: KeySpec, backend: KeyBackend | None, ref: str) -> KeyEventType:
    if spec.deletion_policy is DeletionPolicy.RETAIN or backend is None:
        return KeyEventType.DELETION_RETAINED
    state = backend.describe(ref).state
    if spec.deletion_policy is DeletionPolicy.DISABLE:
        if state is KmsKeyState.ENABLED:
            backend.disable(ref)
        return KeyEventType.DELETION_DISABLED
    if state is not KmsKeyState.PENDING_DELETION and state is not KmsKeyState.MISSING:
        backend.schedule_deletion(ref, spec.deletion_window_days)
    return KeyEventType.DELETION_SCHEDULED
