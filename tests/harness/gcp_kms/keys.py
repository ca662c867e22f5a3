"""The resources of the Cloud KMS test server and the rules the public Cloud KMS
documentation states for them, with no gRPC in sight.

Key rings and CryptoKeys are never deleted (as in Cloud KMS). A CryptoKey here
is always ENCRYPT_DECRYPT with GOOGLE_SYMMETRIC_ENCRYPTION (AES-256-GCM) in
SOFTWARE: the only kind keyledger makes. Versions follow the documented state
machine:

    ENABLED <-> DISABLED            UpdateCryptoKeyVersion (state)
    ENABLED | DISABLED -> DESTROY_SCHEDULED      DestroyCryptoKeyVersion
    DESTROY_SCHEDULED -> DESTROYED  at destroy_time; the key material is erased

Only an ENABLED version encrypts or decrypts, and only an ENABLED version can
become the primary. Failures are `KmsFault`s carrying the gRPC status Cloud KMS
documents for them.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class Status(Enum):
    """The gRPC status codes the server answers with (names as in grpc.StatusCode)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNIMPLEMENTED = "UNIMPLEMENTED"


class KmsFault(Exception):
    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class State(Enum):
    ENABLED = "ENABLED"
    DISABLED = "DISABLED"
    DESTROY_SCHEDULED = "DESTROY_SCHEDULED"
    DESTROYED = "DESTROYED"


# Resource ids: `[a-zA-Z0-9_-]{1,63}` (CreateKeyRingRequest, CreateCryptoKeyRequest).
_ID = re.compile(r"^[a-zA-Z0-9_-]{1,63}$")
# Labels: at most 64; keys 1-63 characters starting with a lowercase letter, values
# 0-63; lowercase letters, digits, '_' and '-' (ASCII subset of what GCP allows).
MAX_LABELS = 64
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
# destroy_scheduled_duration: 24 hours to 120 days, 30 days when not given.
MIN_DESTROY_SCHEDULED = timedelta(hours=24)
MAX_DESTROY_SCHEDULED = timedelta(days=120)
DEFAULT_DESTROY_SCHEDULED = timedelta(days=30)
# EncryptRequest.plaintext and additional_authenticated_data: at most 64 KiB each.
MAX_CRYPTO_INPUT = 64 * 1024

_LOCATION = re.compile(r"^projects/[^/]+/locations/[^/]+$")
_NONCE_BYTES = 12
_NUMBER_BYTES = 4


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Version:
    number: int
    created: datetime
    material: bytes | None = field(repr=False)
    state: State = State.ENABLED
    destroy_time: datetime | None = None
    destroyed: datetime | None = None

    def settle(self, now: datetime) -> None:
        """Carry out a scheduled destruction whose time has come."""
        if self.state is State.DESTROY_SCHEDULED and self.destroy_time and self.destroy_time <= now:
            self.state, self.material, self.destroyed = State.DESTROYED, None, self.destroy_time


@dataclass
class CryptoKey:
    name: str
    created: datetime
    labels: dict[str, str]
    destroy_scheduled: timedelta
    versions: dict[int, Version] = field(default_factory=dict)
    primary: int | None = None

    def version(self, number: int, now: datetime) -> Version:
        found = self.versions.get(number)
        if found is None:
            raise KmsFault(Status.NOT_FOUND, f"{self.name}/cryptoKeyVersions/{number} not found.")
        found.settle(now)
        return found

    def add_version(self, now: datetime) -> Version:
        version = Version(max(self.versions, default=0) + 1, now, AESGCM.generate_key(256))
        self.versions[version.number] = version
        return version


@dataclass
class KeyRing:
    name: str
    created: datetime
    crypto_keys: dict[str, CryptoKey] = field(default_factory=dict)


class KeyStore:
    """Every key ring of every project and location; one lock, held per call."""

    def __init__(self, now: Callable[[], datetime] = _now) -> None:
        self._rings: dict[str, KeyRing] = {}
        self._lock = threading.Lock()
        self.now = now

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock:
            yield

    # -- key rings -----------------------------------------------------------------

    def create_key_ring(self, parent: str, ring_id: str) -> KeyRing:
        _require_location(parent)
        _require_id(ring_id, "key_ring_id")
        name = f"{parent}/keyRings/{ring_id}"
        if name in self._rings:
            raise KmsFault(Status.ALREADY_EXISTS, f"KeyRing {name} already exists.")
        self._rings[name] = ring = KeyRing(name, self.now())
        return ring

    def key_rings(self, parent: str) -> list[KeyRing]:
        _require_location(parent)
        return [r for n, r in sorted(self._rings.items()) if n.startswith(f"{parent}/keyRings/")]

    def key_ring(self, name: str) -> KeyRing:
        ring = self._rings.get(name)
        if ring is None:
            if "/keyRings/" not in name or not _LOCATION.match(name.partition("/keyRings/")[0]):
                raise KmsFault(Status.INVALID_ARGUMENT, f"{name!r} is not a KeyRing name.")
            raise KmsFault(Status.NOT_FOUND, f"KeyRing {name} not found.")
        return ring

    # -- crypto keys ---------------------------------------------------------------

    def create_crypto_key(
        self,
        parent: str,
        key_id: str,
        labels: dict[str, str],
        destroy_scheduled: timedelta | None,
    ) -> CryptoKey:
        ring = self.key_ring(parent)
        _require_id(key_id, "crypto_key_id")
        _require_labels(labels)
        duration = DEFAULT_DESTROY_SCHEDULED if destroy_scheduled is None else destroy_scheduled
        if not MIN_DESTROY_SCHEDULED <= duration <= MAX_DESTROY_SCHEDULED:
            raise KmsFault(
                Status.INVALID_ARGUMENT,
                "destroy_scheduled_duration must be between 24 hours and 120 days.",
            )
        name = f"{parent}/cryptoKeys/{key_id}"
        if key_id in ring.crypto_keys:
            raise KmsFault(Status.ALREADY_EXISTS, f"CryptoKey {name} already exists.")
        key = CryptoKey(name, self.now(), dict(labels), duration)
        key.primary = key.add_version(self.now()).number  # the initial version is the primary
        ring.crypto_keys[key_id] = key
        return key

    def crypto_keys(self, parent: str) -> list[CryptoKey]:
        return [k for _, k in sorted(self.key_ring(parent).crypto_keys.items())]

    def crypto_key(self, name: str) -> CryptoKey:
        ring_name, sep, key_id = name.rpartition("/cryptoKeys/")
        if not sep or "/" in key_id:
            raise KmsFault(Status.INVALID_ARGUMENT, f"{name!r} is not a CryptoKey name.")
        key = self.key_ring(ring_name).crypto_keys.get(key_id)
        if key is None:
            raise KmsFault(Status.NOT_FOUND, f"CryptoKey {name} not found.")
        for version in key.versions.values():
            version.settle(self.now())
        return key

    def set_labels(self, name: str, labels: dict[str, str]) -> CryptoKey:
        key = self.crypto_key(name)
        _require_labels(labels)
        key.labels = dict(labels)
        return key

    def set_primary(self, name: str, version_id: str) -> CryptoKey:
        key = self.crypto_key(name)
        if not version_id.isdigit():
            raise KmsFault(Status.INVALID_ARGUMENT, "crypto_key_version_id must be a number.")
        version = key.version(int(version_id), self.now())
        if version.state is not State.ENABLED:
            raise KmsFault(
                Status.FAILED_PRECONDITION,
                f"The request cannot be fulfilled. {key.name}/cryptoKeyVersions/{version.number}"
                f" is not enabled (state {version.state.value}).",
            )
        key.primary = version.number
        return key

    # -- versions -------------------------------------------------------------------

    def add_version(self, parent: str) -> tuple[CryptoKey, Version]:
        """A new ENABLED version; not the primary (UpdateCryptoKeyPrimaryVersion's job)."""
        key = self.crypto_key(parent)
        return key, key.add_version(self.now())

    def version(self, name: str) -> tuple[CryptoKey, Version]:
        key_name, sep, number = name.rpartition("/cryptoKeyVersions/")
        if not sep or not number.isdigit():
            raise KmsFault(Status.INVALID_ARGUMENT, f"{name!r} is not a CryptoKeyVersion name.")
        key = self.crypto_key(key_name)
        return key, key.version(int(number), self.now())

    def versions(self, parent: str) -> list[Version]:
        key = self.crypto_key(parent)
        return [key.version(n, self.now()) for n in sorted(key.versions)]

    def set_state(self, name: str, state: State) -> Version:
        _, version = self.version(name)
        if state not in (State.ENABLED, State.DISABLED):
            raise KmsFault(
                Status.INVALID_ARGUMENT,
                "state can only be changed to ENABLED or DISABLED with UpdateCryptoKeyVersion.",
            )
        if version.state not in (State.ENABLED, State.DISABLED):
            raise KmsFault(
                Status.FAILED_PRECONDITION,
                f"The request cannot be fulfilled. {name} is in state {version.state.value}.",
            )
        version.state = state
        return version

    def destroy(self, name: str) -> Version:
        key, version = self.version(name)
        if version.state not in (State.ENABLED, State.DISABLED):
            raise KmsFault(
                Status.FAILED_PRECONDITION,
                f"The request cannot be fulfilled. {name} is in state {version.state.value}.",
            )
        version.state = State.DESTROY_SCHEDULED
        version.destroy_time = self.now() + key.destroy_scheduled
        return version

    # -- cryptography ---------------------------------------------------------------

    def encrypt(self, name: str, plaintext: bytes, aad: bytes) -> tuple[CryptoKey, Version, bytes]:
        """Encrypt with the primary (a CryptoKey name) or the named version."""
        _require_sizes(plaintext, aad)
        if "/cryptoKeyVersions/" in name:
            key, version = self.version(name)
        else:
            key = self.crypto_key(name)
            if key.primary is None:
                raise KmsFault(Status.FAILED_PRECONDITION, f"{name} has no primary version.")
            version = key.version(key.primary, self.now())
        material = _usable(key, version)
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(material).encrypt(nonce, plaintext, aad)
        # Opaque to clients: which version, then AES-256-GCM's nonce and output.
        return key, version, version.number.to_bytes(_NUMBER_BYTES, "big") + nonce + sealed

    def decrypt(self, name: str, ciphertext: bytes, aad: bytes) -> tuple[Version, bytes]:
        """Decrypt with whichever version of CryptoKey `name` made `ciphertext`."""
        _require_sizes(b"", aad)
        key = self.crypto_key(name)
        header = _NUMBER_BYTES + _NONCE_BYTES
        number = int.from_bytes(ciphertext[:_NUMBER_BYTES], "big")
        if len(ciphertext) <= header or number not in key.versions:
            raise KmsFault(Status.INVALID_ARGUMENT, "Decryption failed: the ciphertext is invalid.")
        version = key.version(number, self.now())
        material = _usable(key, version)
        try:
            nonce, sealed = ciphertext[_NUMBER_BYTES:header], ciphertext[header:]
            return version, AESGCM(material).decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise KmsFault(
                Status.INVALID_ARGUMENT,
                "Decryption failed: verify that 'name' refers to the correct CryptoKey and that "
                "the additional authenticated data matches.",
            ) from None


def page(items: Sequence[object], size: int, token: str) -> tuple[int, int, str]:
    """The slice [start, end) of a listing and the token of the next page ('' at the end)."""
    if size < 0:
        raise KmsFault(Status.INVALID_ARGUMENT, "page_size must not be negative.")
    if token and not token.isdigit():
        raise KmsFault(Status.INVALID_ARGUMENT, "page_token is invalid.")
    start = int(token or 0)
    end = min(len(items), start + (size or 1000))
    return start, end, str(end) if end < len(items) else ""


def _usable(key: CryptoKey, version: Version) -> bytes:
    if version.state is not State.ENABLED or version.material is None:
        raise KmsFault(
            Status.FAILED_PRECONDITION,
            f"The request cannot be fulfilled. {key.name}/cryptoKeyVersions/{version.number} "
            f"is not enabled, current state is: {version.state.value}.",
        )
    return version.material


def _require_location(parent: str) -> None:
    if not _LOCATION.match(parent):
        raise KmsFault(Status.INVALID_ARGUMENT, f"{parent!r} is not a location name.")


def _require_id(value: str, field_name: str) -> None:
    if not _ID.match(value):
        raise KmsFault(
            Status.INVALID_ARGUMENT, f"{field_name} must match [a-zA-Z0-9_-]{{1,63}}: {value!r}."
        )


def _require_labels(labels: dict[str, str]) -> None:
    if len(labels) > MAX_LABELS:
        raise KmsFault(Status.INVALID_ARGUMENT, f"at most {MAX_LABELS} labels are allowed.")
    for key, value in labels.items():
        if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            raise KmsFault(
                Status.INVALID_ARGUMENT,
                f"invalid label {key!r}: {value!r}: keys start with a lowercase letter; keys "
                "and values hold at most 63 lowercase letters, digits, '_' or '-'.",
            )


def _require_sizes(plaintext: bytes, aad: bytes) -> None:
    if len(plaintext) > MAX_CRYPTO_INPUT or len(aad) > MAX_CRYPTO_INPUT:
        raise KmsFault(
            Status.INVALID_ARGUMENT,
            "plaintext and additional_authenticated_data must be at most 64 KiB each.",
        )
