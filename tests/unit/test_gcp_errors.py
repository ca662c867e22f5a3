"""GCP Cloud KMS errors as keyledger sees them: SDK failures mapped, secrets and ids
stripped; the spec and credential mistakes the gcpKms backend refuses before any
call; the names, labels and wrapped form it relies on.

The SDK exceptions are built by hand because the emulator does not throttle,
authenticate or time out on demand.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import google.auth
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.api_core import exceptions as api
from google.auth import exceptions as auth
from google.cloud import kms_v1
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
from keyledger.providers.base import BackendConfig, KmsKeyState
from keyledger.providers.gcp.backend import GcpKmsBackend, _kms_key, open_gcp_kms_backend
from keyledger.providers.gcp.errors import (
    DATA_KEY_NOT_WRAPPED_BY_VERSION,
    OPERATION_UNSUPPORTED,
    REQUEST_REJECTED,
    RESOURCE_EXISTS,
    translate_error,
    translated_errors,
)
from keyledger.providers.gcp.names import (
    VersionRef,
    crypto_key_id,
    key_ring_id,
    marker_label,
)
from keyledger.providers.gcp.wrapping import unwrap_envelope, wrap_envelope
from keyledger.settings import Settings

PRIVATE_KEY_LINE = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"
PRIVATE_KEY_ID = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
REQUEST_ID = "f3b2a1c0-1234-4abc-9def-0123456789ab"
WHERE = "GCP Cloud KMS in projects/acme-prod/locations/europe-west1"
KEY = "projects/acme-prod/locations/europe-west1/keyRings/keyledger-acme/cryptoKeys/phi"
REF = f"{KEY}/cryptoKeyVersions/3"


def _translate(error: Exception, *, invalid_argument_reason: str | None = None) -> ProviderError:
    return translate_error(
        error,
        where=WHERE,
        operation="Decrypt",
        target=REF,
        secrets=(PRIVATE_KEY_LINE, PRIVATE_KEY_ID),
        invalid_argument_reason=invalid_argument_reason,
    )


@pytest.mark.parametrize(
    ("error", "expected", "reason"),
    [
        (api.ResourceExhausted("Quota exceeded"), ProviderThrottled, "ProviderThrottled"),
        (api.TooManyRequests("slow down"), ProviderThrottled, "ProviderThrottled"),
        (api.PermissionDenied("Permission denied"), ProviderAccessDenied, "ProviderAccessDenied"),
        (api.Unauthenticated("invalid token"), ProviderAccessDenied, "ProviderAccessDenied"),
        (api.NotFound("CryptoKey not found"), KmsKeyNotFound, "KmsKeyNotFound"),
        (api.FailedPrecondition("is not enabled"), ProviderError, KEY_DISABLED),
        (api.AlreadyExists("exists"), ProviderError, RESOURCE_EXISTS),
        (api.MethodNotImplemented("not implemented"), ProviderError, OPERATION_UNSUPPORTED),
        (api.ServiceUnavailable("failed to connect"), ProviderUnavailable, "ProviderUnavailable"),
        (api.DeadlineExceeded("deadline"), ProviderUnavailable, "ProviderUnavailable"),
        (api.InternalServerError("internal"), ProviderUnavailable, "ProviderUnavailable"),
        (api.InvalidArgument("bad request"), ProviderError, REQUEST_REJECTED),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None,
)
def test_api_errors_map_to_their_kind(
    error: Exception, expected: type[ProviderError], reason: str
) -> None:
    mapped = _translate(error)
    assert type(mapped) is expected
    assert mapped.reason == reason
    assert "Decrypt" in mapped.message
    assert REF in mapped.message
    assert WHERE in mapped.message


def test_throttling_is_retryable_and_access_denial_is_not() -> None:
    assert _translate(api.ResourceExhausted("Quota exceeded")).retryable
    assert not _translate(api.PermissionDenied("no")).retryable


def test_invalid_argument_on_decrypt_means_not_wrapped_by_this_version() -> None:
    mapped = _translate(
        api.InvalidArgument("Decryption failed"),
        invalid_argument_reason=DATA_KEY_NOT_WRAPPED_BY_VERSION,
    )
    assert mapped.reason == DATA_KEY_NOT_WRAPPED_BY_VERSION


def test_retry_error_is_judged_by_its_last_cause() -> None:
    timed_out = api.RetryError("Timeout of 5.0s exceeded", api.ServiceUnavailable("refused"))
    assert isinstance(_translate(timed_out), ProviderUnavailable)
    denied = api.RetryError("Timeout of 5.0s exceeded", api.PermissionDenied("no"))
    assert isinstance(_translate(denied), ProviderAccessDenied)
    assert isinstance(_translate(api.RetryError("Timeout", None)), ProviderUnavailable)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (auth.RefreshError("invalid_grant: Invalid JWT Signature."), ProviderAccessDenied),
        (auth.DefaultCredentialsError("not found"), ProviderAccessDenied),
        (auth.TransportError("connection reset"), ProviderUnavailable),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None,
)
def test_credential_failures_map_and_name_the_fix(error: Exception, expected: type) -> None:
    mapped = _translate(error)
    assert type(mapped) is expected
    if expected is ProviderAccessDenied:
        assert "serviceAccountJson" in mapped.message


def test_secrets_and_request_ids_are_stripped_from_messages() -> None:
    leaky = (
        f"key {PRIVATE_KEY_LINE} id={PRIVATE_KEY_ID} request_id: {REQUEST_ID} "
        f"token={PRIVATE_KEY_ID}"
    )
    for error in (
        api.PermissionDenied(leaky),
        api.ResourceExhausted(leaky),
        api.InvalidArgument(leaky),
        auth.RefreshError(leaky),
        api.RetryError(leaky, api.ServiceUnavailable(leaky)),
    ):
        mapped = _translate(error)
        text = f"{mapped} {mapped.args!r}"
        assert PRIVATE_KEY_LINE not in text
        assert PRIVATE_KEY_ID not in text
        assert REQUEST_ID not in text


def test_resource_names_survive_scrubbing_but_secrets_inside_them_do_not() -> None:
    mapped = _translate(api.NotFound(f"crypto key not found: {REF} (request_id: {REQUEST_ID})"))
    assert f"crypto key not found: {REF}" in mapped.message
    assert REQUEST_ID not in mapped.message
    mapped = _translate(api.NotFound(f"no key projects/p/locations/l/keys/{PRIVATE_KEY_LINE}"))
    assert PRIVATE_KEY_LINE not in mapped.message


def test_status_details_are_not_copied_into_the_message() -> None:
    error = api.PermissionDenied("denied", details=[f"RequestInfo(request_id={REQUEST_ID})"])
    assert REQUEST_ID not in _translate(error).message


def test_sdk_exception_is_not_chained_into_the_raised_error() -> None:
    with (
        pytest.raises(ProviderThrottled) as raised,
        translated_errors(
            where=WHERE, operation="Encrypt", target=REF, secrets=(PRIVATE_KEY_LINE,)
        ),
    ):
        raise api.ResourceExhausted(f"slow down {PRIVATE_KEY_LINE}")
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__
    assert PRIVATE_KEY_LINE not in str(raised.value)


# -- spec and credential mistakes refused before any call ----------------------

EMULATOR = {"project": "p", "location": "global", "endpoint": "127.0.0.1:9", "insecure": True}


def _open(options: dict[str, object], credentials: dict[str, str] | None = None) -> GcpKmsBackend:
    config = BackendConfig("gcp-prod", "gcpKms", options, credentials or {})
    backend = open_gcp_kms_backend(config, Settings())
    assert isinstance(backend, GcpKmsBackend)
    return backend


@pytest.mark.parametrize(
    ("options", "credentials", "names"),
    [
        ({"location": "global"}, {}, "spec.gcpKms.project"),
        ({"project": "p"}, {}, "spec.gcpKms.location"),
        ({"project": "p/x", "location": "global"}, {}, "spec.gcpKms.project"),
        ({**EMULATOR, "endpoint": "http://127.0.0.1:9"}, {}, "spec.gcpKms.endpoint"),
        ({**EMULATOR, "endpoint": None}, {}, "spec.gcpKms.insecure"),
        (EMULATOR, {"serviceAccountJson": "{}"}, "credentialsRef"),
        ({**EMULATOR, "keyRing": "has spaces"}, {}, "spec.gcpKms.keyRing"),
        ({**EMULATOR, "destroyScheduledDays": 0}, {}, "destroyScheduledDays"),
        ({**EMULATOR, "destroyScheduledDays": 121}, {}, "destroyScheduledDays"),
        ({**EMULATOR, "destroyScheduledDays": True}, {}, "destroyScheduledDays"),
        ({"project": "p", "location": "global"}, {"token": "x"}, "serviceAccountJson"),
        ({"project": "p", "location": "global"}, {"serviceAccountJson": "{nope"}, "service-acc"),
        (
            {"project": "p", "location": "global"},
            {"serviceAccountJson": json.dumps({"type": "authorized_user"})},
            "service-account key file",
        ),
    ],
)
def test_unusable_spec_is_invalid(
    options: dict[str, object], credentials: dict[str, str], names: str
) -> None:
    with pytest.raises(InvalidSpec, match=re.escape(names)) as raised:
        _open(options, credentials)
    assert "gcp-prod" in raised.value.message


def _service_account(private_key: str) -> dict[str, str]:
    return {
        "type": "service_account",
        "project_id": "acme-prod",
        "private_key_id": PRIVATE_KEY_ID,
        "private_key": private_key,
        "client_email": "keyledger@acme-prod.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "https://oauth2.example.invalid/token",
    }


def test_unparsable_service_account_key_is_invalid_without_echoing_it() -> None:
    broken = f"-----BEGIN PRIVATE KEY-----\n{PRIVATE_KEY_LINE}\n-----END PRIVATE KEY-----\n"
    text = json.dumps(_service_account(broken))
    with pytest.raises(InvalidSpec) as raised:
        _open({"project": "p", "location": "global"}, {"serviceAccountJson": text})
    assert PRIVATE_KEY_LINE not in f"{raised.value} {raised.value.args!r}"
    assert raised.value.__cause__ is None


def test_service_account_key_is_accepted_and_kept_out_of_repr() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    backend = _open(
        {"project": "acme-prod", "location": "europe-west1"},
        {"serviceAccountJson": json.dumps(_service_account(pem))},
    )
    assert PRIVATE_KEY_ID not in repr(backend)
    backend.close()


def test_missing_application_default_credentials_are_access_denied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_credentials(**_: object) -> None:
        raise auth.DefaultCredentialsError("Your default credentials were not found.")

    # Patched: the real lookup would ask a cloud metadata server over the network.
    monkeypatch.setattr(google.auth, "default", no_credentials)
    with pytest.raises(ProviderAccessDenied, match="credentialsRef"):
        _open({"project": "p", "location": "global"})


def test_destroy_scheduled_days_sets_the_duration_new_crypto_keys_get() -> None:
    backend = _open({**EMULATOR, "destroyScheduledDays": 7})
    assert backend.options.destroy_scheduled == timedelta(days=7)
    backend.close()


# -- names, labels, refs and the wrapped form ------------------------------------

_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_GCP_ID = re.compile(r"^[a-zA-Z0-9_-]{1,63}$")
_KEY_NAMES = st.from_regex(r"[A-Za-z0-9_.-]{1,200}", fullmatch=True)
_TENANTS = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True)


@given(st.lists(_KEY_NAMES, min_size=2, max_size=2, unique=True), _TENANTS)
def test_crypto_key_ids_are_valid_and_one_to_one(key_names: list[str], tenant: str) -> None:
    for shared in (False, True):
        one, other = (crypto_key_id(tenant, name, shared_ring=shared) for name in key_names)
        assert one != other
        assert _GCP_ID.match(one) and _GCP_ID.match(other)
    assert _GCP_ID.match(key_ring_id(tenant, None))


@given(st.uuids(), st.integers(1, 10**6), st.text(min_size=1, max_size=300))
def test_marker_labels_are_valid_label_keys(uuid: object, version: int, other: str) -> None:
    readable = marker_label(f"{uuid}.v{version}")
    assert readable.endswith(f"{uuid}_v{version}")
    for label in (readable, marker_label(other)):
        assert _LABEL_KEY.match(label)
    assert marker_label(f"{uuid}.v{version}") != marker_label(f"{uuid}.v{version + 1}")


def test_refs_parse_and_foreign_refs_are_not_found() -> None:
    assert VersionRef.parse(REF) == VersionRef(KEY, 3)
    assert VersionRef.parse(REF).ref == REF
    for foreign in (KEY, "arn:aws:kms:eu-west-1:1:key/x", f"{KEY}/cryptoKeyVersions/x"):
        with pytest.raises(KmsKeyNotFound):
            VersionRef.parse(foreign)


def test_wrapped_form_names_its_version() -> None:
    v3 = VersionRef(KEY, 3)
    wrapped = wrap_envelope(v3, b"ciphertext")
    assert unwrap_envelope(v3, wrapped, where=WHERE) == b"ciphertext"
    for ref, blob in ((VersionRef(KEY, 4), wrapped), (v3, b"ciphertext"), (v3, wrapped[:8])):
        with pytest.raises(ProviderError) as raised:
            unwrap_envelope(ref, blob, where=WHERE)
        assert raised.value.reason == DATA_KEY_NOT_WRAPPED_BY_VERSION


def test_version_states_map_to_kms_key_states() -> None:
    state = kms_v1.CryptoKeyVersion.CryptoKeyVersionState
    when = datetime(2030, 1, 1, tzinfo=UTC)
    expected = {
        state.ENABLED: KmsKeyState.ENABLED,
        state.DISABLED: KmsKeyState.DISABLED,
        state.DESTROY_SCHEDULED: KmsKeyState.PENDING_DELETION,
        state.DESTROYED: KmsKeyState.MISSING,
        state.PENDING_GENERATION: KmsKeyState.DISABLED,
    }
    for gcp_state, kms_state in expected.items():
        version = kms_v1.CryptoKeyVersion(name=REF, state=gcp_state, destroy_time=when)
        described = _kms_key(REF, version)
        assert described.state is kms_state
        pending = kms_state is KmsKeyState.PENDING_DELETION
        assert described.deletion_date == (when if pending else None)
