"""One logged-in session per HSM token, shared by every backend in the process.

PKCS#11 forces this shape:

- a module is C_Initialize'd once per process (python-pkcs11 caches it), and
  with no init arguments the module may assume calls never overlap; python-pkcs11
  sessions are not thread-safe either. So every call into one module runs under
  that module's lock, while kopf calls backends from several threads.
- the login belongs to the process and the token, not to a session: a second
  C_Login fails with CKR_USER_ALREADY_LOGGED_IN, and C_Logout (which closing a
  python-pkcs11 session does) logs out every session of the token. So backends
  of one token share one session, logged in with one PIN, closed when the last
  backend using that PIN goes away.
- a wrong PIN counts towards the token's lockout. A PIN the token rejected is
  remembered (as a keyed digest, never the PIN) and not tried again.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import pkcs11
from pkcs11 import Mechanism, Session
from pkcs11 import exceptions as ckr

from keyledger.errors import ProviderAccessDenied, ProviderError
from keyledger.providers.pkcs11.errors import (
    PIN_REJECTED,
    STALE_SESSION,
    translate_error,
    translate_module_error,
)
from keyledger.providers.pkcs11.objects import attribute_mapper

if TYPE_CHECKING:
    from pkcs11 import _pkcs11

T = TypeVar("T")
# What keyledger needs from a token: AES-256 key generation and AES-GCM.
REQUIRED_MECHANISMS = frozenset({Mechanism.AES_KEY_GEN, Mechanism.AES_GCM})
# Keyed so that digests in memory say nothing about the PIN outside this process.
_DIGEST_KEY = secrets.token_bytes(32)


def pin_digest(pin: str) -> bytes:
    return hmac.new(_DIGEST_KEY, pin.encode(), hashlib.sha256).digest()


@dataclass
class Pkcs11Module:
    """A loaded, initialised PKCS#11 module and the lock all calls into it take."""

    path: str
    lib: _pkcs11.lib | None  # None only in unit tests that fake sessions
    lock: threading.RLock = field(default_factory=threading.RLock)


OpenSession = Callable[[str], Session]


@dataclass(frozen=True)
class Caller:
    """A backend calling into a token: names for its messages, and the PIN it logs in with."""

    provider_name: str
    module_path: str  # as spec.pkcs11.modulePath spells it
    pin: str = field(repr=False)


class TokenLogin:
    """The shared session of one token; `run` executes an operation on it."""

    def __init__(
        self,
        module: Pkcs11Module,
        token_label: str,
        open_session: OpenSession | None = None,
    ) -> None:
        self.module = module
        self.token_label = token_label
        self._open_session = open_session or self._open_logged_in_session
        self._session: Session | None = None
        self._logged_in_as: bytes | None = None
        self._users: Counter[bytes] = Counter()
        self._rejected: set[bytes] = set()

    def register(self, pin: str) -> None:
        with self.module.lock:
            self._users[pin_digest(pin)] += 1

    def release(self, pin: str) -> None:
        digest = pin_digest(pin)
        with self.module.lock:
            self._users[digest] -= 1
            if self._users[digest] <= 0:
                del self._users[digest]
                if digest == self._logged_in_as:
                    self._close_session()

    def run(self, caller: Caller, action: str, operation: Callable[[Session], T]) -> T:
        """`operation` on the token's session, reopened once if the HSM forgot it."""
        with self.module.lock:
            try:
                for attempt in (1, 2):
                    session = self._session_for(caller)
                    try:
                        return operation(session)
                    except STALE_SESSION:
                        self._close_session()
                        if attempt == 2:
                            raise
            except ckr.PKCS11Error as exc:
                raise translate_error(
                    exc,
                    action=action,
                    provider_name=caller.provider_name,
                    token_label=self.token_label,
                    module_path=caller.module_path,
                    pin=caller.pin,
                ) from None
        raise AssertionError("unreachable")  # the loop returns or raises

    def _session_for(self, caller: Caller) -> Session:
        provider_name, pin = caller.provider_name, caller.pin
        digest = pin_digest(pin)
        if digest in self._rejected:
            raise ProviderAccessDenied(
                f"provider {provider_name!r}: token {self.token_label!r} already rejected the "
                "user PIN in the credentials Secret (key `pin`); keyledger will not try it again "
                "(HSMs lock the PIN after repeated failures): put the token's user PIN there",
                reason="PinIncorrect",
            )
        if self._session is not None:
            if digest == self._logged_in_as:
                return self._session
            assert self._logged_in_as is not None
            if self._users[self._logged_in_as] > 0:
                raise ProviderAccessDenied(
                    f"provider {provider_name!r}: token {self.token_label!r} is logged in by "
                    "another provider of this operator with a different PIN. A PKCS#11 login "
                    "belongs to the whole process, so every provider of one token must use the "
                    "same PIN in its credentials Secret",
                    reason="PinMismatch",
                )
            self._close_session()
        try:
            self._session = self._open_session(pin)
        except PIN_REJECTED:
            self._rejected.add(digest)
            raise
        self._logged_in_as = digest
        return self._session

    def _close_session(self) -> None:
        session, self._session, self._logged_in_as = self._session, None, None
        if session is not None:
            # C_Logout + C_CloseSession; failing means the HSM already dropped it.
            with contextlib.suppress(ckr.PKCS11Error):
                session.close()

    def _open_logged_in_session(self, pin: str) -> Session:
        assert self.module.lib is not None
        token = self.module.lib.get_token(token_label=self.token_label)
        missing = REQUIRED_MECHANISMS - token.slot.get_mechanisms()
        if missing:
            names = ", ".join(sorted(f"CKM_{m.name}" for m in missing))
            raise ProviderError(
                f"token {self.token_label!r} does not offer {names}, which keyledger needs "
                "for AES-256 version keys; use a token or HSM firmware that supports them",
                reason="MechanismNotSupported",
            )
        return token.open(rw=True, user_pin=pin, attribute_mapper=attribute_mapper())


_registry_lock = threading.Lock()
_modules: dict[str, Pkcs11Module] = {}
_logins: dict[tuple[str, str], TokenLogin] = {}


def token_login(module_path: str, token_label: str, provider_name: str) -> TokenLogin:
    """The process-wide login of `token_label` in the module at `module_path`, loading it once."""
    path = os.path.realpath(module_path)  # one module, however it is spelled
    with _registry_lock:
        module = _modules.get(path)
        if module is None:
            module = Pkcs11Module(path=path, lib=_load(path, module_path, provider_name))
            _modules[path] = module
        login = _logins.get((path, token_label))
        if login is None:
            login = _logins[(path, token_label)] = TokenLogin(module, token_label)
        return login


def _load(path: str, spec_path: str, provider_name: str) -> _pkcs11.lib:
    try:
        return pkcs11.lib(path)
    except ckr.PKCS11Error as exc:
        raise translate_module_error(
            exc, provider_name=provider_name, module_path=spec_path
        ) from None
