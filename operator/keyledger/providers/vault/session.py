"""A logged-in hvac client for one Vault/OpenBao provider, and the one mapping of its errors.

Every call to Vault goes through `VaultSession.call`, which logs in when needed
(token or kubernetes auth), logs in again once when a kubernetes-auth token has
expired, and turns hvac/requests exceptions into keyledger errors whose text is
sanitized with the credentials as secrets and never chained to the original.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

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

T = TypeVar("T")

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
REQUEST_TIMEOUT_S = 10.0

_SDK_ERRORS = (hvac.exceptions.VaultError, requests.RequestException)
_VAULT_UNAVAILABLE = (
    hvac.exceptions.VaultDown,
    hvac.exceptions.InternalServerError,
    hvac.exceptions.BadGateway,
    hvac.exceptions.VaultNotInitialized,
)


@dataclass(frozen=True)
class VaultAuth:
    """How the operator proves who it is: a token from the Secret, or its ServiceAccount."""

    method: Literal["token", "kubernetes"]
    token: str | None = field(default=None, repr=False)
    role: str | None = None
    mount_path: str = "kubernetes"
    token_path: Path = SERVICE_ACCOUNT_TOKEN


def translate_vault_error(
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
    detail = sanitize(_vault_detail(error), secrets)
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


def _vault_detail(error: Exception) -> str:
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


class VaultSession:
    """One hvac client, logged in on first use; safe to share between threads."""

    def __init__(
        self,
        address: str,
        auth: VaultAuth,
        *,
        namespace: str | None = None,
        timeout: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.address = address
        self._auth = auth
        # token="" rather than None: hvac would fall back to VAULT_TOKEN / ~/.vault-token.
        self._client: Any = hvac.Client(
            url=address, token=auth.token or "", namespace=namespace, timeout=timeout
        )
        self._logged_in = auth.method == "token"
        # Credentials learnt at login (the ServiceAccount JWT, the Vault token).
        self._login_secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self._auth.token, *self._login_secrets) if s)

    def call(self, action: str, operation: Callable[[Any], T]) -> T:
        """`operation(client)` with Vault errors turned into keyledger errors."""
        try:
            try:
                return operation(self._logged_in_client())
            except hvac.exceptions.Forbidden:
                if self._auth.method != "kubernetes":
                    raise
                # The kubernetes-auth token may have expired: log in again, once.
                # A 403 means Vault did nothing, so repeating the call is safe.
                self._login(force=True)
                return operation(self._client)
        except _SDK_ERRORS as error:
            raise translate_vault_error(
                error, action=action, address=self.address, secrets=self.secrets
            ) from None

    def read(self, action: str, operation: Callable[[Any], T]) -> T | None:
        """Like `call`, but None when the object does not exist (its mount does)."""

        def absent_is_none(client: Any) -> T | None:
            try:
                return operation(client)
            except hvac.exceptions.InvalidPath as error:
                if is_absent(error):
                    return None
                raise

        return self.call(action, absent_is_none)

    def close(self) -> None:
        self._client.adapter.close()

    def _logged_in_client(self) -> Any:
        if not self._logged_in:
            self._login(force=False)
        return self._client

    def _login(self, *, force: bool) -> None:
        with self._lock:
            if self._logged_in and not force:
                return  # another thread logged in meanwhile
            jwt = self._service_account_token()
            role, mount = self._auth.role, self._auth.mount_path
            self._login_secrets = (jwt,)
            try:
                response = self._client.auth.kubernetes.login(role, jwt, mount_point=mount)
            except (
                hvac.exceptions.Forbidden,
                hvac.exceptions.Unauthorized,
                hvac.exceptions.InvalidRequest,
            ) as error:
                detail = sanitize(_vault_detail(error), self.secrets)
                raise ProviderAccessDenied(
                    f"Vault at {self.address} refused kubernetes login as role {role!r} at "
                    f"auth/{mount}: {detail}. Check spec.vault.auth.role and mountPath, and "
                    "that the role binds the operator's ServiceAccount"
                ) from None
            except _SDK_ERRORS as error:
                raise translate_vault_error(
                    error,
                    action="logging in with kubernetes auth",
                    address=self.address,
                    secrets=self.secrets,
                ) from None
            self._login_secrets = (jwt, str(response["auth"]["client_token"]))
            self._logged_in = True

    def _service_account_token(self) -> str:
        # Read at every login: kubelet rotates projected tokens.
        try:
            return self._auth.token_path.read_text().strip()
        except OSError as error:
            raise ProviderAccessDenied(
                f"cannot read the ServiceAccount token at {self._auth.token_path} for Vault "
                f"kubernetes auth ({error.strerror}); mount one (automountServiceAccountToken) "
                "or set spec.vault.auth.tokenPath",
                reason="ServiceAccountTokenUnreadable",
            ) from None
