"""The `pkcs11` backend: AES-256 version keys in an HSM token, used through PKCS#11.

Each version is a secret key object that never leaves the token (sensitive,
not extractable, AES-GCM only); see `names` for the refs and `objects` for the layout.
Data keys are 32 bytes from the HSM's RNG, wrapped by AES-GCM encryption
inside the HSM under the version key: wrapped = IV(12) || ciphertext || tag.

What the token cannot express, keyledger keeps itself:
- "current version": there is none in PKCS#11; the ledger pins the version,
  so make_primary only checks the version exists.
- disabling: CKA_ENCRYPT/CKA_DECRYPT (and WRAP/UNWRAP) are turned off, so the
  HSM itself refuses; the backend also checks before each use.
- scheduled deletion: there is no such thing in an HSM. The backend records the
  date in the token and disables the key; `destroy_due`, which the operator
  calls with every provider check, destroys the key and its records
  (C_DestroyObject) once the date has passed.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from urllib.parse import quote

from pkcs11 import GCMParams, KeyType, Mechanism, SecretKey, Session
from pkcs11 import exceptions as ckr
from pkcs11.types import DecryptMixin, EncryptMixin

from keyledger.errors import (
    KEY_DISABLED,
    KEY_PENDING_DELETION,
    KeyledgerError,
    KmsKeyNotFound,
    ProviderError,
)
from keyledger.providers.base import (
    BackendConfig,
    DataKey,
    KeyVersionRequest,
    KmsKey,
    KmsKeyState,
)
from keyledger.providers.pkcs11.config import read_options
from keyledger.providers.pkcs11.errors import return_code
from keyledger.providers.pkcs11.names import VersionRef, version_ref
from keyledger.providers.pkcs11.objects import (
    ENABLED_USAGE,
    USAGE_ATTRIBUTES,
    VERSION_KEY_TEMPLATE,
    deletion_record,
    destroy_version,
    find_deletion_date,
    find_marker_of,
    find_marker_record,
    find_scheduled_deletions,
    find_version_key,
    marker_record,
)
from keyledger.providers.pkcs11.session import Caller, TokenLogin, token_login
from keyledger.providers.registry import kms_provider_of, register_backend
from keyledger.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

DATA_KEY_BYTES = 32
_IV_BYTES = 12
_TAG_BYTES = 16
WRAPPED_DATA_KEY_BYTES = _IV_BYTES + DATA_KEY_BYTES + _TAG_BYTES
_NO_MARKER = "keyledger.io/check"  # markers are "<uid>.v<n>": this one never exists
# What the HSM says when the ciphertext was not made by this key (SoftHSM: GeneralError).
_NOT_OURS = (
    ckr.GeneralError,
    ckr.EncryptedDataInvalid,
    ckr.EncryptedDataLenRange,
    ckr.FunctionFailed,
)


class Pkcs11Backend:
    provider = kms_provider_of("pkcs11")
    adoption_refusal: str | None = None
    region: str | None = None

    def __init__(self, login: TokenLogin, caller: Caller) -> None:
        self._login = login
        self._caller = caller
        self._open = True
        self.token_label = login.token_label
        self.endpoint: str | None = (
            f"pkcs11:token={quote(login.token_label)}?module-path={quote(caller.module_path)}"
        )
        login.register(caller.pin)

    def __repr__(self) -> str:
        return f"Pkcs11Backend({self._caller.provider_name!r}, token={self.token_label!r})"

    # -- the KeyBackend protocol ------------------------------------------------

    def check(self) -> None:
        # A search is a real round trip on the logged-in session; nothing matches it.
        self._run("check the token", lambda session: find_marker_record(session, _NO_MARKER))

    def create_key_version(self, request: KeyVersionRequest) -> KmsKey:
        ref = version_ref(self.token_label, request.tenant, request.key_name, request.version)
        return self._run(
            "create a key version", lambda session: self._create(session, request, ref)
        )

    def find_key_version(self, marker: str) -> KmsKey | None:
        def find(session: Session) -> KmsKey | None:
            recorded = find_marker_record(session, marker)
            if recorded is None:
                return None
            ref = VersionRef.parse(recorded, self.token_label)
            if find_version_key(session, ref) is None:
                return None  # the record was written, the key not yet: nothing to recover
            return self._describe(session, ref)

        return self._run("find a key version", find)

    def describe(self, ref: str) -> KmsKey:
        version = VersionRef.parse(ref, self.token_label)
        return self._run("describe a key version", lambda session: self._describe(session, version))

    def make_primary(self, ref: str, request: KeyVersionRequest) -> None:
        # PKCS#11 has no "current version"; the ledger pins it. Only prove the version exists.
        version = VersionRef.parse(ref, self.token_label)
        self._run("look up a key version", lambda session: self._key(session, version))

    def disable(self, ref: str) -> None:
        version = VersionRef.parse(ref, self.token_label)
        self._run("disable a key version", lambda session: self._set_usage(session, version, False))

    def enable(self, ref: str) -> None:
        version = VersionRef.parse(ref, self.token_label)

        def enable(session: Session) -> None:
            if find_deletion_date(session, version) is not None:
                raise ProviderError(
                    f"{ref} is scheduled for deletion and cannot be enabled again",
                    reason=KEY_PENDING_DELETION,
                )
            self._set_usage(session, version, True)

        self._run("enable a key version", enable)

    def schedule_deletion(self, ref: str, window_days: int) -> datetime:
        version = VersionRef.parse(ref, self.token_label)

        def schedule(session: Session) -> datetime:
            self._key(session, version)
            when = find_deletion_date(session, version)
            if when is None:  # scheduling twice keeps the first date
                when = datetime.now(UTC) + timedelta(days=window_days)
                session.create_object(deletion_record(version, when))
            self._set_usage(session, version, False)
            return when

        when = self._run("schedule deletion of a key version", schedule)
        log.info(
            "%s in token %r is disabled and due for destruction after %s; keyledger destroys "
            "it then, the HSM does not by itself",
            ref,
            self.token_label,
            when.isoformat(),
        )
        return when

    def destroy_due(self, now: datetime) -> list[str]:
        """Destroy, in the token, every version whose deletion record's date has passed.

        Each version is destroyed on its own, so one the token refuses does not
        keep the others alive. The refusal is raised once a call destroys nothing
        else, so that it never hides what was destroyed.
        """
        scheduled = self._run("list the versions scheduled for deletion", find_scheduled_deletions)
        destroyed: list[str] = []
        refused: KeyledgerError | None = None
        for uri, when in sorted(scheduled, key=lambda record: record[1]):
            if when > now:
                continue
            try:
                self._destroy(uri)
            except KeyledgerError as error:
                log.warning("%s was due for destruction but is not destroyed: %s", uri, error)
                refused = refused or error
                continue
            log.info(
                "%s in token %r destroyed: its deletion date has passed", uri, self.token_label
            )
            destroyed.append(uri)
        if refused is not None and not destroyed:
            raise refused
        return destroyed

    def generate_data_key(self, ref: str) -> DataKey:
        version = VersionRef.parse(ref, self.token_label)

        def generate(session: Session) -> DataKey:
            key = self._usable_key(session, version)
            plaintext = session.generate_random(8 * DATA_KEY_BYTES)
            iv = secrets.token_bytes(_IV_BYTES)
            sealed = _encrypt(key, version, iv, plaintext)
            return DataKey(plaintext=plaintext, wrapped=iv + sealed)

        return self._run("generate a data key", generate)

    def unwrap_data_key(self, ref: str, wrapped: bytes) -> bytes:
        version = VersionRef.parse(ref, self.token_label)
        not_ours = ProviderError(f"cannot unwrap data key with {ref}: not wrapped by it")
        if len(wrapped) != WRAPPED_DATA_KEY_BYTES:
            raise not_ours

        def unwrap(session: Session) -> bytes:
            key = self._usable_key(session, version)
            iv, sealed = wrapped[:_IV_BYTES], wrapped[_IV_BYTES:]
            try:
                return _decrypt(key, version, iv, sealed)
            except _NOT_OURS:
                raise not_ours from None

        return self._run("unwrap a data key", unwrap)

    def close(self) -> None:
        if self._open:
            self._open = False
            self._login.release(self._caller.pin)

    # -- internals ----------------------------------------------------------------

    def _run(self, action: str, operation: Callable[[Session], T]) -> T:
        if not self._open:
            raise ProviderError(f"provider {self._caller.provider_name!r}: backend is closed")
        return self._login.run(self._caller, action, operation)

    def _destroy(self, ref: str) -> None:
        version = VersionRef.parse(ref, self.token_label)
        self._run(f"destroy {ref}", lambda session: destroy_version(session, version))

    def _create(self, session: Session, request: KeyVersionRequest, ref: VersionRef) -> KmsKey:
        recorded = find_marker_record(session, request.marker)
        if recorded is not None and recorded != ref.uri:
            raise ProviderError(
                f"marker {request.marker} already names {recorded}, not {ref.uri}",
                reason="KmsKeyConflict",
            )
        if recorded is None:
            owner = find_marker_of(session, ref)
            if owner is not None:
                raise ProviderError(
                    f"{ref.uri} already belongs to another resource (marker {owner}); a "
                    "recreated EncryptionKey must continue its version numbers or use a new "
                    "keyName",
                    reason="KmsKeyConflict",
                )
            if find_version_key(session, ref) is not None:
                raise ProviderError(
                    f"{ref.uri} exists in the token but keyledger did not create it; destroy or "
                    "relabel that object, or take it over with spec.adopt",
                    reason="KmsKeyConflict",
                )
            # The record first: a crash before the key leaves a record the retry completes.
            session.create_object(marker_record(request.marker, ref))
        if find_version_key(session, ref) is None:
            session.generate_key(
                KeyType.AES,
                256,
                label=ref.label,
                id=ref.key_id,
                store=True,
                template=VERSION_KEY_TEMPLATE,
            )
        return self._describe(session, ref)

    def _describe(self, session: Session, ref: VersionRef) -> KmsKey:
        return self._inspect(session, ref)[1]

    def _inspect(self, session: Session, ref: VersionRef) -> tuple[SecretKey | None, KmsKey]:
        """The version's key object (None when missing) and its state."""
        key = find_version_key(session, ref)
        if key is None:
            return None, KmsKey(ref=ref.uri, state=KmsKeyState.MISSING)
        deletion = find_deletion_date(session, ref)
        if deletion is not None:
            pending = KmsKeyState.PENDING_DELETION
            return key, KmsKey(ref=ref.uri, state=pending, deletion_date=deletion)
        usage = key.get_attributes(list(ENABLED_USAGE))
        enabled = all(usage.get(attribute) is True for attribute in ENABLED_USAGE)
        state = KmsKeyState.ENABLED if enabled else KmsKeyState.DISABLED
        return key, KmsKey(ref=ref.uri, state=state)

    def _key(self, session: Session, ref: VersionRef) -> SecretKey:
        key = find_version_key(session, ref)
        if key is None:
            raise KmsKeyNotFound(f"{ref.uri} does not exist in token {self.token_label!r}")
        return key

    def _usable_key(self, session: Session, ref: VersionRef) -> SecretKey:
        # The HSM refuses a disabled key by itself too; this check gives the reason.
        key, described = self._inspect(session, ref)
        if key is None:
            raise KmsKeyNotFound(f"{ref.uri} does not exist in token {self.token_label!r}")
        if described.state is KmsKeyState.PENDING_DELETION:
            raise ProviderError(f"{ref.uri} is scheduled for deletion", reason=KEY_PENDING_DELETION)
        if described.state is not KmsKeyState.ENABLED:
            raise ProviderError(f"{ref.uri} is disabled", reason=KEY_DISABLED)
        return key

    def _set_usage(self, session: Session, ref: VersionRef, enabled: bool) -> None:
        key = self._key(session, ref)
        # ENCRYPT first: when disabling stops halfway, new encryption has already stopped.
        for attribute in ENABLED_USAGE if enabled else USAGE_ATTRIBUTES:
            try:
                key[attribute] = enabled
            except ckr.PKCS11Error as exc:
                refused = isinstance(exc, ckr.AttributeReadOnly) or return_code(exc) == 0x1B
                if not refused:
                    raise
                raise ProviderError(
                    f"{ref.uri} cannot be {'enabled' if enabled else 'disabled'}: the token "
                    "refuses to change its usage attributes (CKA_MODIFIABLE is false or the "
                    "HSM's policy forbids it)",
                    reason="KmsKeyNotModifiable",
                ) from None


# python-pkcs11 gives a key object the encrypt/decrypt methods only while its
# CKA_ENCRYPT/CKA_DECRYPT are true; without them the version is disabled.


def _encrypt(key: SecretKey, ref: VersionRef, iv: bytes, plaintext: bytes) -> bytes:
    if not isinstance(key, EncryptMixin):
        raise ProviderError(f"{ref.uri} is disabled for encryption", reason=KEY_DISABLED)
    sealed = key.encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv))
    assert isinstance(sealed, bytes)  # bytes in, bytes out
    return sealed


def _decrypt(key: SecretKey, ref: VersionRef, iv: bytes, sealed: bytes) -> bytes:
    if not isinstance(key, DecryptMixin):
        raise ProviderError(f"{ref.uri} is disabled for decryption", reason=KEY_DISABLED)
    plaintext = key.decrypt(sealed, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv))
    assert isinstance(plaintext, bytes)
    return plaintext


@register_backend("pkcs11")
def open_pkcs11_backend(config: BackendConfig, settings: Settings) -> Pkcs11Backend:
    options = read_options(config)
    name = config.provider_name
    return Pkcs11Backend(
        token_login(options.module_path, options.token_label, name),
        Caller(provider_name=name, module_path=options.module_path, pin=options.pin),
    )
