"""The envelope: a small versioned header, the wrapped data key, AES-256-GCM.

    format 4 (written now):
    b"KLE" | 0x04 | ledger key id (16) | tenant length (u16) | tenant (UTF-8)
          | wrapped length (u16) | wrapped key | nonce (12) | ciphertext + tag (16)
    AAD: everything before the nonce | 0x00 | context

    format 2 (written before format 4; still opened): the same bytes after 0x02,
    AAD: everything before the ciphertext (the nonce too) | 0x00 | context

    format 1 (written before tenants were bound; still opened):
    b"KLE" | 0x01 | ledger key id (16) | wrapped length (u16) | wrapped key
          | nonce (12) | ciphertext + tag (16)
    AAD: as format 2's

    format 3 is a stream (keyledger.client.stream): the same head, then segments.

The header names the ledger row of the key version that wrapped the data key,
so data written before a rotation still finds its version, and (from format 2)
the tenant it was sealed for. Head and context are both bound as AAD:
changing either, or the ciphertext, fails the tag. So does changing the nonce,
which GCM authenticates itself (the tag is masked with the encryption of the
nonce's first counter block): format 4 leaves it out of the AAD, which makes the
AAD one value per data key and context, made once instead of on every record.
A format 1 blob carries no tenant; its tenant is the one the ledger gives its
key version, checked the same way.
"""

from __future__ import annotations

import functools
import json
import os
import struct
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyledger.errors import CiphertextInvalid, DecryptionFailed

MAGIC = b"KLE"
FORMAT_UNBOUND = 1  # no tenant in the header: written by clients before format 2
FORMAT_NONCE_BOUND = 2  # the nonce in the AAD: written by clients before format 4
FORMAT_STREAM = 3
FORMAT_RECORD = 4
FORMAT_VERSION = FORMAT_RECORD  # what `seal` writes
READABLE = (FORMAT_UNBOUND, FORMAT_NONCE_BOUND, FORMAT_STREAM, FORMAT_RECORD)
# The record formats whose AAD starts with the head and the nonce, not the head alone.
NONCE_IN_AAD = (FORMAT_UNBOUND, FORMAT_NONCE_BOUND)
NONCE_BYTES = 12
TAG_BYTES = 16
DATA_KEY_BYTES = 32
_START = struct.Struct(">3sB16s")  # magic, format, key id
_LENGTH = struct.Struct(">H")

Context = Mapping[str, str]
Blob = bytes | bytearray  # what decrypt takes: stored bytes, or what encrypt returned


@dataclass(frozen=True)
class Head:
    """What every format starts with: whose key version wrapped which data key."""

    format: int
    key_id: uuid.UUID
    tenant: str | None  # None in format 1
    wrapped_key: bytes
    raw: bytes  # the bytes read, as bound into the AAD


@dataclass(frozen=True)
class Envelope:
    head: Head
    nonce: bytes
    ciphertext: bytes | memoryview  # with the GCM tag at its end
    header: bytes  # everything before the ciphertext

    @property
    def bound(self) -> bytes:
        """What of the header the AAD binds (before the context): the head, and in
        formats 1 and 2 the nonce too."""
        return self.header if self.head.format in NONCE_IN_AAD else self.head.raw

    @property
    def key_id(self) -> uuid.UUID:
        return self.head.key_id

    @property
    def wrapped_key(self) -> bytes:
        return self.head.wrapped_key

    @property
    def tenant(self) -> str | None:
        return self.head.tenant


def pack_head(format_: int, key_id: uuid.UUID, tenant: str, wrapped_key: bytes) -> bytes:
    encoded = tenant.encode("utf-8")
    if not encoded or len(encoded) > 0xFFFF:
        raise ValueError("the tenant must be a non-empty name")
    if len(wrapped_key) > 0xFFFF:
        raise ValueError("wrapped data key longer than the envelope can hold")
    return (
        _START.pack(MAGIC, format_, key_id.bytes)
        + _LENGTH.pack(len(encoded))
        + encoded
        + _LENGTH.pack(len(wrapped_key))
        + wrapped_key
    )


def read_head(read: Callable[[int], bytes]) -> Head:
    """Read the head of any format through `read(n)` (which returns fewer bytes only at
    the end); says what is wrong with bytes that are not keyledger's."""
    raw = bytearray()

    def take(size: int) -> bytes:
        chunk = read(size)
        raw.extend(chunk)
        if len(chunk) < size:
            raise CiphertextInvalid("keyledger ciphertext is truncated")
        return chunk

    start = read(_START.size)
    raw.extend(start)
    if len(start) < _START.size or start[:3] != MAGIC:
        raise CiphertextInvalid("not a keyledger ciphertext (no KLE header)")
    _, format_, key_id = _START.unpack(start)
    _check_format(format_)
    tenant = None
    if format_ != FORMAT_UNBOUND:
        (tenant_length,) = _LENGTH.unpack(take(_LENGTH.size))
        tenant = _tenant(take(tenant_length))
    (wrapped_length,) = _LENGTH.unpack(take(_LENGTH.size))
    wrapped = take(wrapped_length)
    return Head(format_, uuid.UUID(bytes=key_id), tenant, wrapped, bytes(raw))


def seal(
    key_id: uuid.UUID,
    tenant: str,
    wrapped_key: bytes,
    data_key: bytes,
    plaintext: bytes,
    context: Context,
) -> bytearray:
    """One format 4 record, spelled out: what the client's sealers write (cache.py),
    for tests and tools that seal without a client."""
    if len(data_key) != DATA_KEY_BYTES:
        raise ValueError("data keys are AES-256 keys (32 bytes)")
    nonce = os.urandom(NONCE_BYTES)
    head = pack_head(FORMAT_RECORD, key_id, tenant, wrapped_key)
    sealed = AESGCM(data_key).encrypt(nonce, plaintext, aad(head, context))
    return bytearray(head + nonce + sealed)


def record_head(blob: Blob) -> bytes:
    """A record's head (format 1, 2 or 4, up to the nonce) read by its length fields
    alone, b"" when `blob` has none: the key of the opener lookup when the blob's first
    split (record_splitter) finds none. Nothing is checked here; a head no opener holds
    goes through `parse`, which says what is wrong."""
    try:
        format_ = blob[3]
        if format_ == FORMAT_UNBOUND:
            at = 20
        elif format_ in (FORMAT_NONCE_BOUND, FORMAT_RECORD):
            at = 22 + (blob[20] << 8 | blob[21])
        else:
            return b""
        return bytes(blob[: at + 2 + (blob[at] << 8 | blob[at + 1])])
    except IndexError:
        return b""


@functools.lru_cache(maxsize=64)
def record_splitter(head_bytes: int) -> Callable[[Blob], tuple[bytes, bytes]]:
    """What splits a record whose head is `head_bytes` long into that head and its
    nonce, both bytes (from a bytearray too), in one call: on every decrypt's path.
    Raises struct.error for a blob shorter than both."""
    return struct.Struct(f"{head_bytes}s{NONCE_BYTES}s").unpack_from


def parse(blob: Blob) -> Envelope:
    """Read a record's header; says what is wrong with bytes that are not an envelope.

    read_head's equal for whole blobs, by offsets: this is on every decrypt's path."""
    if len(blob) < _START.size or blob[:3] != MAGIC:
        raise CiphertextInvalid("not a keyledger ciphertext (no KLE header)")
    _, format_, key_id = _START.unpack_from(blob)
    _check_format(format_)
    if format_ == FORMAT_STREAM:
        raise CiphertextInvalid(
            "this is a keyledger stream (a backup, a file): open it with decrypt_stream "
            "or `keyledger decrypt`, not decrypt"
        )
    offset = _START.size
    tenant = None
    try:
        if format_ != FORMAT_UNBOUND:
            (tenant_length,) = _LENGTH.unpack_from(blob, offset)
            offset += _LENGTH.size + tenant_length
            tenant = _tenant(blob[offset - tenant_length : offset])
        (wrapped_length,) = _LENGTH.unpack_from(blob, offset)
    except struct.error:
        raise CiphertextInvalid("keyledger ciphertext is truncated") from None
    wrapped_at = offset + _LENGTH.size
    nonce_at = wrapped_at + wrapped_length
    body_at = nonce_at + NONCE_BYTES
    if len(blob) < body_at + TAG_BYTES:
        raise CiphertextInvalid("keyledger ciphertext is truncated")
    head = Head(
        format_,
        uuid.UUID(bytes=key_id),
        tenant,
        bytes(blob[wrapped_at:nonce_at]),
        bytes(blob[:nonce_at]),
    )
    # The ciphertext is a view into the blob, not a copy: at 1 MiB a copy costs as
    # much as the decryption itself.
    return Envelope(
        head=head,
        nonce=bytes(blob[nonce_at:body_at]),
        ciphertext=memoryview(blob)[body_at:],
        header=bytes(blob[:body_at]),
    )


def _check_format(format_: int) -> None:
    if format_ not in READABLE:
        raise CiphertextInvalid(
            f"keyledger ciphertext format {format_} is not supported by this client "
            f"(it reads formats {', '.join(map(str, READABLE))}); upgrade the keyledger client"
        )


def _tenant(encoded: bytes | bytearray) -> str:
    try:
        return encoded.decode("utf-8")
    except UnicodeDecodeError:
        raise CiphertextInvalid("keyledger ciphertext names no readable tenant") from None


def open_envelope(envelope: Envelope, data_key: bytes, context: Context) -> bytes:
    try:
        return AESGCM(data_key).decrypt(
            envelope.nonce, envelope.ciphertext, aad(envelope.bound, context)
        )
    except InvalidTag:
        raise does_not_open(envelope.key_id) from None


def does_not_open(key_id: uuid.UUID) -> DecryptionFailed:
    return DecryptionFailed(
        f"ciphertext under key id {key_id} does not open: it was altered, "
        "or the encryption context differs from the one it was written with"
    )


def aad(bound: Blob, context: Context) -> bytes:
    """The AAD of a record or stream whose header binds `bound` (Envelope.bound)."""
    return b"\x00".join((bound, _canonical(context)))


BoundContext = tuple[dict[str, str] | None, bytes]


def bind_context(context: Context | None, head: bytes) -> BoundContext:
    """A record's AAD from `head` on (see `aad`), beside a copy of `context`: a sealer
    or opener keeps the pair, and reuses the bytes while a call's context equals the
    copy (a copy, as a caller may change its dict between calls; equal contexts encode
    alike, the same object or not). `head` is a format 4 record's head: its AAD is then
    whole. A format 1 or 2 opener passes b"" and puts the head and nonce before it."""
    return (None if context is None else dict(context), aad(head, context or {}))


def _canonical(context: Context) -> bytes:
    """The context as sorted, compact JSON; services pass the same few contexts over
    and over, so their encodings are kept (bounded), checked when first made."""
    items = tuple(context.items())
    try:
        return _CANONICAL[items]
    except KeyError:
        pass
    except TypeError:  # an unhashable value: not a string, refused below
        items = ()
    for name, value in context.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("encryption context maps strings to strings")
    encoded = json.dumps(dict(context), sort_keys=True, separators=(",", ":")).encode("utf-8")
    if items:
        if len(_CANONICAL) >= _CANONICAL_MAX:
            _CANONICAL.clear()
        _CANONICAL[items] = encoded
    return encoded


_CANONICAL: dict[tuple[tuple[str, str], ...], bytes] = {}
_CANONICAL_MAX = 1024
