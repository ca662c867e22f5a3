"""The Vault backend's pure parts: error mapping, key names and refs, the decryption floor.

Errors are synthetic hvac/requests exceptions, because a real server will not
throttle or fail on demand; the contract suite covers the real ones.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import hvac
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from keyledger.errors import (
    InvalidSpec,
    KmsKeyNotFound,
    ProviderAccessDenied,
    ProviderError,
    ProviderThrottled,
    ProviderUnavailable,
)
from keyledger.providers.base import BackendConfig
from keyledger.providers.vault.backend import VaultBackend, open_vault_backend
from keyledger.providers.vault.config import VaultAuth
from keyledger.providers.vault.errors import translate_error
from keyledger.providers.vault.names import TransitVersion, transit_key_name
from keyledger.providers.vault.session import VaultSession, _retrying_session
from keyledger.providers.vault.state import KeyState, VersionState, raised_floor
from keyledger.settings import Settings

TOKEN = "hvs.CAESIJ1mAbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
ADDRESS = "http://vault.example:8200"


def _vault_error(kind: type[hvac.exceptions.VaultError], *errors: str) -> Exception:
    error: Exception = kind(
        errors=list(errors) or None,
        method="post",
        url=f"{ADDRESS}/v1/kms/transit/datakey/plaintext/keyledger.acme.phi",
    )
    return error


def _translate(error: Exception) -> ProviderError:
    return translate_error(error, action="doing it", address=ADDRESS, secrets=[TOKEN])


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_vault_error(hvac.exceptions.Forbidden, "permission denied"), ProviderAccessDenied),
        (_vault_error(hvac.exceptions.Unauthorized, "missing client token"), ProviderAccessDenied),
        (
            _vault_error(
                hvac.exceptions.RateLimitExceeded, "request path: rate limit quota exceeded"
            ),
            ProviderThrottled,
        ),
        (_vault_error(hvac.exceptions.VaultDown, "Vault is sealed"), ProviderUnavailable),
        (_vault_error(hvac.exceptions.InternalServerError, "internal error"), ProviderUnavailable),
        (_vault_error(hvac.exceptions.BadGateway), ProviderUnavailable),
        (requests.ConnectionError("Connection refused"), ProviderUnavailable),
        (requests.Timeout("read timed out"), ProviderUnavailable),
        (_vault_error(hvac.exceptions.InvalidPath), KmsKeyNotFound),
        (_vault_error(hvac.exceptions.InvalidRequest, "invalid ciphertext length"), ProviderError),
    ],
    ids=lambda v: type(v).__name__,
)
def test_each_kind_of_failure_maps_to_its_error(error: Exception, expected: type) -> None:
    mapped = _translate(error)
    assert type(mapped) is expected
    assert ADDRESS in mapped.message and "doing it" in mapped.message


def test_throttling_is_retryable_and_access_denied_is_not() -> None:
    assert _translate(_vault_error(hvac.exceptions.RateLimitExceeded)).retryable
    assert not _translate(_vault_error(hvac.exceptions.Forbidden)).retryable


def test_missing_mount_is_told_apart_from_a_missing_key() -> None:
    mapped = _translate(
        _vault_error(hvac.exceptions.InvalidPath, 'no handler for route "nomount/keys/x"')
    )
    assert isinstance(mapped, KmsKeyNotFound)
    assert mapped.reason == "VaultMountNotFound"
    assert "spec.vault.mount" in mapped.message
    assert _translate(_vault_error(hvac.exceptions.InvalidPath)).reason == "KmsKeyNotFound"


def test_token_and_request_ids_never_reach_the_message() -> None:
    leaky = hvac.exceptions.Forbidden(
        errors=[f"permission denied for token={TOKEN} request-id: 8d3c-11aa-beef"],
        method="get",
        url=f"{ADDRESS}/v1/auth/token/lookup?token={TOKEN}",
    )
    mapped = _translate(leaky)
    assert TOKEN not in mapped.message
    assert "8d3c-11aa-beef" not in mapped.message
    assert "permission denied" in mapped.message


def test_session_raises_without_chaining_the_sdk_error() -> None:
    session = VaultSession(ADDRESS, VaultAuth("token", token=TOKEN))

    def refused(_client: object) -> None:
        raise hvac.exceptions.Forbidden(errors=[f"bad token {TOKEN}"], method="get", url=ADDRESS)

    with pytest.raises(ProviderAccessDenied) as raised:
        session.call("reading a key", refused)
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__
    assert TOKEN not in str(raised.value)
    assert TOKEN not in repr(VaultAuth("token", token=TOKEN))


def test_unreadable_service_account_token_names_the_option(tmp_path: Path) -> None:
    auth = VaultAuth("kubernetes", role="keyledger", token_path=tmp_path / "missing")
    session = VaultSession(ADDRESS, auth)
    with pytest.raises(ProviderAccessDenied, match=r"spec\.vault\.auth\.tokenPath") as raised:
        session.call("reading a key", lambda _client: None)
    assert raised.value.reason == "ServiceAccountTokenUnreadable"


# -- key names and refs -----------------------------------------------------------

_TRANSIT_NAME = re.compile(r"^\w(([\w.-]+)?\w)?$")  # transit's GenericNameRegex
_tenants = st.from_regex(r"^[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?$", fullmatch=True)
_key_names = st.from_regex(r"^[A-Za-z0-9_.-]{1,12}$", fullmatch=True)


@given(_tenants, _key_names, _tenants, _key_names)
def test_transit_names_are_valid_and_one_to_one(
    tenant: str, key_name: str, other_tenant: str, other_key_name: str
) -> None:
    name = transit_key_name(tenant, key_name)
    assert _TRANSIT_NAME.match(name) and "/" not in name
    same_input = (tenant, key_name) == (other_tenant, other_key_name)
    assert (name == transit_key_name(other_tenant, other_key_name)) == same_input


def test_transit_names_read_well() -> None:
    assert transit_key_name("acme", "phi_encryption_key") == "keyledger.acme.phi_encryption_key"
    assert transit_key_name("acme", "phi-") == "keyledger.acme.phi-_"
    assert transit_key_name("acme", "phi-_") == "keyledger.acme.phi-__"
    with pytest.raises(InvalidSpec):
        transit_key_name("Acme/..", "phi")


def test_refs_name_mount_key_and_version() -> None:
    ref = TransitVersion("kms/transit", "keyledger.acme.phi", 3).ref
    assert ref == "vault:kms/transit/keyledger.acme.phi#3"
    assert len(TransitVersion("m" * 100, transit_key_name("a" * 63, "k" * 200), 10**6).ref) < 512


# -- the decryption floor ------------------------------------------------------------


def _state(*refused: int) -> KeyState:
    return KeyState(versions={n: VersionState(disabled=True) for n in refused})


@pytest.mark.parametrize(
    ("refused", "current", "latest", "floor"),
    [
        ((), 1, 3, 1),  # nothing refused
        ((1,), 1, 3, 2),  # the oldest: transit can block it for every client
        ((1, 2), 1, 3, 3),
        ((2,), 1, 3, 1),  # a middle version: only keyledger's own check refuses it
        ((1, 2, 3), 1, 3, 3),  # never past the latest version (transit refuses that)
        ((1,), 1, 1, 1),  # the only version
        ((), 2, 3, 2),  # an admin's floor is never lowered here
        ((3,), 2, 4, 2),
        ((2, 3), 2, 4, 4),
    ],
)
def test_floor_blocks_exactly_the_oldest_refused_run(
    refused: tuple[int, ...], current: int, latest: int, floor: int
) -> None:
    assert raised_floor(_state(*refused), current=current, latest=latest) == floor


def test_scheduled_deletion_counts_as_refused() -> None:
    state = KeyState(versions={1: VersionState(deletion_date=datetime.now(UTC))})
    assert raised_floor(state, current=1, latest=2) == 2


# -- configuration ---------------------------------------------------------------------


def _open(options: dict[str, object], credentials: dict[str, str] | None = None) -> VaultBackend:
    config = BackendConfig("p", "vault", options, credentials or {})
    backend = open_vault_backend(config, Settings())
    assert isinstance(backend, VaultBackend)
    return backend


@pytest.mark.parametrize(
    ("options", "credentials", "field"),
    [
        ({"address": "vault:8200"}, {"token": "t"}, "spec.vault.address"),
        ({"address": ADDRESS}, {}, "key `token`"),
        ({"address": ADDRESS, "auth": {"method": "kubernetes"}}, {}, "spec.vault.auth.role"),
        ({"address": ADDRESS, "auth": {"method": "ldap"}}, {}, "spec.vault.auth.method"),
        ({"address": ADDRESS, "mount": "transit#1"}, {"token": "t"}, "spec.vault.mount"),
        ({"address": ADDRESS, "statePath": "a/../b"}, {"token": "t"}, "spec.vault.statePath"),
    ],
)
def test_bad_configuration_names_the_field(
    options: dict[str, object], credentials: dict[str, str], field: str
) -> None:
    with pytest.raises(InvalidSpec, match=re.escape(field)):
        _open(options, credentials)


def test_defaults() -> None:
    backend = _open({"address": ADDRESS + "/"}, {"token": TOKEN})
    assert backend.mount == "transit"
    assert backend.state.mount == "secret"
    assert backend.endpoint == ADDRESS


def test_throttled_calls_are_retried_and_unsafe_repeats_are_not() -> None:
    from keyledger.providers.vault.session import VaultRetry  # noqa: PLC0415

    retry = VaultRetry(
        total=3, status_forcelist=(502, 503, 504), allowed_methods=frozenset({"GET"})
    )
    assert retry.is_retry("POST", 429)  # rate limited: Vault did nothing
    assert retry.is_retry("GET", 503)
    assert not retry.is_retry("POST", 503)  # a rotate may have happened
    assert not retry.is_retry("POST", 500)


def test_the_session_reads_proxies_and_ca_bundle_from_the_environment_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not read here")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    session = _retrying_session("https://vault.example:8200")
    monkeypatch.setenv("HTTPS_PROXY", "http://elsewhere:1")  # not re-read per call
    assert session.trust_env is False
    assert session.proxies["https"] == "http://proxy.internal:3128"
    assert session.verify == str(bundle)

    monkeypatch.setenv("NO_PROXY", "vault.example")
    assert "https" not in _retrying_session("https://vault.example:8200").proxies
