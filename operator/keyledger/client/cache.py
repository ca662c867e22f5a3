"""Bounded data-key caches: fewer KMS calls without stretching one data key too far.

A data key made for encryption is reused until it is too old, has sealed too
many messages or too many bytes; each limit bounds what one leaked data key
exposes and keeps random GCM nonces far from their collision bound. Unwrapped
data keys for decryption are kept for a while, in a bounded LRU.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CacheLimits:
    max_age_s: float = 300.0
    max_messages: int = 100_000
    max_bytes: int = 1 << 32
    # Unwrapped data keys kept for decryption.
    max_decrypt_entries: int = 1000

    def __post_init__(self) -> None:
        # 2**32 messages is where random 96-bit nonces stop being safe under one key.
        if not 0 < self.max_messages <= 1 << 32:
            raise ValueError("max_messages must be between 1 and 2**32")
        if self.max_age_s < 0 or self.max_bytes <= 0 or self.max_decrypt_entries < 0:
            raise ValueError("cache limits must be positive (max_age_s 0 turns caching off)")


@dataclass
class SealingKey:
    """A data key of one key version, as the KMS made it, and how much it has sealed."""

    key_id: uuid.UUID
    plaintext: bytes = field(repr=False)
    wrapped: bytes
    born: float
    messages: int = 0
    bytes_sealed: int = 0


class SealingKeyCache:
    """One current data key per (tenant, key name)."""

    def __init__(self, limits: CacheLimits) -> None:
        self.limits = limits
        self._keys: dict[tuple[str, str], SealingKey] = {}

    def take(
        self, tenant: str, key_name: str, key_id: uuid.UUID, size: int, now: float
    ) -> SealingKey | None:
        """The cached data key, counted for one more message of `size` bytes, if it
        belongs to the version `key_id` and stays within every limit."""
        cached = self._keys.get((tenant, key_name))
        if cached is None:
            return None
        if (
            cached.key_id != key_id
            or now - cached.born >= self.limits.max_age_s
            or cached.messages + 1 > self.limits.max_messages
            or cached.bytes_sealed + size > self.limits.max_bytes
        ):
            del self._keys[(tenant, key_name)]
            return None
        cached.messages += 1
        cached.bytes_sealed += size
        return cached

    def put(self, tenant: str, key_name: str, fresh: SealingKey, size: int) -> None:
        fresh.messages, fresh.bytes_sealed = 1, size
        if self.limits.max_age_s > 0:
            self._keys[(tenant, key_name)] = fresh

    def drop(self, tenant: str, key_name: str) -> None:
        self._keys.pop((tenant, key_name), None)

    def clear(self) -> None:
        self._keys.clear()


class OpeningKeyCache:
    """Unwrapped data keys by (key version, wrapped bytes), least recently used out."""

    def __init__(self, limits: CacheLimits) -> None:
        self.limits = limits
        self._keys: OrderedDict[tuple[uuid.UUID, bytes], tuple[bytes, float]] = OrderedDict()

    def get(self, key_id: uuid.UUID, wrapped: bytes, now: float) -> bytes | None:
        found = self._keys.get((key_id, wrapped))
        if found is None:
            return None
        plaintext, born = found
        if now - born >= self.limits.max_age_s:
            del self._keys[(key_id, wrapped)]
            return None
        self._keys.move_to_end((key_id, wrapped))
        return plaintext

    def put(self, key_id: uuid.UUID, wrapped: bytes, plaintext: bytes, now: float) -> None:
        if self.limits.max_age_s <= 0 or self.limits.max_decrypt_entries == 0:
            return
        self._keys[(key_id, wrapped)] = (plaintext, now)
        self._keys.move_to_end((key_id, wrapped))
        while len(self._keys) > self.limits.max_decrypt_entries:
            self._keys.popitem(last=False)

    def drop_version(self, key_id: uuid.UUID) -> None:
        for cached in [k for k in self._keys if k[0] == key_id]:
            del self._keys[cached]

    def clear(self) -> None:
        self._keys.clear()
