"""The envelope: a small versioned header, the wrapped data key, AES-256-GCM.

    b"KLE" | format 0x01 | ledger key id (16) | wrapped length (u16) | wrapped key
          | nonce (12) | ciphertext + tag (16)

The header names the ledger row of the key version that wrapped the data key,
so data written before a rotation still finds its version. Header and context
are both bound as AAD: changing either, or the ciphertext, fails the tag.
"""

from __future__ import annotations

import json
import os
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyledger.errors import CiphertextInvalid, DecryptionFailed

MAGIC = b"KLE"
FORMAT_VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
DATA_KEY_BYTES = 32
_FIXED = struct.Struct(">3sB16sH")  # magic, format, key id, wrapped length

Context = Mapping[str, str]


@dataclass(frozen=True)
class Envelope:
    key_id: uuid.UUID
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes  # with the GCM tag at its end
    header: bytes  # everything before the ciphertext, as bound into the AAD


def seal(
    key_id: uuid.UUID, wrapped_key: bytes, data_key: bytes, plaintext: bytes, context: Context
) -> bytes:
    if len(data_key) != DATA_KEY_BYTES:
        raise ValueError("data keys are AES-256 keys (32 bytes)")
    if len(wrapped_key) > 0xFFFF:
        raise ValueError("wrapped data key longer than the envelope can hold")
    nonce = os.urandom(NONCE_BYTES)  # a data key seals at most a bounded number of messages
    header = (
        _FIXED.pack(MAGIC, FORMAT_VERSION, key_id.bytes, len(wrapped_key)) + wrapped_key + nonce
    )
    return header + AESGCM(data_key).encrypt(nonce, plaintext, _aad(header, context))


def parse(blob: bytes) -> Envelope:
    """Read the header; says what is wrong with bytes that are not an envelope."""
    if len(blob) < _FIXED.size or blob[:3] != MAGIC:
        raise CiphertextInvalid("not a keyledger ciphertext (no KLE header)")
    magic, version, key_id, wrapped_length = _FIXED.unpack_from(blob)
    del magic
    if version != FORMAT_VERSION:
        raise CiphertextInvalid(
            f"keyledger ciphertext format {version} is not supported by this client "
            f"(it reads format {FORMAT_VERSION}); upgrade the keyledger client"
        )
    start = _FIXED.size
    nonce_at = start + wrapped_length
    body_at = nonce_at + NONCE_BYTES
    if len(blob) < body_at + TAG_BYTES:
        raise CiphertextInvalid("keyledger ciphertext is truncated")
    return Envelope(
        key_id=uuid.UUID(bytes=key_id),
        wrapped_key=blob[start:nonce_at],
        nonce=blob[nonce_at:body_at],
        ciphertext=blob[body_at:],
        header=blob[:body_at],
    )


def open_envelope(envelope: Envelope, data_key: bytes, context: Context) -> bytes:
    try:
        return AESGCM(data_key).decrypt(
            envelope.nonce, envelope.ciphertext, _aad(envelope.header, context)
        )
    except InvalidTag:
        raise DecryptionFailed(
            f"ciphertext under key id {envelope.key_id} does not open: it was altered, "
            "or the encryption context differs from the one it was written with"
        ) from None


def _aad(header: bytes, context: Context) -> bytes:
    for name, value in context.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("encryption context maps strings to strings")
    canonical = json.dumps(dict(context), sort_keys=True, separators=(",", ":"))
    return header + b"\x00" + canonical.encode("utf-8")
