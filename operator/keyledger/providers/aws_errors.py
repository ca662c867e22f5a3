"""How AWS KMS failures become keyledger errors.

The kind of failure comes from botocore: the `Error.Code` of a `ClientError`, or
the class of a `BotoCoreError` (connection, timeout, missing credentials). AWS
KMS itself answers with its own codes (`AccessDeniedException`,
`UnrecognizedClientException`, `InvalidSignatureException`); the generic AWS
forms (`AccessDenied`, `InvalidClientTokenId`, `SignatureDoesNotMatch`) come
from moto and from proxies in front of KMS, so both are listed.

Messages are built from the kind plus the scrubbed SDK message, never from the
raw exception: its text and `response` carry request ids and can echo the
request. Callers raise the result `from None` so that the SDK exception, with
its response, is not chained into logs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from keyledger.errors import (
    KmsKeyNotFound,
    ProviderAccessDenied,
    ProviderError,
    ProviderThrottled,
    ProviderUnavailable,
)
from keyledger.providers.sanitize import sanitize

# The credentials are not valid for this endpoint (unknown, wrong secret, expired).
UNAUTHENTICATED = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "IncompleteSignatureException",
        "MissingAuthenticationToken",
        "MissingAuthenticationTokenException",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)
# Valid credentials whose IAM identity or the key policy does not allow the call.
UNAUTHORIZED = frozenset({"AccessDeniedException", "AccessDenied"})
THROTTLED = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "LimitExceededException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
    }
)
NOT_FOUND = frozenset({"NotFoundException"})
# The key exists but its state forbids the call (disabled, pending deletion or import).
KEY_NOT_USABLE = frozenset({"KMSInvalidStateException", "DisabledException"})
# The ciphertext is not from this key, or is damaged.
NOT_WRAPPED_BY_KEY = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})
SERVER_SIDE = frozenset(
    {
        "KMSInternalException",
        "DependencyTimeoutException",
        "KeyUnavailableException",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)
ALIAS_EXISTS_CODE = "AlreadyExistsException"

# Reasons of ProviderErrors raised here that callers (and conditions) tell apart.
KEY_DISABLED = "KmsKeyDisabled"
ALIAS_EXISTS = "KmsAliasExists"
DATA_KEY_NOT_WRAPPED_BY_KEY = "DataKeyNotWrappedByKey"


def translate_error(
    error: BotoCoreError | ClientError, *, where: str, target: str | None, secrets: Sequence[str]
) -> ProviderError:
    """The keyledger error for an SDK failure of a call `where` ("AWS KMS in eu-west-1") made."""
    if isinstance(error, ClientError):
        return _from_client_error(error, where=where, target=target, secrets=secrets)
    detail = sanitize(str(error), secrets)
    if isinstance(error, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return ProviderAccessDenied(
            f"{where}: no usable AWS credentials ({detail}). Set credentialsRef to a Secret "
            "with accessKeyId and secretAccessKey, or give the operator an identity "
            "(IRSA, instance profile, AWS_* environment)"
        )
    if isinstance(error, ConnectionError | HTTPClientError):
        return ProviderUnavailable(
            f"{where} is not reachable ({detail}). Check spec.awsKms.endpoint and "
            "spec.awsKms.region and the network path from the operator"
        )
    return ProviderError(f"{where}: the AWS SDK failed: {detail}")


@contextmanager
def kms_errors(*, where: str, target: str | None, secrets: Sequence[str]) -> Iterator[None]:
    """Run SDK calls; any SDK failure leaves as a keyledger error without its SDK cause."""
    try:
        yield
    except (BotoCoreError, ClientError) as error:
        raise translate_error(error, where=where, target=target, secrets=secrets) from None


def _from_client_error(
    error: ClientError, *, where: str, target: str | None, secrets: Sequence[str]
) -> ProviderError:
    details = error.response.get("Error", {})
    code = str(details.get("Code") or "Unknown")
    detail = sanitize(str(details.get("Message") or "no message"), secrets)
    operation = error.operation_name
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    on = f" on {target}" if target else ""
    what = f"{where} refused {operation}{on} ({code}: {detail})"
    if code in UNAUTHENTICATED:
        return ProviderAccessDenied(
            f"{what}. The credentials are not valid here: check accessKeyId, "
            "secretAccessKey and sessionToken in the provider's credentialsRef Secret, "
            "and that they belong to the account and partition of spec.awsKms.region"
        )
    if code in UNAUTHORIZED:
        return ProviderAccessDenied(
            f"{what}. Allow kms:{operation} to the operator's IAM identity (IAM policy "
            "and key policy)"
        )
    if code in THROTTLED:
        return ProviderThrottled(
            f"{what}. keyledger retries with backoff; if this persists, raise the "
            "account's KMS request quota or spread rotations out"
        )
    if code in NOT_FOUND:
        return KmsKeyNotFound(
            f"{what}. The key or alias does not exist in this account and region: it was "
            "deleted, or the reference belongs to another region or account"
        )
    if code in KEY_NOT_USABLE:
        return ProviderError(
            f"{what}. The key is disabled or pending deletion: enable it (or cancel its "
            "deletion) if it should still be used",
            reason=KEY_DISABLED,
        )
    if code in NOT_WRAPPED_BY_KEY:
        return ProviderError(
            f"{what}. The data key was not wrapped by this key version, or is damaged",
            reason=DATA_KEY_NOT_WRAPPED_BY_KEY,
        )
    if code == ALIAS_EXISTS_CODE:
        return ProviderError(what, reason=ALIAS_EXISTS)
    if code in SERVER_SIDE or status >= 500:
        return ProviderUnavailable(f"{what}. AWS KMS failed on its side; keyledger retries")
    return ProviderError(what, reason="KmsRequestRejected")
