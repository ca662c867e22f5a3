"""How GCP Cloud KMS failures become keyledger errors.

The kind of failure comes from the class of the `google.api_core` exception (one
per gRPC status) or of the `google.auth` exception (credentials that cannot be
loaded or refreshed). Messages are built from the kind, the operation and the
scrubbed status message, never from `str(error)`: that adds the status details,
which can carry request ids and debug info. `translated_errors` raises the result
`from None` so that the SDK exception is not chained into logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from google.api_core import exceptions as api
from google.auth import exceptions as auth

from keyledger.errors import (
    KEY_DISABLED,
    KmsKeyNotFound,
    ProviderAccessDenied,
    ProviderError,
    ProviderThrottled,
    ProviderUnavailable,
)
from keyledger.providers.sanitize import sanitize

# Reasons of ProviderErrors raised here (and by the backend) that callers tell apart.
RESOURCE_EXISTS = "KmsResourceExists"
DATA_KEY_NOT_WRAPPED_BY_VERSION = "DataKeyNotWrappedByVersion"
REQUEST_REJECTED = "KmsRequestRejected"
OPERATION_UNSUPPORTED = "KmsOperationUnsupported"

CREDENTIALS_HINT = (
    "check serviceAccountJson in the provider's credentialsRef Secret (a service-account "
    "key file), or, without credentialsRef, the operator's application default credentials"
)


@dataclass(frozen=True)
class _Kind:
    errors: tuple[type[Exception], ...]
    error: type[ProviderError]
    hint: str
    reason: str | None = None


# First match wins: subclasses before their bases (ResourceExhausted is a TooManyRequests).
_KINDS = (
    _Kind(
        (api.Unauthenticated, api.Unauthorized),
        ProviderAccessDenied,
        f"The credentials were not accepted: {CREDENTIALS_HINT}",
    ),
    _Kind(
        (api.PermissionDenied, api.Forbidden),
        ProviderAccessDenied,
        "Grant the operator's service account the Cloud KMS permissions keyledger needs "
        "(see REQUIRED_PERMISSIONS in keyledger.providers.gcp.backend) on the project or key ring",
    ),
    _Kind(
        (api.TooManyRequests,),
        ProviderThrottled,
        "keyledger retries with backoff; if this persists, raise the project's Cloud KMS "
        "quota or spread rotations out",
    ),
    _Kind(
        (api.NotFound,),
        KmsKeyNotFound,
        "It does not exist in this project and location: it was deleted, or the reference "
        "belongs to another project, location or key ring",
    ),
    _Kind(
        (api.FailedPrecondition,),
        ProviderError,
        "The key version is disabled or scheduled for destruction: enable (or restore) it "
        "if it should still be used",
        KEY_DISABLED,
    ),
    _Kind((api.AlreadyExists,), ProviderError, "Another writer created it first", RESOURCE_EXISTS),
    _Kind(
        (api.MethodNotImplemented,),
        ProviderError,
        "This Cloud KMS endpoint does not offer the operation (an emulator?)",
        OPERATION_UNSUPPORTED,
    ),
    _Kind(
        (api.ServerError, api.Aborted, api.Cancelled),
        ProviderUnavailable,
        "Cloud KMS did not answer or failed on its side; keyledger retries. If this "
        "persists, check spec.gcpKms.endpoint and the network path from the operator",
    ),
)
_REJECTED = _Kind((), ProviderError, "See the Cloud KMS message", REQUEST_REJECTED)
_NOT_WRAPPED_HINT = "It was not wrapped by this key version, or is damaged"
# Resource names are no secret, but look like the long blobs `sanitize` removes.
_RESOURCE_NAME = re.compile(r"\bprojects/[\w.:-]+(?:/[A-Za-z]+/[\w.:-]+)*")


def translate_error(
    error: Exception,
    *,
    where: str,
    operation: str,
    target: str | None,
    secrets: Sequence[str],
    invalid_argument_reason: str | None = None,
) -> ProviderError:
    """The keyledger error for a failed call to `where` ("GCP Cloud KMS in projects/…").

    `invalid_argument_reason` names what INVALID_ARGUMENT means for this call (for
    Decrypt: the ciphertext or its bound version does not match).
    """
    on = f" on {target}" if target else ""
    if isinstance(error, api.RetryError):
        cause = error.cause
        if isinstance(cause, api.GoogleAPICallError | auth.GoogleAuthError):
            return translate_error(
                cause,
                where=where,
                operation=operation,
                target=target,
                secrets=secrets,
                invalid_argument_reason=invalid_argument_reason,
            )
        return ProviderUnavailable(
            f"{where} did not answer {operation}{on} in time ({scrub(error.message, secrets)})"
        )
    if isinstance(error, auth.GoogleAuthError):
        return _from_auth_error(error, where=where, operation=operation, secrets=secrets)
    if not isinstance(error, api.GoogleAPICallError):
        return ProviderError(f"{where}: {operation}{on} failed: {scrub(str(error), secrets)}")
    kind = next((k for k in _KINDS if isinstance(error, k.errors)), None)
    if kind is None and isinstance(error, api.InvalidArgument) and invalid_argument_reason:
        kind = _Kind((), ProviderError, _NOT_WRAPPED_HINT, invalid_argument_reason)
    kind = kind or _REJECTED
    status = error.grpc_status_code.name if error.grpc_status_code else str(error.code)
    detail = scrub(error.message or "no message", secrets)
    return kind.error(
        f"{where} refused {operation}{on} ({status}: {detail}). {kind.hint}", reason=kind.reason
    )


def scrub(text: str, secrets: Sequence[str]) -> str:
    """`sanitize(text)`, keeping the Cloud KMS resource names it names intact."""
    names: list[str] = []

    def hold(match: re.Match[str]) -> str:
        name = match.group()
        if any(len(secret) >= 4 and secret in name for secret in secrets):
            return name  # left to sanitize
        names.append(name)
        return f"\x00{len(names) - 1}\x00"

    scrubbed = sanitize(_RESOURCE_NAME.sub(hold, text), secrets)
    restored = re.sub("\x00([0-9]+)\x00", lambda m: names[int(m.group(1))], scrubbed)
    return restored.replace("\x00", "")  # a placeholder cut by sanitize's length limit


@contextmanager
def translated_errors(
    *,
    where: str,
    operation: str,
    target: str | None,
    secrets: Sequence[str],
    invalid_argument_reason: str | None = None,
) -> Iterator[None]:
    """Run SDK calls; any SDK failure leaves as a keyledger error without its SDK cause."""
    try:
        yield
    except (api.GoogleAPIError, auth.GoogleAuthError) as error:
        raise translate_error(
            error,
            where=where,
            operation=operation,
            target=target,
            secrets=secrets,
            invalid_argument_reason=invalid_argument_reason,
        ) from None


def _from_auth_error(
    error: auth.GoogleAuthError, *, where: str, operation: str, secrets: Sequence[str]
) -> ProviderError:
    detail = scrub(str(error), secrets)
    if isinstance(error, auth.TransportError):
        return ProviderUnavailable(
            f"{where}: could not reach the token endpoint for {operation} ({detail}); "
            "check the operator's network path to Google's OAuth endpoint"
        )
    return ProviderAccessDenied(
        f"{where}: no usable credentials for {operation} ({detail}): {CREDENTIALS_HINT}"
    )
