"""What a PKCS#11 failure means for the operator, in keyledger's error types.

python-pkcs11 raises one exception class per CKR_* return code (and a bare
`PKCS11Error("Unmapped error code 0x..")` for codes it does not know). The
classes say *what kind* of failure it was; their text is usually empty, so the
messages here are built from the kind and the provider's settings, and any
text taken from the exception goes through `sanitize` with the PIN as a secret.

PKCS#11 has no notion of throttling: an HSM that is busy answers slowly or
with CKR_DEVICE_ERROR / CKR_SESSION_COUNT, which map to ProviderUnavailable.
Nothing here ever produces ProviderThrottled.
"""

from __future__ import annotations

import re

from pkcs11 import exceptions as ckr

from keyledger.errors import (
    InvalidSpec,
    KeyledgerError,
    ProviderAccessDenied,
    ProviderError,
    ProviderUnavailable,
)
from keyledger.providers.sanitize import sanitize

# The user's PIN is wrong or malformed: retrying with the same PIN cannot help.
PIN_REJECTED = (ckr.PinIncorrect, ckr.PinInvalid, ckr.PinLenRange)
# The login exists but cannot be used until someone with the SO PIN acts.
PIN_UNUSABLE = (ckr.PinLocked, ckr.PinExpired, ckr.UserPinNotInitialized)
# The token is not where the spec says, or was pulled out: it may come back.
TOKEN_ABSENT = (
    ckr.NoSuchToken,
    ckr.TokenNotPresent,
    ckr.TokenNotRecognised,
    ckr.DeviceRemoved,
    ckr.SlotIDInvalid,
)
# The HSM itself is failing or out of resources.
DEVICE_TROUBLE = (
    ckr.DeviceError,
    ckr.DeviceMemory,
    ckr.HostMemory,
    ckr.SessionCount,
    ckr.FunctionCancelled,
)
# A session the HSM no longer knows (restart, network HSM reconnect): reopen and retry once.
STALE_SESSION = (
    ckr.SessionHandleInvalid,
    ckr.SessionClosed,
    ckr.UserNotLoggedIn,
    ckr.DeviceRemoved,
    ckr.TokenNotPresent,
)

# Return codes python-pkcs11 0.10 reports only as "Unmapped error code 0x..".
_UNMAPPED_CODES = {
    0x1B: "CKR_ACTION_PROHIBITED (the object forbids this change)",
    0x68: "CKR_KEY_FUNCTION_NOT_PERMITTED (the key's usage attributes forbid it)",
}
_UNMAPPED = re.compile(r"Unmapped error code (0x[0-9a-fA-F]+)")
# python-pkcs11's text when dlopen or C_GetFunctionList fails.
_LOADER_FAILURE = re.compile(r"^(?:OS|Unknown) exception while loading \S+?(?:: (.*))?$", re.S)


def translate_error(
    exc: ckr.PKCS11Error,
    *,
    action: str,
    provider_name: str,
    token_label: str,
    module_path: str,
    pin: str,
) -> KeyledgerError:
    """The keyledger error for `exc`, raised while trying to `action` ("create a key version")."""
    where = f"provider {provider_name!r}: token {token_label!r}"
    if isinstance(exc, PIN_REJECTED + PIN_UNUSABLE):
        return _login_error(exc, where)
    if isinstance(exc, ckr.MultipleTokensReturned):
        return InvalidSpec(
            f"{where}: more than one token in {module_path} has this label; give the token a "
            "unique label and name it in spec.pkcs11.tokenLabel",
        )
    if isinstance(exc, TOKEN_ABSENT):
        return ProviderUnavailable(
            f"{where} is not present in PKCS#11 module {module_path}: check "
            "spec.pkcs11.tokenLabel and that the HSM (or its client) is connected and configured",
            reason="TokenNotPresent",
        )
    if isinstance(exc, DEVICE_TROUBLE + STALE_SESSION):
        return ProviderUnavailable(
            f"{where}: the HSM could not {action} ({_describe(exc, pin)}); retrying",
        )
    if isinstance(exc, ckr.TokenWriteProtected | ckr.SessionReadOnly):
        return ProviderError(
            f"{where} is write-protected, so keyledger cannot {action}; use a writable token",
            reason="TokenWriteProtected",
        )
    return ProviderError(f"{where}: cannot {action}: {_describe(exc, pin)}")


def translate_module_error(
    exc: ckr.PKCS11Error, *, provider_name: str, module_path: str
) -> KeyledgerError:
    """Loading the module (dlopen, C_GetFunctionList) or C_Initialize failed."""
    loader = _LOADER_FAILURE.match(str(exc))
    if loader is not None:
        detail = sanitize(loader.group(1) or "the dynamic loader gave no reason")
        return InvalidSpec(
            f"provider {provider_name!r}: spec.pkcs11.modulePath {module_path} is not a loadable "
            f"PKCS#11 module ({detail}); point it at the HSM vendor's PKCS#11 library (.so)",
            reason="Pkcs11ModuleInvalid",
        )
    # The module loaded; the HSM (or the client library's configuration) behind it did not.
    error = ProviderUnavailable if isinstance(exc, DEVICE_TROUBLE) else ProviderError
    return error(
        f"provider {provider_name!r}: PKCS#11 module {module_path} failed to initialise "
        f"({_describe(exc, '')}); check the HSM client's configuration and connectivity",
    )


def _login_error(exc: ckr.PKCS11Error, where: str) -> ProviderAccessDenied:
    if isinstance(exc, PIN_REJECTED):
        return ProviderAccessDenied(
            f"{where} rejected the user PIN from the credentials Secret (key `pin`): put the "
            "token's user PIN there. keyledger does not retry a rejected PIN until it changes, "
            "because HSMs lock the user PIN after repeated failures",
            reason="PinIncorrect",
        )
    state = _PIN_STATE.get(type(exc), "unusable")
    return ProviderAccessDenied(
        f"{where}: the user PIN is {state}; the token's security officer must reset it "
        "before keyledger can log in",
        reason="PinUnusable",
    )


_PIN_STATE: dict[type[ckr.PKCS11Error], str] = {
    ckr.PinLocked: "locked",
    ckr.PinExpired: "expired",
    ckr.UserPinNotInitialized: "not initialised",
}


def return_code(exc: ckr.PKCS11Error) -> int | None:
    """The CKR_* code of an error python-pkcs11 has no class for, else None."""
    unmapped = _UNMAPPED.search(str(exc)) if type(exc) is ckr.PKCS11Error else None
    return None if unmapped is None else int(unmapped.group(1), 16)


def _describe(exc: ckr.PKCS11Error, pin: str) -> str:
    code = return_code(exc)
    if code is not None:
        return _UNMAPPED_CODES.get(code, f"return code {code:#x}")
    text = str(exc)
    detail = sanitize(text, [pin])
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
