"""How AWS KMS failures become keyledger errors.

The kind of failure comes from botocore: the `Error.Code` of a `ClientError`, or
the class of a `BotoCoreError` (connection, timeout, missing credentials). AWS
KMS answers with its own codes (`AccessDeniedException`,
`UnrecognizedClientException`, `InvalidSignatureException`); the generic AWS
forms (`AccessDenied`, `InvalidClientTokenId`, `SignatureDoesNotMatch`) come
from moto and from proxies in front of KMS, so both are listed.

Messages are built from the kind plus the scrubbed SDK message, never from the
raw exception: its text and `response` carry request ids and can echo the
request. `translated_errors` raises the result `from None` so that the SDK exception,
with its response, is not chained into logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

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
    DATA_KEY_NOT_WRAPPED_BY_KEY,
    KEY_DISABLED,
    KmsKeyNotFound,
    ProviderAccessDenied,
    ProviderError,
    ProviderThrottled,
    ProviderUnavailable,
)
from keyledger.providers.sanitize import sanitize

# Reasons of ProviderErrors raised here that callers (and conditions) tell apart.
ALIAS_EXISTS = "KmsAliasExists"
REQUEST_REJECTED = "KmsRequestRejected"


@dataclass(frozen=True)
class _Kind:
    codes: frozenset[str]
    error: type[ProviderError]
    hint: str  # what to do about it; {operation} is filled in
    reason: str | None = None


_KINDS = (
    _Kind(  # the credentials are not valid for this endpoint: unknown, wrong secret, expired
        frozenset(
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
        ),
        ProviderAccessDenied,
        "The credentials are not valid here: check accessKeyId, secretAccessKey and "
        "sessionToken in the provider's credentialsRef Secret, and that they belong to the "
        "account and partition of spec.awsKms.region",
    ),
    _Kind(  # valid credentials, but the IAM policy or key policy does not allow the call
        frozenset({"AccessDeniedException", "AccessDenied"}),
        ProviderAccessDenied,
        "Allow kms:{operation} to the operator's IAM identity (IAM policy and key policy)",
    ),
    _Kind(
        frozenset(
            {
                "ThrottlingException",
                "Throttling",
                "LimitExceededException",
                "TooManyRequestsException",
                "RequestLimitExceeded",
            }
        ),
        ProviderThrottled,
        "keyledger retries with backoff; if this persists, raise the account's KMS request "
        "quota or spread rotations out",
    ),
    _Kind(
        frozenset({"NotFoundException"}),
        KmsKeyNotFound,
        "The key or alias does not exist in this account and region: it was deleted, or the "
        "reference belongs to another region or account",
    ),
    _Kind(  # the key exists but its state forbids the call
        frozenset({"KMSInvalidStateException", "DisabledException"}),
        ProviderError,
        "The key is disabled or pending deletion: enable it (or cancel its deletion) if it "
        "should still be used",
        KEY_DISABLED,
    ),
    _Kind(
        frozenset({"InvalidCiphertextException", "IncorrectKeyException"}),
        ProviderError,
        "The data key was not wrapped by this key version, or is damaged",
        DATA_KEY_NOT_WRAPPED_BY_KEY,
    ),
    _Kind(
        frozenset({"AlreadyExistsException"}),
        ProviderError,
        "Another writer created it first",
        ALIAS_EXISTS,
    ),
    _Kind(
        frozenset(
            {
                "KMSInternalException",
                "DependencyTimeoutException",
                "KeyUnavailableException",
                "InternalFailure",
                "ServiceUnavailable",
                "ServiceUnavailableException",
            }
        ),
        ProviderUnavailable,
        "AWS KMS failed on its side; keyledger retries",
    ),
)
_BY_CODE = {code: kind for kind in _KINDS for code in kind.codes}
_UNAUTHORIZED = _BY_CODE["AccessDenied"]
_SERVER_SIDE = _BY_CODE["KMSInternalException"]
_REJECTED = _Kind(frozenset(), ProviderError, "See the AWS KMS message", REQUEST_REJECTED)

# An error body in the query/XML form, which botocore does not parse for a JSON
# service such as KMS (moto answers authentication failures this way).
_XML_CODE = re.compile(r"<Code>([A-Za-z.]+)</Code>")
_XML_MESSAGE = re.compile(r"<Message>(.*?)</Message>", re.DOTALL)


def translate_error(
    error: BotoCoreError | ClientError, *, where: str, target: str | None, secrets: Sequence[str]
) -> ProviderError:
    """The keyledger error for a failed SDK call to `where` ("AWS KMS in eu-west-1")."""
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
            f"{where} is not reachable ({detail}). Check spec.awsKms.endpoint, "
            "spec.awsKms.region and the network path from the operator"
        )
    return ProviderError(f"{where}: the AWS SDK failed: {detail}")


@contextmanager
def translated_errors(*, where: str, target: str | None, secrets: Sequence[str]) -> Iterator[None]:
    """Run SDK calls; any SDK failure leaves as a keyledger error without its SDK cause."""
    try:
        yield
    except (BotoCoreError, ClientError) as error:
        raise translate_error(error, where=where, target=target, secrets=secrets) from None


def _from_client_error(
    error: ClientError, *, where: str, target: str | None, secrets: Sequence[str]
) -> ProviderError:
    details = error.response.get("Error", {})
    code, message = _code_and_message(
        str(details.get("Code") or "Unknown"), str(details.get("Message") or "no message")
    )
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    kind = _BY_CODE.get(code)
    if kind is None:  # a code we do not know: the HTTP status still says a lot
        kind = _UNAUTHORIZED if status in (401, 403) else _SERVER_SIDE if status >= 500 else None
    kind = kind or _REJECTED
    on = f" on {target}" if target else ""
    hint = kind.hint.format(operation=error.operation_name)
    return kind.error(
        f"{where} refused {error.operation_name}{on} ({code}: {sanitize(message, secrets)}). "
        f"{hint}",
        reason=kind.reason,
    )


def _code_and_message(code: str, message: str) -> tuple[str, str]:
    """The error's code and message, taken from an XML body botocore left unparsed."""
    xml_code = _XML_CODE.search(message) if code.isdigit() else None
    if xml_code is None:
        return code, message
    xml_message = _XML_MESSAGE.search(message)
    return xml_code.group(1), xml_message.group(1) if xml_message else "no message"
