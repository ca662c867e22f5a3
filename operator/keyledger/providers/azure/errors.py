"""How Azure Key Vault failures become keyledger errors.

The kind of failure comes from azure-core's exception classes and the HTTP
status: `ClientAuthenticationError` (a 401 from the vault, or azure-identity
failing to get a token, e.g. AADSTS7000215 for a wrong client secret),
`HttpResponseError` with 403 (RBAC, access policy or firewall), 429
(throttled), 404 (`ResourceNotFoundError`), 409 (a soft-deleted name) and 5xx,
and `ServiceRequestError` / `ServiceResponseError` when nothing answers. A 403
whose inner code is `KeyDisabled` is the key's state, not the caller's access.

Messages are built from the kind plus the scrubbed service text: Entra's
messages carry trace and correlation ids, and SDK exceptions hold the response.
`translated_errors` raises the result `from None`, so neither reaches a log.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from keyledger.errors import (
    KEY_DISABLED,
    KmsKeyNotFound,
    ProviderAccessDenied,
    ProviderError,
    ProviderThrottled,
    ProviderUnavailable,
)
from keyledger.providers.sanitize import sanitize

# Reasons of ProviderErrors raised here that callers (and conditions) tell apart.
KEY_NAME_DELETED = "KmsKeyNameDeleted"
REQUEST_REJECTED = "KmsRequestRejected"

# What the operator's identity must be allowed on the vault's keys.
REQUIRED_KEY_PERMISSIONS = ("get", "list", "create", "update", "wrapKey", "unwrapKey")

_CREDENTIALS_HINT = (
    "Check tenantId, clientId and clientSecret in the provider's credentialsRef Secret (and "
    "that the secret has not expired); without credentialsRef the operator's own identity is "
    "used (workload identity, managed identity or AZURE_* environment variables)"
)
_PERMISSIONS_HINT = (
    "Give the operator's identity the 'Key Vault Crypto Officer' role on the vault, or an "
    f"access policy with the key permissions {', '.join(REQUIRED_KEY_PERMISSIONS)}"
)
_FIREWALL_HINT = (
    "The vault's firewall refused the operator's network address: allow it in the vault's "
    "networking settings, or reach the vault through its private endpoint"
)


def translate_error(
    error: AzureError, *, where: str, operation: str, target: str | None, secrets: Sequence[str]
) -> ProviderError:
    """The keyledger error for a failed call `operation` ("WrapKey") to `where`."""
    detail = _detail(error, secrets)
    on = f" on {target}" if target else ""
    if isinstance(error, ClientAuthenticationError):
        return ProviderAccessDenied(
            f"{where}: authentication failed for {operation}{on} ({detail}). {_CREDENTIALS_HINT}"
        )
    if isinstance(error, ServiceRequestError | ServiceResponseError):
        return ProviderUnavailable(
            f"{where} is not reachable ({detail}). Check spec.azureKeyVault.vaultUrl and the "
            "network path (DNS, proxy, private endpoint) from the operator"
        )
    if not isinstance(error, HttpResponseError):
        return ProviderError(f"{where}: the Azure SDK failed in {operation}{on}: {detail}")
    status = error.status_code or 0
    refused = f"{where} refused {operation}{on} ({detail})."
    inner = _inner_code(error)
    if status == 429:
        return ProviderThrottled(
            f"{refused} keyledger retries with backoff; if this persists, spread rotations out "
            "or ask for a higher Key Vault request limit"
        )
    if status == 403 and inner == "KeyDisabled":
        return ProviderError(
            f"{refused} The key version is disabled: enable it if it should still be used",
            reason=KEY_DISABLED,
        )
    if status in (401, 403):
        hint = _FIREWALL_HINT if inner == "ForbiddenByFirewall" else _PERMISSIONS_HINT
        return ProviderAccessDenied(f"{refused} {hint}")
    if status == 404:
        return KmsKeyNotFound(
            f"{refused} The key or version does not exist in this vault: it was deleted, or the "
            "reference belongs to another vault"
        )
    if status == 409:
        return ProviderError(
            f"{refused} A deleted key of this name is kept by the vault's soft delete: recover "
            "it (az keyvault key recover) to keep its versions, or purge it",
            reason=KEY_NAME_DELETED,
        )
    if status >= 500:
        return ProviderUnavailable(
            f"{refused} Azure Key Vault failed on its side; keyledger retries"
        )
    return ProviderError(refused, reason=REQUEST_REJECTED)


@contextmanager
def translated_errors(
    *, where: str, operation: str, target: str | None, secrets: Sequence[str]
) -> Iterator[None]:
    """Run SDK calls; any SDK failure leaves as a keyledger error without its SDK cause."""
    try:
        yield
    except AzureError as error:
        raise translate_error(
            error, where=where, operation=operation, target=target, secrets=secrets
        ) from None
    except ValueError as error:
        # The SDK refuses a bearer challenge whose resource is not the vault's domain.
        if "challenge" not in str(error):
            raise
        raise ProviderAccessDenied(
            f"{where}: the vault's authentication challenge does not match "
            f"spec.azureKeyVault.vaultUrl ({sanitize(str(error), secrets)}). Use the vault's "
            "own URL, e.g. https://<name>.vault.azure.net"
        ) from None


def _detail(error: AzureError, secrets: Sequence[str]) -> str:
    odata = error.error if isinstance(error, HttpResponseError) else None
    if odata is not None and odata.code:
        text = f"{odata.code}: {odata.message}"
    else:
        text = str(error.message or type(error).__name__)
    return sanitize(text, secrets)


def _inner_code(error: HttpResponseError) -> str | None:
    innererror = error.error.innererror if error.error is not None else None
    code = innererror.get("code") if isinstance(innererror, dict) else None
    return str(code) if code else None
