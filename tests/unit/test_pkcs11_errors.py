"""How PKCS#11 failures become keyledger errors, with synthetic python-pkcs11 exceptions.

The shared-login rules (one PIN per token and process, a rejected PIN never
retried, a forgotten session reopened once) are checked with fake sessions:
no HSM needed. The contract suite covers the same backend against SoftHSM.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import pytest
from pkcs11 import exceptions as ckr

from keyledger.errors import (
    InvalidSpec,
    KeyledgerError,
    KmsKeyNotFound,
    ProviderAccessDenied,
    ProviderError,
    ProviderThrottled,
    ProviderUnavailable,
)
from keyledger.providers.base import BackendConfig
from keyledger.providers.pkcs11.backend import open_pkcs11_backend
from keyledger.providers.pkcs11.errors import translate_error, translate_module_error
from keyledger.providers.pkcs11.names import VersionRef, version_ref
from keyledger.providers.pkcs11.session import Caller, Pkcs11Module, TokenLogin
from keyledger.settings import Settings

PIN = "4711-0815-secret"
OTHER_PIN = "9999-0000-other"
MODULE = "/opt/hsm/lib/libvendorpkcs11.so"
TOKEN = "tenant-keys"
REQUEST_ID = "request-id: 7f3c9a2e-41b6-4c1e-9f0d-2b8e6a1c5d3f"


def _map(exc: ckr.PKCS11Error) -> KeyledgerError:
    return translate_error(
        exc,
        action="create a key version",
        provider_name="hsm",
        token_label=TOKEN,
        module_path=MODULE,
        pin=PIN,
    )


@pytest.mark.parametrize(
    ("exc", "expected", "reason"),
    [
        (ckr.PinIncorrect(), ProviderAccessDenied, "PinIncorrect"),
        (ckr.PinInvalid(), ProviderAccessDenied, "PinIncorrect"),
        (ckr.PinLenRange(), ProviderAccessDenied, "PinIncorrect"),
        (ckr.PinLocked(), ProviderAccessDenied, "PinUnusable"),
        (ckr.PinExpired(), ProviderAccessDenied, "PinUnusable"),
        (
            ckr.NoSuchToken(f"No token matching {{'token_label': '{TOKEN}'}}"),
            ProviderUnavailable,
            "TokenNotPresent",
        ),
        (ckr.TokenNotPresent(), ProviderUnavailable, "TokenNotPresent"),
        (ckr.DeviceRemoved(), ProviderUnavailable, "TokenNotPresent"),
        (ckr.MultipleTokensReturned("More than 1 token"), InvalidSpec, "InvalidSpec"),
        (ckr.DeviceError(), ProviderUnavailable, "ProviderUnavailable"),
        (ckr.DeviceMemory(), ProviderUnavailable, "ProviderUnavailable"),
        (ckr.SessionCount(), ProviderUnavailable, "ProviderUnavailable"),
        (ckr.SessionHandleInvalid(), ProviderUnavailable, "ProviderUnavailable"),
        (ckr.TokenWriteProtected(), ProviderError, "TokenWriteProtected"),
        (ckr.TemplateInconsistent(), ProviderError, "ProviderError"),
        (ckr.GeneralError(), ProviderError, "ProviderError"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_error_kinds_map_to_keyledger_errors(
    exc: ckr.PKCS11Error, expected: type[KeyledgerError], reason: str
) -> None:
    error = _map(exc)
    assert type(error) is expected
    assert error.reason == reason
    assert TOKEN in error.message


def test_access_denied_and_unavailable_say_what_to_fix() -> None:
    denied = _map(ckr.PinIncorrect())
    assert isinstance(denied, ProviderAccessDenied)
    assert "credentials Secret (key `pin`)" in denied.message
    assert not denied.retryable
    absent = _map(ckr.NoSuchToken())
    assert isinstance(absent, ProviderUnavailable)
    assert "spec.pkcs11.tokenLabel" in absent.message
    assert MODULE in absent.message
    assert absent.retryable
    assert "spec.pkcs11.tokenLabel" in _map(ckr.MultipleTokensReturned()).message


@pytest.mark.parametrize("kind", [ckr.GeneralError, ckr.DeviceError, ckr.PKCS11Error])
def test_pin_and_request_ids_are_stripped_from_error_text(kind: type[ckr.PKCS11Error]) -> None:
    """Vendor modules put anything in their text; none of the PIN or ids may come through."""
    error = _map(kind(f"C_Login({PIN}) failed, {REQUEST_ID}, pin={PIN}"))
    for text in (error.message, repr(error.args)):
        assert PIN not in text
        assert "7f3c9a2e" not in text
    assert error.__cause__ is None


def test_unmapped_return_codes_are_named() -> None:
    error = _map(ckr.PKCS11Error("Unmapped error code 0x68"))
    assert type(error) is ProviderError
    assert "CKR_KEY_FUNCTION_NOT_PERMITTED" in error.message
    assert "0x12345" in _map(ckr.PKCS11Error("Unmapped error code 0x12345")).message


def test_no_pkcs11_error_is_throttling() -> None:
    """PKCS#11 has no throttling return code: a busy HSM answers slowly, or with
    CKR_DEVICE_ERROR / CKR_SESSION_COUNT, which are ProviderUnavailable. So the
    backend never raises ProviderThrottled, and no synthetic error is invented here."""
    kinds = [
        kind
        for _, kind in inspect.getmembers(ckr, inspect.isclass)
        if issubclass(kind, ckr.PKCS11Error)
    ]
    assert len(kinds) > 60
    for kind in kinds:
        assert not isinstance(_map(kind()), ProviderThrottled), kind.__name__


def test_module_that_does_not_load_is_invalid_spec() -> None:
    error = translate_module_error(
        ckr.PKCS11Error(f"OS exception while loading {MODULE}: {MODULE}: invalid ELF header"),
        provider_name="hsm",
        module_path=MODULE,
    )
    assert isinstance(error, InvalidSpec)
    assert "spec.pkcs11.modulePath" in error.message
    assert "invalid ELF header" in error.message


def test_module_whose_hsm_does_not_answer_is_unavailable() -> None:
    error = translate_module_error(ckr.DeviceError(), provider_name="hsm", module_path=MODULE)
    assert isinstance(error, ProviderUnavailable)


@pytest.mark.parametrize(
    ("options", "credentials", "field"),
    [
        ({"modulePath": "libsofthsm2.so", "tokenLabel": TOKEN}, {"pin": PIN}, "modulePath"),
        ({"modulePath": "/nonexistent/libhsm.so", "tokenLabel": TOKEN}, {"pin": PIN}, "modulePath"),
        ({"modulePath": "<exists>", "tokenLabel": "x" * 33}, {"pin": PIN}, "tokenLabel"),
        ({"modulePath": "<exists>", "tokenLabel": TOKEN}, {}, "`pin`"),
    ],
)
def test_spec_errors_name_the_field(
    tmp_path: Path, options: dict[str, str], credentials: dict[str, str], field: str
) -> None:
    module = tmp_path / "libhsm.so"
    module.write_bytes(b"not loaded: the spec check fails first")
    options = {k: str(module) if v == "<exists>" else v for k, v in options.items()}
    config = BackendConfig("hsm", "pkcs11", options, credentials)
    with pytest.raises(InvalidSpec) as raised:
        open_pkcs11_backend(config, Settings(data_dir=tmp_path))
    assert field in raised.value.message
    assert PIN not in raised.value.message


# -- references ---------------------------------------------------------------------


def test_version_refs_round_trip_and_are_unique_per_version() -> None:
    refs = [version_ref("HSM token #1", "acme", "phi_key.v2", v) for v in (1, 2, 256)]
    assert len({ref.uri for ref in refs}) == 3
    assert refs[0].uri == (
        "pkcs11:token=HSM%20token%20%231;object=keyledger%2Facme%2Fphi_key.v2;"
        "id=%00%00%00%01;type=secret-key"
    )
    for ref in refs:
        assert VersionRef.parse(ref.uri, "HSM token #1") == ref


@pytest.mark.parametrize(
    "uri",
    [
        "arn:aws:kms:eu-west-1:111122223333:key/abc",
        "pkcs11:token=tenant-keys;object=k;id=%01;type=secret-key",
        "pkcs11:token=tenant-keys;object=k;id=%00%00%00%01;type=private",
        "pkcs11:token=other;object=k;id=%00%00%00%01;type=secret-key",
    ],
)
def test_foreign_refs_are_not_found(uri: str) -> None:
    with pytest.raises(KmsKeyNotFound):
        VersionRef.parse(uri, TOKEN)


# -- the shared login -----------------------------------------------------------------


class FakeSession:
    def __init__(self, pin: str) -> None:
        self.pin = pin
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeToken:
    """Accepts one PIN, like C_Login; counts the logins it saw."""

    def __init__(self, pin: str = PIN) -> None:
        self.pin = pin
        self.logins: list[str] = []
        self.sessions: list[FakeSession] = []

    def open(self, pin: str) -> FakeSession:
        self.logins.append(pin)
        if pin != self.pin:
            raise ckr.PinIncorrect()
        self.sessions.append(FakeSession(pin))
        return self.sessions[-1]


def _login(token: FakeToken) -> TokenLogin:
    # FakeSession stands in for pkcs11.Session, a concrete class with no protocol to meet.
    return TokenLogin(Pkcs11Module(path=MODULE, lib=None), TOKEN, open_session=token.open)  # type: ignore[arg-type]


def _caller(pin: str, name: str = "hsm") -> Caller:
    return Caller(provider_name=name, module_path=MODULE, pin=pin)


def _use(login: TokenLogin, caller: Caller) -> object:
    return login.run(caller, "check the token", lambda session: session)


def test_backends_with_the_same_pin_share_one_session() -> None:
    token = FakeToken()
    login = _login(token)
    login.register(PIN)
    login.register(PIN)
    assert _use(login, _caller(PIN, "a")) is _use(login, _caller(PIN, "b"))
    assert token.logins == [PIN]
    login.release(PIN)
    assert not token.sessions[0].closed  # the other backend still uses the login
    login.release(PIN)
    assert token.sessions[0].closed


def test_a_rejected_pin_is_not_tried_again() -> None:
    """HSMs lock the user PIN after a few failures; a reconcile loop must not cause that."""
    token = FakeToken()
    login = _login(token)
    login.register(OTHER_PIN)
    for _ in range(3):
        with pytest.raises(ProviderAccessDenied) as raised:
            _use(login, _caller(OTHER_PIN))
        assert raised.value.reason == "PinIncorrect"
        assert OTHER_PIN not in str(raised.value)
        assert raised.value.__cause__ is None
    assert token.logins == [OTHER_PIN]
    assert _use(login, _caller(PIN)) is token.sessions[0]  # a corrected Secret works


def test_a_different_pin_does_not_log_out_a_provider_in_use() -> None:
    token = FakeToken()
    login = _login(token)
    login.register(PIN)
    login.register(OTHER_PIN)
    _use(login, _caller(PIN))
    with pytest.raises(ProviderAccessDenied) as raised:
        _use(login, _caller(OTHER_PIN))
    assert raised.value.reason == "PinMismatch"
    assert OTHER_PIN not in str(raised.value)
    assert token.logins == [PIN]
    assert not token.sessions[0].closed


def test_a_new_pin_logs_in_once_the_old_one_is_released() -> None:
    """PIN rotation: the backend cache opens the new backend, then closes the old one."""
    token = FakeToken()
    login = _login(token)
    login.register(PIN)
    _use(login, _caller(PIN))
    token.pin = OTHER_PIN  # the security officer changed the PIN; the Secret follows
    login.register(OTHER_PIN)
    login.release(PIN)
    assert token.sessions[0].closed
    assert _use(login, _caller(OTHER_PIN)) is token.sessions[1]


def _failing(errors: list[ckr.PKCS11Error]) -> Callable[[object], str]:
    def operation(session: object) -> str:
        if errors:
            raise errors.pop(0)
        return "done"

    return operation


def test_a_session_the_hsm_forgot_is_reopened_once() -> None:
    token = FakeToken()
    login = _login(token)
    login.register(PIN)
    result = login.run(
        _caller(PIN), "describe a key version", _failing([ckr.SessionHandleInvalid()])
    )
    assert result == "done"
    assert len(token.sessions) == 2
    assert token.sessions[0].closed


def test_a_session_that_stays_gone_is_unavailable() -> None:
    token = FakeToken()
    login = _login(token)
    login.register(PIN)
    stale = [ckr.SessionHandleInvalid(), ckr.DeviceRemoved()]
    with pytest.raises(ProviderUnavailable) as raised:
        login.run(_caller(PIN), "describe a key version", _failing(stale))
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__


def test_other_errors_are_mapped_without_a_retry() -> None:
    token = FakeToken()
    login = _login(token)
    login.register(PIN)
    with pytest.raises(ProviderError) as raised:
        login.run(_caller(PIN), "create a key version", _failing([ckr.TemplateInconsistent()]))
    assert "create a key version" in raised.value.message
    assert len(token.sessions) == 1
