"""Data keys held between calls, with everything a cached call needs beside them.

A data key for encryption is retired when it gets too old or has sealed too
many messages or too many bytes; each limit bounds what one leaked data key
exposes and keeps random GCM nonces far from their collision bound. Unwrapped
data keys for decryption are kept for a while, in a bounded LRU.

A cached call finds its sealer or opener (the last one used, else a dictionary
lookup), reads the clock and compares it with `expires` (the earliest of: the
version check running out, the data key's age limit, the usage flush falling
due): no ledger read, no key object built, and the context's encoding reused
while the calls' contexts are equal. The client renews `expires` after
re-reading the version, and drops the entry when the ledger says the key
changed; what a cache drops it revokes (expires), as the client may still hold
it as the last one used.

Sealers and openers are the records' writer and reader (envelope.py holds the
format, and `seal` and `open_envelope` spelled out for tests and tools); a cached
decrypt reads with the opener's parts itself, a call less (KeyledgerClient.decrypt).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyledger.client.envelope import (
    FORMAT_RECORD,
    FORMAT_STREAM,
    NONCE_BYTES,
    NONCE_IN_AAD,
    TAG_BYTES,
    Blob,
    Context,
    bind_context,
    does_not_open,
    record_splitter,
)
from keyledger.client.nonces import NoncePool
from keyledger.client.usage import LastUse
from keyledger.client.versions import Version
from keyledger.errors import CiphertextInvalid, DecryptionFailed

# Below this size copying is cheaper than a view or a pre-sized buffer; above it a
# second message-sized buffer makes the allocator fault pages in on every call.
ONE_BUFFER_FROM = 1 << 16


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


class Sealer:
    """The current data key of one (tenant, key name), ready to seal: its version,
    the head every record under it starts with, and what it may still seal.

    Like an opener, it seals from the cache (`seal`) only while the cache holds it:
    it starts expired, the cache renews it, and revokes it when it drops it."""

    __slots__ = (
        "_bound",
        "_bytes_left",
        "_cipher",
        "_head",
        "_lock",
        "_messages_left",
        "_nonces",
        "_retires",
        "_use",
        "expires",
        "head",
        "key_name",
        "tenant",
        "version",
    )

    def __init__(
        self,
        version: Version,
        head: bytes,
        cipher: AESGCM,
        born: float,
        limits: CacheLimits,
        use: LastUse,
    ) -> None:
        if head[3] != FORMAT_RECORD:
            raise ValueError(f"a sealer writes format {FORMAT_RECORD} records only")
        self.version = version
        self.tenant = version.tenant
        self.key_name = version.key_name
        self.head = head
        self._head = bytearray(head)  # each record's buffer starts as a copy of it
        self._cipher = cipher
        self._retires = born + limits.max_age_s
        self.expires = float("-inf")
        self._messages_left = limits.max_messages
        self._bytes_left = limits.max_bytes
        self._use = use
        self._lock = threading.Lock()
        self._nonces = NoncePool()  # drawn from under _lock
        self._bound = bind_context(None, head)  # the whole AAD, for calls without context

    def renew(self, version: Version, checked_until: float) -> None:
        """`version` was read again; it holds until `checked_until`. Only for a sealer
        the cache holds."""
        self.version = version
        self.expires = min(checked_until, self._retires)

    def revoke(self) -> None:
        """Dropped from the cache: from now on every record goes the checked path."""
        self.expires = float("-inf")

    def seal(self, plaintext: bytes, context: Context | None, now: float) -> bytearray | None:
        """The sealed record, counted against the data key's limits; None when the
        version check or the data key ran out (the caller re-reads or makes a new one)."""
        size = len(plaintext)
        # acquire/release rather than `with`: half the cost, on every call.
        self._lock.acquire()
        try:
            if now >= self.expires or self._messages_left <= 0 or self._bytes_left < size:
                return None
            self._messages_left -= 1
            self._bytes_left -= size
            free = self._nonces.free
            nonce = free.pop() if free else self._nonces.refill()
        finally:
            self._lock.release()
        self._use.at = now
        # _write, spelled out below ONE_BUFFER_FROM: a call less on every cached encrypt.
        copy, aad = self._bound
        if context != copy:
            self._bound = bound = bind_context(context, self.head)
            aad = bound[1]
        if size >= ONE_BUFFER_FROM:
            return self._write(nonce, plaintext, context)
        record = self._head + nonce  # a new bytearray: the record's own
        record += self._cipher.encrypt(nonce, plaintext, aad)
        return record

    def seal_checked(
        self, plaintext: bytes, context: Context | None, now: float
    ) -> bytearray | None:
        """`seal` right after the version was read again (with version_check_s 0 its
        check has already run out): only the data key's own limits apply."""
        with self._lock:
            if now >= self._retires or self._messages_left <= 0:
                return None
            if self._bytes_left < len(plaintext):
                return None
            self._messages_left -= 1
            self._bytes_left -= len(plaintext)
            free = self._nonces.free
            nonce = free.pop() if free else self._nonces.refill()
        self._use.at = now
        return self._write(nonce, plaintext, context)

    def seal_first(self, plaintext: bytes, context: Context | None, now: float) -> bytearray:
        """The first record of a new data key: sealed whatever its size, as any data
        key seals at least one message."""
        with self._lock:
            self._messages_left -= 1
            self._bytes_left -= len(plaintext)
            free = self._nonces.free
            nonce = free.pop() if free else self._nonces.refill()
        self._use.at = now
        return self._write(nonce, plaintext, context)

    def _write(self, nonce: bytes, plaintext: bytes, context: Context | None) -> bytearray:
        """A format 4 record: the head, `nonce` (fresh from the pool), the sealed
        plaintext. One buffer of the record's size is returned, not copied into bytes:
        at 1 MiB a second buffer costs eight times the encryption. `seal` spells out
        the records below ONE_BUFFER_FROM."""
        copy, aad = self._bound
        if context != copy:
            self._bound = bound = bind_context(context, self.head)
            aad = bound[1]
        header = self._head + nonce  # a new bytearray: below 64 KiB, the record's own
        if len(plaintext) < ONE_BUFFER_FROM:
            header += self._cipher.encrypt(nonce, plaintext, aad)
            return header
        sealed = bytearray(len(header) + len(plaintext) + TAG_BYTES)
        sealed[: len(header)] = header
        body = memoryview(sealed)[len(header) :]
        self._cipher.encrypt_into(nonce, plaintext, aad, body)
        return sealed


class Opener:
    """An unwrapped data key, ready to open the records that start with its head.

    It opens records from the cache (`expires`) only while the cache holds it: it
    starts expired, the cache renews it, and revokes it when it drops it, so that a
    reference kept elsewhere (the client's last opener) opens nothing after a forget."""

    __slots__ = (
        "_records",
        "_retires",
        "aad_head",
        "body_at",
        "bound",
        "cipher",
        "expires",
        "head",
        "nonce_in_aad",
        "split",
        "tenant",
        "use",
        "used",
        "version",
    )

    def __init__(
        self,
        version: Version,
        head: bytes,
        cipher: AESGCM,
        born: float,
        limits: CacheLimits,
        use: LastUse,
    ) -> None:
        self.version = version
        self.head = head
        self.split = record_splitter(len(head))  # a record into this head and its nonce
        # Whose data the head says this is (format 1 heads say nothing: the version's).
        self.tenant = version.tenant
        self.cipher = cipher
        self.body_at = len(head) + NONCE_BYTES
        self._records = head[3:4] != bytes((FORMAT_STREAM,))
        self._retires = born + limits.max_age_s
        self.expires = float("-inf")
        self.used = born
        self.use = use
        # A format 4 record's AAD is one value per context (kept in `bound`); one of
        # format 1 or 2 binds its nonce too, and is joined on every record.
        self.nonce_in_aad = head[3] in NONCE_IN_AAD
        self.aad_head = b"" if self.nonce_in_aad else head
        self.bound = bind_context(None, self.aad_head)

    def renew(self, version: Version, checked_until: float) -> None:
        """`version` was read again; records open from the cache until `checked_until`.
        Only for an opener the cache holds. A stream's opener never opens records: its
        cipher opens segments, from decrypt_stream."""
        self.version = version
        self.expires = min(checked_until, self._retires) if self._records else float("-inf")

    def revoke(self) -> None:
        """Dropped from the cache: from now on every record goes the checked path."""
        self.expires = float("-inf")

    def retired(self, now: float) -> bool:
        """Whether the data key is past its age limit (not just its version check)."""
        return now >= self._retires

    def open(
        self, blob: Blob, head: bytes, nonce: bytes, context: Context | None, now: float
    ) -> bytes:
        """The plaintext of the record `blob`, split (`split`) into its `head`, this
        opener's, and `nonce`. KeyledgerClient.decrypt spells it out for cached calls."""
        copy, aad = self.bound
        if context != copy:
            self.bound = bound = bind_context(context, self.aad_head)
            aad = bound[1]
        if self.nonce_in_aad:
            aad = b"".join((head, nonce, aad))
        body_at = self.body_at
        # At 1 MiB a copy of the ciphertext costs as much as its decryption; at 1 KiB a
        # view costs more than the copy.
        body = blob[body_at:] if len(blob) < ONE_BUFFER_FROM else memoryview(blob)[body_at:]
        try:
            plaintext = self.cipher.decrypt(nonce, body, aad)
        except InvalidTag:
            raise self.refusal(body) from None
        self.used = self.use.at = now
        return plaintext

    def refusal(self, body: Blob | memoryview) -> CiphertextInvalid | DecryptionFailed:
        """What a record whose `body` (ciphertext and tag) failed its tag is told. A body
        shorter than a tag fails too: told apart only here, off the path of every record
        that opens."""
        if len(body) < TAG_BYTES:
            return CiphertextInvalid("keyledger ciphertext is truncated")
        return does_not_open(self.version.id)


class SealerCache(dict[tuple[str, str], Sealer]):
    """Sealers by (tenant, key name). Callers hold a lock for everything but `get`.
    Every sealer it drops, it revokes."""

    __slots__ = ("limits",)

    def __init__(self, limits: CacheLimits) -> None:
        super().__init__()
        self.limits = limits

    def put(self, sealer: Sealer) -> bool:
        """Whether `sealer` is held now (not when caching is off); the caller renews it."""
        if self.limits.max_age_s <= 0:
            return False
        key = (sealer.tenant, sealer.key_name)
        replaced = self.get(key)
        if replaced is not None and replaced is not sealer:
            replaced.revoke()
        self[key] = sealer
        return True

    def drop_key(self, tenant: str, key_name: str) -> None:
        dropped = self.pop((tenant, key_name), None)
        if dropped is not None:
            dropped.revoke()

    def drop_all(self) -> None:
        for sealer in self.values():
            sealer.revoke()
        self.clear()


class OpenerCache(dict[bytes, Opener]):
    """Openers by head bytes (a head names its version, tenant and wrapped data key),
    the least recently used out beyond `max_decrypt_entries`. Callers hold a lock
    for everything but `get`. Every opener it drops, it revokes."""

    # No instance dict: `get`, on every decrypt, is then found without looking in one.
    __slots__ = ("limits",)

    def __init__(self, limits: CacheLimits) -> None:
        super().__init__()
        self.limits = limits

    def put(self, head: bytes, opener: Opener) -> bool:
        """Whether `opener` is held now (not when caching is off); the caller renews it."""
        if self.limits.max_age_s <= 0 or self.limits.max_decrypt_entries == 0:
            return False
        replaced = self.get(head)
        if replaced is not None and replaced is not opener:
            replaced.revoke()
        self[head] = opener
        if len(self) > self.limits.max_decrypt_entries:
            # A scan on a miss (which waits on the KMS anyway) keeps hits to one store.
            self.pop(min(self, key=lambda cached: self[cached].used)).revoke()
        return True

    def drop_version(self, key_id: uuid.UUID) -> None:
        for head in [h for h, o in self.items() if o.version.id == key_id]:
            self.pop(head).revoke()

    def drop_key(self, tenant: str, key_name: str) -> None:
        """Every version of one key: what the ledger says changed."""
        for head in [h for h, o in self.items() if _of_key(o.version, tenant, key_name)]:
            self.pop(head).revoke()

    def drop_all(self) -> None:
        for opener in self.values():
            opener.revoke()
        self.clear()


def _of_key(version: Version, tenant: str, key_name: str) -> bool:
    return version.tenant == tenant and version.key_name == key_name
