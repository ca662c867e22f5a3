"""The keys of the Key Vault test server and the rules the public Key Vault REST
documentation states for them, with no HTTP in sight.

A standard-tier vault with soft delete on: RSA keys only (2048, 3072 or 4096
bits), each create on an existing name adds a version, every version has its
own `enabled`, `nbf`, `exp`, key operations and tags. A deleted key keeps its
name (409 Conflict on create) until it is recovered or purged. Only wrapKey and
unwrapKey with RSA-OAEP-256 are implemented as cryptography: what keyledger
uses. Unlike secrets, a disabled key can still be read (its public part and
attributes); only its cryptographic operations are refused (403, KeyDisabled).
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

KEY_SIZES = (2048, 3072, 4096)
KEY_OPERATIONS = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey")
MAX_TAGS = 15
MAX_TAG_NAME = 512
MAX_TAG_VALUE = 256
WRAP_ALGORITHM = "RSA-OAEP-256"
RECOVERABLE_DAYS = 90
_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
_OAEP_256 = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


class VaultFault(Exception):
    """An error answer: HTTP status, the error code, its message, an inner code."""

    def __init__(self, status: int, code: str, message: str, inner: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.inner = status, code, message, inner


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class KeyVersion:
    name: str
    version: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    key_ops: list[str]
    created: datetime
    updated: datetime
    enabled: bool = True
    not_before: datetime | None = None
    expires: datetime | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Key:
    name: str
    versions: list[KeyVersion] = field(default_factory=list)  # oldest first
    deleted: datetime | None = None

    @property
    def current(self) -> KeyVersion:
        return self.versions[-1]


@dataclass(frozen=True)
class Attributes:
    """What a caller may set on a version (None: leave as is)."""

    enabled: bool | None = None
    not_before: datetime | None = None
    expires: datetime | None = None


class Vault:
    def __init__(self, now: Callable[[], datetime] = _now) -> None:
        self._keys: dict[str, Key] = {}  # by lower-cased name: names compare case-insensitively
        self._lock = threading.Lock()
        self.now = now

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock:
            yield

    def create(
        self,
        name: str,
        kty: str,
        size: int | None,
        key_ops: Sequence[str] | None,
        attributes: Attributes,
        tags: Mapping[str, str],
    ) -> KeyVersion:
        if not _NAME.match(name):
            raise VaultFault(
                400, "BadParameter", "The key name must be 1-127 letters, digits or '-'."
            )
        if kty != "RSA":
            raise VaultFault(
                400,
                "BadParameter",
                f"Key type {kty} is not supported by this (standard tier) test vault: use RSA.",
            )
        size = size or 2048
        if size not in KEY_SIZES:
            raise VaultFault(400, "BadParameter", f"RSA key size {size} is not supported.")
        operations = list(key_ops) if key_ops is not None else list(KEY_OPERATIONS)
        unknown = [op for op in operations if op not in KEY_OPERATIONS]
        if unknown:
            raise VaultFault(400, "BadParameter", f"Unknown key operations: {unknown}.")
        _require_tags(tags)
        key = self._keys.get(name.lower())
        if key is not None and key.deleted is not None:
            raise VaultFault(
                409,
                "Conflict",
                f"Key {name} is currently in a deleted but recoverable state, and its name "
                "cannot be reused; in this state, the key can only be recovered or purged.",
                "ObjectIsDeletedButRecoverable",
            )
        if key is None:
            key = self._keys[name.lower()] = Key(name)
        now = self.now()
        version = KeyVersion(
            name=key.name,
            version=secrets.token_hex(16),
            private_key=rsa.generate_private_key(public_exponent=65537, key_size=size),
            key_ops=operations,
            created=now,
            updated=now,
            enabled=True if attributes.enabled is None else attributes.enabled,
            not_before=attributes.not_before,
            expires=attributes.expires,
            tags=dict(tags),
        )
        key.versions.append(version)
        return version

    def key(self, name: str) -> Key:
        key = self._keys.get(name.lower())
        if key is None or key.deleted is not None:
            raise _not_found(name)
        return key

    def version(self, name: str, version: str) -> KeyVersion:
        """Version `version` of key `name`; its current version when `version` is ''."""
        key = self.key(name)
        if not version:
            return key.current
        for candidate in key.versions:
            if candidate.version == version:
                return candidate
        raise _not_found(f"{name}/{version}")

    def keys(self) -> list[Key]:
        return [k for _, k in sorted(self._keys.items()) if k.deleted is None]

    def update(
        self,
        name: str,
        version: str,
        attributes: Attributes,
        tags: Mapping[str, str] | None,
        key_ops: Sequence[str] | None,
    ) -> KeyVersion:
        target = self.version(name, version)
        if tags is not None:
            _require_tags(tags)
            target.tags = dict(tags)
        if key_ops is not None:
            target.key_ops = list(key_ops)
        if attributes.enabled is not None:
            target.enabled = attributes.enabled
        if attributes.not_before is not None:
            target.not_before = attributes.not_before
        if attributes.expires is not None:
            target.expires = attributes.expires
        target.updated = self.now()
        return target

    def wrap_key(self, name: str, version: str, algorithm: str, value: bytes) -> bytes:
        target = self._usable(name, version, "wrapKey", algorithm)
        return target.private_key.public_key().encrypt(value, _OAEP_256)

    def unwrap_key(self, name: str, version: str, algorithm: str, value: bytes) -> bytes:
        target = self._usable(name, version, "unwrapKey", algorithm)
        try:
            return target.private_key.decrypt(value, _OAEP_256)
        except ValueError:
            raise VaultFault(400, "BadParameter", "The parameter is incorrect.") from None

    # -- soft delete ------------------------------------------------------------------

    def delete(self, name: str) -> Key:
        key = self.key(name)
        key.deleted = self.now()
        return key

    def deleted(self, name: str) -> Key:
        key = self._keys.get(name.lower())
        if key is None or key.deleted is None:
            raise VaultFault(404, "KeyNotFound", f"Deleted Key not found: {name}")
        return key

    def recover(self, name: str) -> Key:
        key = self.deleted(name)
        key.deleted = None
        return key

    def purge(self, name: str) -> None:
        key = self.deleted(name)
        del self._keys[key.name.lower()]

    # -- internals ----------------------------------------------------------------------

    def _usable(self, name: str, version: str, operation: str, algorithm: str) -> KeyVersion:
        target = self.version(name, version)
        if algorithm != WRAP_ALGORITHM:
            raise VaultFault(
                400,
                "BadParameter",
                f"Algorithm {algorithm} is not implemented by this test vault: use "
                f"{WRAP_ALGORITHM}.",
            )
        if not target.enabled:
            raise VaultFault(
                403,
                "Forbidden",
                f"Operation {operation} is not allowed on a disabled key.",
                "KeyDisabled",
            )
        now = self.now()
        if (target.not_before and now < target.not_before) or (
            target.expires and now >= target.expires
        ):
            raise VaultFault(
                403,
                "Forbidden",
                f"Operation {operation} is not allowed: the key is outside its validity period.",
            )
        if operation not in target.key_ops:
            raise VaultFault(
                403, "Forbidden", f"Operation {operation} is not permitted on this key."
            )
        return target


def _not_found(what: str) -> VaultFault:
    return VaultFault(
        404,
        "KeyNotFound",
        f"A key with (name/id) {what} was not found in this key vault. If you recently "
        "deleted this key you may be able to recover it using the correct recovery command.",
    )


def _require_tags(tags: Mapping[str, str]) -> None:
    if len(tags) > MAX_TAGS:
        raise VaultFault(400, "BadParameter", f"A key may have at most {MAX_TAGS} tags.")
    for tag, value in tags.items():
        if not tag or len(tag) > MAX_TAG_NAME or len(value) > MAX_TAG_VALUE:
            raise VaultFault(
                400,
                "BadParameter",
                f"Tag names hold 1-{MAX_TAG_NAME} characters, values at most {MAX_TAG_VALUE}.",
            )
