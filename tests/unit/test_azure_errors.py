"""Azure Key Vault errors as keyledger sees them: SDK failures mapped, secrets and ids
stripped, and the spec mistakes the azureKeyVault backend refuses before calling Azure;
plus the pure naming rules (key names, refs, tags).

The SDK exceptions are built by hand because real servers do not throttle, fail
or firewall on demand; the contract suite covers the real ones.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import ClientSecretCredential, CredentialUnavailableError
from hypothesis import given
from hypothesis import strategies as st

from keyledger.errors import (
    KEY_DISABLED,
    InvalidSpec,
    KmsKeyNotFound,
    ProviderAccessDenied,
    ProviderError,
    ProviderThrottled,
    ProviderUnavailable,
)
from keyledger.providers.azure.backend import AzureKeyVaultBackend, open_azure_key_vault_backend
from keyledger.providers.azure.config import AzureKeyVaultOptions
from keyledger.providers.azure.errors import (
    KEY_NAME_DELETED,
    REQUEST_REJECTED,
    translate_error,
    translated_errors,
)
from keyledger.providers.azure.names import (
    MAX_KEY_NAME_LENGTH,
    MAX_TAGS,
    KeyVersionId,
    vault_key_name,
    version_tags,
)
from keyledger.providers.base import BackendConfig, KeyVersionRequest
from keyledger.settings import Settings

SECRET = "Xq8Q~s3cr3t.V4lue-0f_the~Cl1entSecret"
REQUEST_ID = "3f2c1e0a-9b8d-4c7e-a6f5-0123456789ab"
VAULT = "https://contoso-kv.vault.azure.net"
REF = f"{VAULT}/keys/keyledger-acme-phi-0123456789abcdef/4387e9f3d6e14c459867679a90fd0f79"
WHERE = f"Azure Key Vault {VAULT}"


class _Response:
    """The part of an azure-core HTTP response that HttpResponseError reads."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status_code = status
        self.reason = "reason"
        self.request = f"POST {VAULT}/keys/phi/wrapkey"
        self.headers = {"x-ms-request-id": REQUEST_ID}
        self.content_type = "application/json"
        self._text = json.dumps(body)

    def text(self, encoding: str | None = None) -> str:
        return self._text

    def body(self) -> bytes:
        return self._text.encode()


def _http_error(
    status: int,
    code: str,
    message: str,
    inner: str | None = None,
    kind: type[HttpResponseError] = HttpResponseError,
) -> HttpResponseError:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return kind(response=_Response(status, {"error": error}))


def _translate(error: AzureError) -> ProviderError:
    return translate_error(error, where=WHERE, operation="WrapKey", target=REF, secrets=(SECRET,))


@pytest.mark.parametrize(
    ("error", "expected", "reason"),
    [
        (
            _http_error(429, "Throttled", "Request was not processed because too many requests"),
            ProviderThrottled,
            "ProviderThrottled",
        ),
        (
            _http_error(403, "Forbidden", "Caller is not authorized", "ForbiddenByRbac"),
            ProviderAccessDenied,
            "ProviderAccessDenied",
        ),
        (
            _http_error(403, "Forbidden", "Operation wrapKey is not allowed", "KeyDisabled"),
            ProviderError,
            KEY_DISABLED,
        ),
        (
            _http_error(
                401, "Unauthorized", "AKV10032: Invalid issuer", None, ClientAuthenticationError
            ),
            ProviderAccessDenied,
            "ProviderAccessDenied",
        ),
        (
            _http_error(
                404,
                "KeyNotFound",
                "A key with (name/id) x was not found",
                None,
                ResourceNotFoundError,
            ),
            KmsKeyNotFound,
            "KmsKeyNotFound",
        ),
        (
            _http_error(
                409,
                "Conflict",
                "Key is deleted but recoverable",
                "ObjectIsDeletedButRecoverable",
                ResourceExistsError,
            ),
            ProviderError,
            KEY_NAME_DELETED,
        ),
        (
            _http_error(500, "InternalServerError", "oops"),
            ProviderUnavailable,
            "ProviderUnavailable",
        ),
        (
            _http_error(503, "ServiceUnavailable", "busy"),
            ProviderUnavailable,
            "ProviderUnavailable",
        ),
        (_http_error(400, "BadParameter", "Bad Request"), ProviderError, REQUEST_REJECTED),
    ],
)
def test_service_errors_map_to_their_kind(
    error: HttpResponseError, expected: type[ProviderError], reason: str
) -> None:
    translated = _translate(error)
    assert type(translated) is expected
    assert translated.reason == reason
    assert "WrapKey" in translated.message
    assert REF in translated.message
    assert error.error is not None and error.error.code is not None
    assert error.error.code in translated.message


def test_throttling_is_retryable_and_access_denial_is_not() -> None:
    assert _translate(_http_error(429, "Throttled", "slow down")).retryable
    assert not _translate(_http_error(403, "Forbidden", "no", "ForbiddenByRbac")).retryable


def test_access_denial_names_the_fix() -> None:
    rbac = _translate(_http_error(403, "Forbidden", "no", "ForbiddenByRbac"))
    assert "Key Vault Crypto Officer" in rbac.message
    assert "wrapKey, unwrapKey" in rbac.message
    firewall = _translate(
        _http_error(403, "Forbidden", "Client address is not authorized", "ForbiddenByFirewall")
    )
    assert isinstance(firewall, ProviderAccessDenied)
    assert "firewall" in firewall.message


def test_entra_refusal_is_access_denied_without_secret_or_ids() -> None:
    """azure-identity's message for a wrong client secret, as Entra phrases it."""
    trace, correlation = uuid.uuid4(), uuid.uuid4()
    error = ClientAuthenticationError(
        message="Authentication failed: AADSTS7000215: Invalid client secret provided. "
        f"Trace ID: {trace} Correlation ID: {correlation} Timestamp: 2026-11-29 05:21:54Z "
        f"(client_secret={SECRET})",
    )
    translated = _translate(error)
    assert isinstance(translated, ProviderAccessDenied)
    assert "AADSTS7000215" in translated.message
    assert "credentialsRef" in translated.message
    text = f"{translated} {translated.args!r}"
    for leak in (SECRET, str(trace), str(correlation)):
        assert leak not in text


def test_no_credential_found_is_access_denied() -> None:
    error = CredentialUnavailableError(message="DefaultAzureCredential failed to retrieve a token")
    translated = _translate(error)
    assert isinstance(translated, ProviderAccessDenied)
    assert "workload identity" in translated.message


def test_secrets_and_request_ids_are_stripped_from_service_messages() -> None:
    leaky = f"Bearer eyJ0eXAiOiJKV1QiLCJhbGciOi.sig x-ms-request-id: {REQUEST_ID} secret={SECRET}"
    for status in (400, 403, 429, 500):
        translated = _translate(_http_error(status, "Code", leaky))
        text = f"{translated} {translated.args!r}"
        assert SECRET not in text
        assert REQUEST_ID not in text
        assert "eyJ0eXAiOiJKV1QiLCJhbGciOi" not in text


@pytest.mark.parametrize(
    "sdk_error",
    [
        ServiceRequestError("Failed to establish a new connection: [Errno 111] Connection refused"),
        ServiceResponseError("Connection aborted: RemoteDisconnected"),
    ],
)
def test_connection_failures_are_unavailable(sdk_error: AzureError) -> None:
    translated = _translate(sdk_error)
    assert isinstance(translated, ProviderUnavailable)
    assert "spec.azureKeyVault.vaultUrl" in translated.message


def test_sdk_exception_is_not_chained_into_the_raised_error() -> None:
    with (
        pytest.raises(ProviderThrottled) as raised,
        translated_errors(where=WHERE, operation="GetKey", target=REF, secrets=(SECRET,)),
    ):
        raise _http_error(429, "Throttled", f"slow down {SECRET}")
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__
    assert SECRET not in str(raised.value)


def test_challenge_for_another_domain_is_refused_and_other_value_errors_pass() -> None:
    with (
        pytest.raises(ProviderAccessDenied, match="vaultUrl"),
        translated_errors(where=WHERE, operation="GetKey", target=None, secrets=()),
    ):
        raise ValueError(
            "The challenge resource 'evil.example' does not match the requested domain."
        )
    with (
        pytest.raises(ValueError, match="unrelated"),
        translated_errors(where=WHERE, operation="GetKey", target=None, secrets=()),
    ):
        raise ValueError("unrelated")


# -- spec mistakes refused before any call to Azure --------------------------------


def _config(options: dict[str, object], credentials: dict[str, str] | None = None) -> BackendConfig:
    return BackendConfig("azure-prod", "azureKeyVault", options, credentials or {})


@pytest.mark.parametrize(
    ("options", "credentials", "names"),
    [
        ({}, {}, "spec.azureKeyVault.vaultUrl"),
        ({"vaultUrl": "http://contoso-kv.vault.azure.net"}, {}, "spec.azureKeyVault.vaultUrl"),
        ({"vaultUrl": f"{VAULT}/keys/x"}, {}, "spec.azureKeyVault.vaultUrl"),
        ({"vaultUrl": VAULT, "keyType": "EC"}, {}, "spec.azureKeyVault.keyType"),
        ({"vaultUrl": VAULT, "authorityHost": "login.example"}, {}, "authorityHost"),
        ({"vaultUrl": VAULT}, {"tenantId": "t", "clientId": "c"}, "clientSecret"),
        ({"vaultUrl": VAULT}, {"clientSecret": SECRET}, "tenantId, clientId"),
        (
            {"vaultUrl": VAULT},
            {"tenantId": "not a tenant!", "clientId": "c", "clientSecret": SECRET},
            "tenantId",
        ),
    ],
)
def test_unusable_spec_is_invalid(
    options: dict[str, object], credentials: dict[str, str], names: str
) -> None:
    with pytest.raises(InvalidSpec, match=re.escape(names)) as raised:
        open_azure_key_vault_backend(_config(options, credentials), Settings())
    assert "azure-prod" in raised.value.message
    assert SECRET not in f"{raised.value} {raised.value.args!r}"


class _FixedToken:
    """A credential that never calls Entra: the tests below fail before any request."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("never-sent", 0)


def _offline_backend() -> AzureKeyVaultBackend:
    return AzureKeyVaultBackend(
        AzureKeyVaultOptions("https://127.0.0.1:9", "RSA", None),
        _FixedToken(),
    )


def test_algorithm_other_than_aes_gcm_is_invalid_spec() -> None:
    backend = _offline_backend()
    with pytest.raises(InvalidSpec, match=r"spec\.algorithm"):
        backend.create_key_version(KeyVersionRequest("acme", "phi", 1, "ChaCha20", "uid.v1"))
    backend.close()


def test_deletion_window_below_one_day_is_invalid_spec() -> None:
    backend = _offline_backend()
    with pytest.raises(InvalidSpec, match=r"spec\.deletionWindowDays"):
        backend.schedule_deletion("https://127.0.0.1:9/keys/k/abc", 0)
    backend.close()


def test_secret_credentials_make_a_client_secret_credential() -> None:
    backend = open_azure_key_vault_backend(
        _config(
            {"vaultUrl": VAULT},
            {"tenantId": str(uuid.uuid4()), "clientId": "c", "clientSecret": SECRET},
        ),
        Settings(),
    )
    assert isinstance(backend._credential, ClientSecretCredential)
    assert SECRET not in repr(backend)
    backend.close()


# -- names, refs, tags -------------------------------------------------------------

_AKV_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_KEY_NAMES = st.from_regex(r"[A-Za-z0-9_.-]{1,200}", fullmatch=True)
_TENANTS = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True)


@given(_TENANTS, st.lists(_KEY_NAMES, min_size=2, max_size=2, unique=True))
def test_key_names_are_valid_and_one_to_one(tenant: str, key_names: list[str]) -> None:
    one, other = (vault_key_name(tenant, name) for name in key_names)
    assert _AKV_NAME.match(one) and _AKV_NAME.match(other)
    assert len(one) <= MAX_KEY_NAME_LENGTH
    # Key Vault compares names case-insensitively: "PHI" and "phi" must differ anyway.
    assert one.lower() != other.lower()


def test_key_names_differ_by_case_of_key_name() -> None:
    assert vault_key_name("acme", "PHI").lower() != vault_key_name("acme", "phi").lower()
    assert vault_key_name("acme", "phi_key").startswith("keyledger-acme-phi-key-")


def test_unusable_tenant_or_key_name_is_invalid_spec() -> None:
    with pytest.raises(InvalidSpec):
        vault_key_name("Acme Corp", "phi")
    with pytest.raises(InvalidSpec):
        vault_key_name("acme", "phi/key")


def test_version_tags_fit_key_vaults_limit_and_ours_win() -> None:
    labels = {f"label-{i}": "x" for i in range(30)} | {"keyledger-marker": "forged"}
    tags = version_tags(KeyVersionRequest("acme", "phi", 3, "AES-256-GCM", "uid.v3", labels))
    assert len(tags) < MAX_TAGS  # room for the deletion date
    assert tags["keyledger-marker"] == "uid.v3"
    assert tags["keyledger-version"] == "3"


@pytest.mark.parametrize(
    "ref",
    [
        "https://other-kv.vault.azure.net/keys/k/4387e9f3d6e14c459867679a90fd0f79",
        f"{VAULT}/keys/k",
        f"{VAULT}/secrets/k/4387e9f3d6e14c459867679a90fd0f79",
        f"{VAULT}/keys/k/4387e9f3d6e14c459867679a90fd0f79?api-version=7.5",
        "arn:aws:kms:eu-west-1:111122223333:key/1234",
    ],
)
def test_refs_of_other_vaults_or_shapes_are_not_found(ref: str) -> None:
    with pytest.raises(KmsKeyNotFound):
        KeyVersionId.parse(ref, VAULT)


def test_ref_parsing_tolerates_host_case_and_default_port() -> None:
    ref = "https://Contoso-KV.vault.azure.net:443/keys/k-1/4387e9f3d6e14c459867679a90fd0f79"
    parsed = KeyVersionId.parse(ref, VAULT + "/")
    assert (parsed.name, parsed.version) == ("k-1", "4387e9f3d6e14c459867679a90fd0f79")
