"""AWS KMS errors as keyledger sees them: SDK failures mapped, secrets and ids stripped,
and the spec mistakes the awsKms backend refuses before calling AWS.

The SDK exceptions are built by hand because real servers do not throttle, time
out or expire tokens on demand.
"""

from __future__ import annotations

import re

import pytest
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from hypothesis import given
from hypothesis import strategies as st

from keyledger.errors import (
    DATA_KEY_NOT_WRAPPED_BY_KEY,
    KEY_DISABLED,
    InvalidSpec,
    KmsKeyNotFound,
    ProviderAccessDenied,
    ProviderError,
    ProviderThrottled,
    ProviderUnavailable,
)
from keyledger.providers.aws.backend import AwsKmsBackend, open_aws_kms_backend
from keyledger.providers.aws.errors import (
    REQUEST_REJECTED,
    translate_error,
    translated_errors,
)
from keyledger.providers.aws.names import marker_alias, primary_alias
from keyledger.providers.base import BackendConfig, KeyVersionRequest
from keyledger.settings import Settings

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
REQUEST_ID = "7a62c49f-347e-4fc4-9331-6e8eEXAMPLE"
WHERE = "AWS KMS in eu-west-1"
REF = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def _client_error(code: str, message: str, status: int = 400, op: str = "Decrypt") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {
                "RequestId": REQUEST_ID,
                "HostId": "",
                "HTTPStatusCode": status,
                "HTTPHeaders": {},
                "RetryAttempts": 0,
            },
        },
        op,
    )


def _translate(error: BotoCoreError | ClientError) -> ProviderError:
    return translate_error(error, where=WHERE, target=REF, secrets=(SECRET, ACCESS_KEY_ID))


@pytest.mark.parametrize(
    ("code", "status", "expected", "reason"),
    [
        ("ThrottlingException", 400, ProviderThrottled, "ProviderThrottled"),
        ("LimitExceededException", 400, ProviderThrottled, "ProviderThrottled"),
        ("AccessDeniedException", 400, ProviderAccessDenied, "ProviderAccessDenied"),
        ("UnrecognizedClientException", 400, ProviderAccessDenied, "ProviderAccessDenied"),
        ("InvalidSignatureException", 400, ProviderAccessDenied, "ProviderAccessDenied"),
        ("ExpiredTokenException", 400, ProviderAccessDenied, "ProviderAccessDenied"),
        ("NotFoundException", 400, KmsKeyNotFound, "KmsKeyNotFound"),
        ("KMSInvalidStateException", 400, ProviderError, KEY_DISABLED),
        ("DisabledException", 400, ProviderError, KEY_DISABLED),
        ("IncorrectKeyException", 400, ProviderError, DATA_KEY_NOT_WRAPPED_BY_KEY),
        ("InvalidCiphertextException", 400, ProviderError, DATA_KEY_NOT_WRAPPED_BY_KEY),
        ("KMSInternalException", 500, ProviderUnavailable, "ProviderUnavailable"),
        ("SomethingNew", 503, ProviderUnavailable, "ProviderUnavailable"),
        ("SomethingNew", 403, ProviderAccessDenied, "ProviderAccessDenied"),
        ("ValidationException", 400, ProviderError, REQUEST_REJECTED),
    ],
)
def test_client_errors_map_to_their_kind(
    code: str, status: int, expected: type[ProviderError], reason: str
) -> None:
    error = _translate(_client_error(code, "the key said no", status))
    assert type(error) is expected
    assert error.reason == reason
    assert code in error.message
    assert "Decrypt" in error.message
    assert REF in error.message


def test_throttling_is_retryable_and_access_denial_is_not() -> None:
    assert _translate(_client_error("ThrottlingException", "Rate exceeded")).retryable
    assert not _translate(_client_error("AccessDeniedException", "no")).retryable


def test_secrets_and_request_ids_are_stripped_from_messages() -> None:
    leaky = (
        f"Credential={ACCESS_KEY_ID}/20240101/eu-west-1/kms signature={SECRET} "
        f"RequestId: {REQUEST_ID} token was {SECRET}"
    )
    for code in ("InvalidSignatureException", "ThrottlingException", "ValidationException"):
        error = _translate(_client_error(code, leaky))
        text = f"{error} {error.args!r}"
        assert SECRET not in text
        assert ACCESS_KEY_ID not in text
        assert REQUEST_ID not in text


def test_xml_error_body_of_a_json_service_is_understood() -> None:
    """moto answers a bad signature to KMS with an XML body botocore leaves unparsed."""
    body = (
        '<?xml version="1.0" encoding="utf-8"?>\n<ErrorResponse><Errors><Error>'
        "<Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated "
        "does not match the signature you provided.</Message></Error></Errors>"
        f"<RequestId>{REQUEST_ID}</RequestId></ErrorResponse>"
    )
    error = _translate(_client_error("403", body, 403, "ListKeys"))
    assert isinstance(error, ProviderAccessDenied)
    assert "SignatureDoesNotMatch: The request signature we calculated" in error.message
    assert "credentialsRef" in error.message
    assert "<" not in error.message
    assert REQUEST_ID not in error.message


@pytest.mark.parametrize(
    "sdk_error",
    [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9/"),
        ConnectTimeoutError(endpoint_url="https://kms.eu-west-1.amazonaws.com/"),
        ReadTimeoutError(endpoint_url="https://kms.eu-west-1.amazonaws.com/"),
    ],
)
def test_connection_failures_are_unavailable(sdk_error: BotoCoreError) -> None:
    error = _translate(sdk_error)
    assert isinstance(error, ProviderUnavailable)
    assert "spec.awsKms.endpoint" in error.message


def test_missing_credentials_are_access_denied_and_name_the_fix() -> None:
    error = _translate(NoCredentialsError())
    assert isinstance(error, ProviderAccessDenied)
    assert "credentialsRef" in error.message


def test_sdk_exception_is_not_chained_into_the_raised_error() -> None:
    with (
        pytest.raises(ProviderThrottled) as raised,
        translated_errors(where=WHERE, target=REF, secrets=(SECRET,)),
    ):
        raise _client_error("ThrottlingException", f"slow down {SECRET}")
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__
    assert SECRET not in str(raised.value)


# -- spec mistakes refused before any call to AWS ------------------------------


def _config(options: dict[str, object], credentials: dict[str, str]) -> BackendConfig:
    return BackendConfig("aws-prod", "awsKms", options, credentials)


@pytest.mark.parametrize(
    ("options", "credentials", "names"),
    [
        ({}, {}, "spec.awsKms.region"),
        ({"region": "eu-west-1", "endpoint": "kms.local:4566"}, {}, "spec.awsKms.endpoint"),
        ({"region": "eu-west-1"}, {"accessKeyId": ACCESS_KEY_ID}, "secretAccessKey"),
        ({"region": "eu-west-1"}, {"sessionToken": "t" * 20}, "accessKeyId"),
    ],
)
def test_unusable_spec_is_invalid(
    options: dict[str, object], credentials: dict[str, str], names: str
) -> None:
    with pytest.raises(InvalidSpec, match=re.escape(names)) as raised:
        open_aws_kms_backend(_config(options, credentials), Settings())
    assert "aws-prod" in raised.value.message


def test_deletion_window_outside_aws_bounds_is_invalid_spec() -> None:
    backend = AwsKmsBackend(region="eu-west-1", endpoint="http://127.0.0.1:9")
    for days in (6, 31):
        with pytest.raises(InvalidSpec, match=r"spec\.deletionWindowDays .* 7-30 days"):
            backend.schedule_deletion(REF, days)
    backend.close()


def test_algorithm_other_than_aes_gcm_is_invalid_spec() -> None:
    backend = AwsKmsBackend(region="eu-west-1", endpoint="http://127.0.0.1:9")
    request = KeyVersionRequest("acme", "phi", 1, "ChaCha20", "uid.v1")
    with pytest.raises(InvalidSpec, match=r"spec\.algorithm"):
        backend.create_key_version(request)
    backend.close()


def test_alias_too_long_for_aws_is_invalid_spec() -> None:
    with pytest.raises(InvalidSpec, match=r"shorten spec\.keyName"):
        primary_alias("t" * 63, "k" * 200)


_AWS_ALIAS = re.compile(r"^alias/[a-zA-Z0-9/_-]+$")  # AWS's pattern without ':', which it refuses
_KEY_NAMES = st.from_regex(r"[A-Za-z0-9_.-]{1,40}", fullmatch=True)


@given(st.lists(_KEY_NAMES, min_size=2, max_size=2, unique=True))
def test_aliases_are_valid_and_one_to_one(key_names: list[str]) -> None:
    one, other = (primary_alias("acme", name) for name in key_names)
    assert one != other
    assert _AWS_ALIAS.match(one)
    assert marker_alias(f"{key_names[0]}.v3") != marker_alias(f"{key_names[1]}.v3")
    assert _AWS_ALIAS.match(marker_alias(f"{key_names[0]}.v3"))
