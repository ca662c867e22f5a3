"""The `gcpKms` backend: GCP Cloud KMS through google-cloud-kms (gRPC).

Versions. One CryptoKey (ENCRYPT_DECRYPT, GOOGLE_SYMMETRIC_ENCRYPTION, i.e.
AES-256-GCM) per tenant key; version 1 is made with it, every further ledger
version is a new CryptoKeyVersion. A ref is the CryptoKeyVersion's resource name
(`names`). `make_primary` is UpdateCryptoKeyPrimaryVersion, for rotation and
rollback alike; disable/enable set the version's state; `schedule_deletion` is
DestroyCryptoKeyVersion, which GCP carries out after the CryptoKey's
destroy_scheduled_duration (fixed at creation: `spec.gcpKms.destroyScheduledDays`).

Idempotency. Versions have no labels, so the CryptoKey's labels record, per
version, the marker that made it; a version is claimed (`keyledger-pending`)
before it is made, so a crash between creating and recording is repaired by
adopting the unrecorded version above the claim (`markers`).

Data keys. 32 bytes from os.urandom, wrapped by Encrypt with the version's ref as
additional authenticated data: Decrypt (which takes the CryptoKey, not a version)
then succeeds only for the ref that wrapped, and says nothing else about which
version decrypted. The wrapped form starts with the version number (`wrapping`)
so that a wrong ref is refused before any call. The version's state is checked
before every Encrypt and Decrypt: GCP refuses unusable versions by itself, but
not every emulator does.
"""

from __future__ import annotations

import logging
import os
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as api
from google.api_core.retry import Retry, if_exception_type
from google.cloud import kms_v1

from keyledger.errors import (
    KEY_DISABLED,
    KEY_PENDING_DELETION,
    InvalidSpec,
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
from keyledger.providers.gcp.config import GcpKmsOptions, open_kms_client, read_options
from keyledger.providers.gcp.errors import (
    DATA_KEY_NOT_WRAPPED_BY_VERSION,
    translated_errors,
)
from keyledger.providers.gcp.markers import VersionMarkers
from keyledger.providers.gcp.names import VersionRef, location_name
from keyledger.providers.gcp.wrapping import unwrap_envelope, wrap_envelope
from keyledger.providers.registry import kms_provider_of, register_backend
from keyledger.settings import Settings

log = logging.getLogger(__name__)

REQUIRED_PERMISSIONS = (
    "cloudkms.keyRings.create",
    "cloudkms.keyRings.list",  # check(), and finding a marker's version across tenant rings
    "cloudkms.cryptoKeys.create",
    "cloudkms.cryptoKeys.get",
    "cloudkms.cryptoKeys.list",
    "cloudkms.cryptoKeys.update",  # labels, and UpdateCryptoKeyPrimaryVersion
    "cloudkms.cryptoKeyVersions.create",
    "cloudkms.cryptoKeyVersions.get",
    "cloudkms.cryptoKeyVersions.list",
    "cloudkms.cryptoKeyVersions.update",  # enable / disable
    "cloudkms.cryptoKeyVersions.destroy",
    "cloudkms.cryptoKeyVersions.useToEncrypt",
    "cloudkms.cryptoKeyVersions.useToDecrypt",
)
DATA_KEY_BYTES = 32

# Short deadlines: a handler must fail fast and retry later rather than hang a
# kopf worker. Only idempotent calls are retried here; creations are retried by
# the caller, through the idempotency marker.
CALL_TIMEOUT_S = 10.0
RETRY_IDEMPOTENT = Retry(
    predicate=if_exception_type(api.ServiceUnavailable, api.DeadlineExceeded),
    initial=0.2,
    maximum=1.0,
    multiplier=2.0,
    timeout=5.0,
)
_State = kms_v1.CryptoKeyVersion.CryptoKeyVersionState
_KEY_STATES = {
    _State.ENABLED: KmsKeyState.ENABLED,
    _State.DISABLED: KmsKeyState.DISABLED,
    _State.DESTROY_SCHEDULED: KmsKeyState.PENDING_DELETION,
    _State.PENDING_EXTERNAL_DESTRUCTION: KmsKeyState.PENDING_DELETION,
    _State.DESTROYED: KmsKeyState.MISSING,
    # PENDING_GENERATION, PENDING_IMPORT, *_FAILED and states GCP adds later: not usable.
}


class GcpKmsBackend:
    provider = kms_provider_of("gcpKms")
    adoption_refusal: str | None = None

    def __init__(
        self,
        client: kms_v1.KeyManagementServiceClient,
        options: GcpKmsOptions,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.options = options
        self.region: str | None = options.location
        self.endpoint = options.endpoint
        self._kms = client
        self._secrets = secrets
        self._location = location_name(options.project, options.location)
        self._where = f"GCP Cloud KMS in {self._location}" + (
            f" at {options.endpoint}" if options.endpoint else ""
        )
        self._markers = VersionMarkers(client, options, self._errors)

    def __repr__(self) -> str:
        return f"GcpKmsBackend(location={self._location!r}, endpoint={self.endpoint!r})"

    # -- the KeyBackend protocol ------------------------------------------------

    def check(self) -> None:
        """One cheap list call, not retried (the caller checks again later); a configured
        key ring that does not exist yet is fine."""
        once: dict[str, Any] = {"retry": None, "timeout": CALL_TIMEOUT_S}
        if self.options.key_ring is None:
            with self._errors("ListKeyRings", self._location):
                self._kms.list_key_rings(request={"parent": self._location, "page_size": 1}, **once)
            return
        ring = f"{self._location}/keyRings/{self.options.key_ring}"
        try:
            with self._errors("ListCryptoKeys", ring):
                self._kms.list_crypto_keys(request={"parent": ring, "page_size": 1}, **once)
        except KmsKeyNotFound:
            pass  # made on first use; the answer proves connectivity and credentials

    def create_key_version(self, request: KeyVersionRequest) -> KmsKey:
        if request.algorithm != "AES-256-GCM":
            raise InvalidSpec(
                f"spec.algorithm {request.algorithm!r} is not offered by the GCP Cloud KMS "
                "backend: use AES-256-GCM"
            )
        return self.describe(self._markers.create_version(request))

    def find_key_version(self, marker: str) -> KmsKey | None:
        ref = self._markers.find_version(marker)
        return None if ref is None else self.describe(ref)

    def describe(self, ref: str) -> KmsKey:
        try:
            version = self._version(ref)
        except KmsKeyNotFound:
            return KmsKey(ref=ref, state=KmsKeyState.MISSING)
        return _kms_key(ref, version)

    def make_primary(self, ref: str, request: KeyVersionRequest) -> None:
        target = VersionRef.parse(ref)
        with self._errors("UpdateCryptoKeyPrimaryVersion", ref):
            self._kms.update_crypto_key_primary_version(
                request={"name": target.crypto_key, "crypto_key_version_id": str(target.number)},
                **_idempotent(),
            )

    def disable(self, ref: str) -> None:
        state = self._version(ref).state
        if state != _State.ENABLED:
            return  # already refuses crypto; GCP refuses DESTROY_SCHEDULED -> DISABLED
        self._set_state(ref, _State.DISABLED)

    def enable(self, ref: str) -> None:
        state = self._version(ref).state
        if state == _State.ENABLED:
            return
        if state != _State.DISABLED:
            # GCP allows ENABLED only from DISABLED; a version scheduled for destruction
            # must be restored first, which keyledger does not do behind the ledger's back.
            raise ProviderError(
                f"{self._where}: {ref} is {state.name} and cannot be enabled; restore it "
                "(RestoreCryptoKeyVersion) first if it should be used again",
                reason=KEY_PENDING_DELETION,
            )
        self._set_state(ref, _State.ENABLED)

    def schedule_deletion(self, ref: str, window_days: int) -> datetime:
        """DestroyCryptoKeyVersion; returns when GCP will destroy the material.

        GCP destroys after the CryptoKey's destroy_scheduled_duration, fixed at its
        creation. A shorter window than that is honoured late (and logged); a longer
        one is refused, because GCP would destroy the material before the grace
        period the spec promises is over.
        """
        version = self._version(ref)
        duration = self._destroy_scheduled_duration(VersionRef.parse(ref).crypto_key)
        if version.state == _State.DESTROY_SCHEDULED:  # a retry: keep the first schedule
            return _destroy_time(version) or datetime.now(UTC) + duration
        if timedelta(days=window_days) > duration:
            raise InvalidSpec(
                f"spec.deletionWindowDays is {window_days}, but GCP destroys versions of "
                f"{VersionRef.parse(ref).crypto_key} {duration.days} days after "
                "DestroyCryptoKeyVersion (its destroy_scheduled_duration, fixed at creation): "
                f"set deletionWindowDays to at most {duration.days}, or use deletionPolicy "
                "Disable",
            )
        with self._errors("DestroyCryptoKeyVersion", ref):
            destroyed = self._kms.destroy_crypto_key_version(
                request={"name": ref}, timeout=CALL_TIMEOUT_S
            )
        when = _destroy_time(destroyed) or datetime.now(UTC) + duration
        if when - datetime.now(UTC) > timedelta(days=window_days + 1):
            log.warning(
                "%s will be destroyed on %s, later than the %d-day window asked for: its "
                "CryptoKey's destroy_scheduled_duration is %d days",
                ref,
                when.isoformat(),
                window_days,
                duration.days,
            )
        return when

    def destroy_due(self, now: datetime) -> list[str]:
        """Nothing to do: GCP destroys a DESTROY_SCHEDULED version itself at its destroy_time."""
        return []

    def generate_data_key(self, ref: str) -> DataKey:
        """32 random bytes wrapped by the version `ref`.

        The primary is reached through its CryptoKey (GCP encrypts with the primary
        and names the version it used, which is checked); another version by its
        own name, which GCP accepts for symmetric keys.
        """
        target = VersionRef.parse(ref)
        with self._errors("GetCryptoKey", target.crypto_key):
            key = self._kms.get_crypto_key(request={"name": target.crypto_key}, **_idempotent())
        is_primary = key.primary.name == ref
        self._require_usable(ref, key.primary if is_primary else self._version(ref))
        plaintext = os.urandom(DATA_KEY_BYTES)
        with self._errors("Encrypt", ref):
            encrypted = self._kms.encrypt(
                request={
                    "name": target.crypto_key if is_primary else ref,
                    "plaintext": plaintext,
                    "additional_authenticated_data": ref.encode(),
                },
                **_idempotent(),
            )
        # GCP names the version it used; an echo of the CryptoKey name (emulators)
        # says nothing beyond the primary check above.
        if encrypted.name not in (ref, target.crypto_key):
            raise ProviderError(
                f"{self._where}: the primary of {target.crypto_key} changed while wrapping a "
                f"data key with {ref}; retry",
                reason=DATA_KEY_NOT_WRAPPED_BY_VERSION,
            )
        return DataKey(plaintext=plaintext, wrapped=wrap_envelope(target, encrypted.ciphertext))

    def unwrap_data_key(self, ref: str, wrapped: bytes) -> bytes:
        target = VersionRef.parse(ref)
        ciphertext = unwrap_envelope(target, wrapped, where=self._where)
        self._require_usable(ref, self._version(ref))
        with self._errors("Decrypt", ref, invalid_argument_reason=DATA_KEY_NOT_WRAPPED_BY_VERSION):
            decrypted = self._kms.decrypt(
                request={
                    "name": target.crypto_key,
                    "ciphertext": ciphertext,
                    "additional_authenticated_data": ref.encode(),
                },
                **_idempotent(),
            )
        return bytes(decrypted.plaintext)

    def close(self) -> None:
        self._kms.transport.close()  # type: ignore[no-untyped-call]

    # -- internals ----------------------------------------------------------------

    def _errors(
        self,
        operation: str,
        target: str | None = None,
        *,
        invalid_argument_reason: str | None = None,
    ) -> AbstractContextManager[None]:
        return translated_errors(
            where=self._where,
            operation=operation,
            target=target,
            secrets=self._secrets,
            invalid_argument_reason=invalid_argument_reason,
        )

    def _version(self, ref: str) -> kms_v1.CryptoKeyVersion:
        VersionRef.parse(ref)
        with self._errors("GetCryptoKeyVersion", ref):
            return self._kms.get_crypto_key_version(request={"name": ref}, **_idempotent())

    def _set_state(self, ref: str, state: int) -> None:
        with self._errors("UpdateCryptoKeyVersion", ref):
            self._kms.update_crypto_key_version(
                request={
                    "crypto_key_version": {"name": ref, "state": state},
                    "update_mask": {"paths": ["state"]},
                },
                **_idempotent(),
            )

    def _destroy_scheduled_duration(self, crypto_key: str) -> timedelta:
        with self._errors("GetCryptoKey", crypto_key):
            key = self._kms.get_crypto_key(request={"name": crypto_key}, **_idempotent())
        if "destroy_scheduled_duration" in key:
            duration: timedelta = key.destroy_scheduled_duration
            return duration
        # GCP always reports it; an emulator that does not is assumed to keep what we asked.
        return self.options.destroy_scheduled

    def _require_usable(self, ref: str, version: kms_v1.CryptoKeyVersion) -> None:
        state = _KEY_STATES.get(version.state, KmsKeyState.DISABLED)
        if state is KmsKeyState.MISSING:
            raise KmsKeyNotFound(f"{self._where}: {ref} has been destroyed")
        if state is not KmsKeyState.ENABLED:
            raise ProviderError(
                f"{self._where}: {ref} is {version.state.name} and refuses cryptographic use; "
                "enable (or restore) it if it should still be used",
                reason=KEY_PENDING_DELETION
                if state is KmsKeyState.PENDING_DELETION
                else KEY_DISABLED,
            )


def _idempotent() -> dict[str, Any]:
    return {"retry": RETRY_IDEMPOTENT, "timeout": CALL_TIMEOUT_S}


def _destroy_time(version: kms_v1.CryptoKeyVersion) -> datetime | None:
    when: datetime | None = version.destroy_time
    return when.astimezone(UTC) if when is not None else None


def _kms_key(ref: str, version: kms_v1.CryptoKeyVersion) -> KmsKey:
    state = _KEY_STATES.get(version.state, KmsKeyState.DISABLED)
    return KmsKey(
        ref=ref,
        state=state,
        deletion_date=_destroy_time(version) if state is KmsKeyState.PENDING_DELETION else None,
    )


@register_backend("gcpKms")
def open_gcp_kms_backend(config: BackendConfig, settings: Settings) -> GcpKmsBackend:
    options = read_options(config)
    client, secrets = open_kms_client(config, options)
    return GcpKmsBackend(client, options, secrets)
