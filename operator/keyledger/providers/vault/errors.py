"""Vault/OpenBao failures as keyledger errors: the one mapping of hvac/requests exceptions.

Text taken from Vault goes through the shared `sanitize` with the session's
credentials as secrets; callers raise the result `from None`, so the SDK
exception (which names URLs and may echo request bodies) never reaches a log.
"""

from __future__ import annotations

from collections.abc import Iterable

import hvac
import requests

from keyledger.errors import (
    KEY_DISABLED,
    KmsKeyNotFound,
    ProviderAccessDenied,
    ProviderError,
    ProviderThrottled,
    ProviderUnavailable,
)
from keyledger.providers.sanitize import sanitize
from keyledger.providers.vault.config import REQUEST_TIMEOUT_S

SDK_ERRORS = (hvac.exceptions.VaultError, requests.RequestException)
_VAULT_UNAVAILABLE = (
    hvac.exceptions.VaultDown,
    hvac.exceptions.InternalServerError,
    hvac.exceptions.BadGateway,
    hvac.exceptions.VaultNotInitialized,
)


def translate_error(
    error: Exception, *, action: str, address: str, secrets: Iterable[str]
) -> ProviderError:
    """The keyledger error for an hvac/requests exception raised while doing `action`."""
    if isinstance(error, requests.Timeout):
        return ProviderUnavailable(
            f"Vault at {address} did not answer within {REQUEST_TIMEOUT_S:g} s while {action}; "
            "check that it is up, unsealed and reachable from the operator"
        )
    if isinstance(error, requests.RequestException):  # connection refused, DNS, TLS
        return ProviderUnavailable(
            f"cannot reach Vault at {address} while {action} ({type(error).__name__}); "
            "check spec.vault.address and that Vault/OpenBao is up"
        )
    detail = sanitize(error_detail(error), secrets)
    if isinstance(error, hvac.exceptions.Forbidden | hvac.exceptions.Unauthorized):
        return ProviderAccessDenied(
            f"Vault at {address} denied {action}: {detail}. Check the credentials "
            "(credentialsRef key `token`, or spec.vault.auth.role) and that their policy "
            "grants this path"
        )
    if isinstance(error, hvac.exceptions.RateLimitExceeded):
        return ProviderThrottled(f"Vault at {address} is rate-limiting {action}: {detail}")
    if isinstance(error, _VAULT_UNAVAILABLE):
        return ProviderUnavailable(
            f"Vault at {address} could not serve {action} (sealed, standby or failing): {detail}"
        )
    if isinstance(error, hvac.exceptions.InvalidPath):
        if "no handler for route" in detail:
            return KmsKeyNotFound(
                f"Vault at {address} has no secrets engine for {action}: {detail}. Enable it "
                "or fix spec.vault.mount / spec.vault.stateMount",
                reason="VaultMountNotFound",
            )
        return KmsKeyNotFound(f"Vault at {address} found nothing while {action}: {detail}")
    if isinstance(error, hvac.exceptions.InvalidRequest):
        return ProviderError(
            f"Vault at {address} rejected {action}: {detail}", reason="VaultRequestRejected"
        )
    return ProviderError(f"Vault at {address} failed {action}: {detail}")


def crypto_refusal(ref: str, what: str, text: str) -> ProviderError:
    """Transit's 400s on datakey/decrypt, as errors that say what they mean."""
    if "higher than the latest" in text:
        return KmsKeyNotFound(f"{ref} does not exist (transit's latest version is lower)")
    if "minimum encryption" in text:
        return ProviderError(
            f"transit refuses {what} with {ref}: an older version than the primary "
            "(min_encryption_version); use the ACTIVE version's ref",
            reason="KmsKeyNotPrimary",
        )
    if "disallowed by policy" in text or "no such key version" in text:
        return ProviderError(
            f"transit refuses {what} with {ref}: blocked by min_decryption_version",
            reason=KEY_DISABLED,
        )
    # Decrypting with the wrong key fails authentication; never echo the ciphertext.
    return ProviderError(f"cannot finish {what} with {ref}: not wrapped by it")


def is_absent(error: hvac.exceptions.InvalidPath) -> bool:
    """A 404 for a missing object, not for a missing secrets engine."""
    return not any("no handler for route" in str(e) for e in error.errors or ())


def error_detail(error: Exception) -> str:
    # Vault's own error list; not hvac's "..., on <method> <url>" suffix, since
    # every message already names the action and the address.
    if isinstance(error, hvac.exceptions.VaultError):
        errors = [str(e) for e in error.errors or () if str(e).strip()]
        if errors:
            return "; ".join(errors)
        if error.args and error.args[0]:
            return str(error.args[0])
        return "not found" if isinstance(error, hvac.exceptions.InvalidPath) else "no detail"
    return str(error)
