"""The envelope format and the data-key caches, without a KMS."""

from __future__ import annotations

import json
import os
import uuid

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyledger.client.cache import CacheLimits, OpeningKeyCache, SealingKey, SealingKeyCache
from keyledger.client.envelope import open_envelope, parse, seal
from keyledger.errors import CiphertextInvalid, DecryptionFailed

KEY_ID = uuid.uuid4()
DATA_KEY = os.urandom(32)
WRAPPED = b"wrapped-by-the-kms:" + os.urandom(40)
CONTEXT = {"record": "r-1", "tenant": "acme"}


def _blob(plaintext: bytes = b"phi", context: dict[str, str] = CONTEXT) -> bytes:
    return seal(KEY_ID, "acme", WRAPPED, DATA_KEY, plaintext, context)


def test_round_trip_and_header() -> None:
    blob = _blob()
    envelope = parse(blob)
    assert (envelope.key_id, envelope.wrapped_key, envelope.tenant) == (KEY_ID, WRAPPED, "acme")
    assert blob[3] == 2  # the format that binds the tenant
    assert open_envelope(envelope, DATA_KEY, dict(reversed(CONTEXT.items()))) == b"phi"


def test_every_byte_is_protected() -> None:
    blob = _blob(b"x" * 64)
    header_length = len(parse(blob).header)
    # Flip one bit in the key id, the wrapped key, the nonce and the ciphertext.
    for position in (5, 25, header_length - 1, header_length + 3, len(blob) - 1):
        altered = bytearray(blob)
        altered[position] ^= 0x01
        with pytest.raises((DecryptionFailed, CiphertextInvalid)):
            open_envelope(parse(bytes(altered)), DATA_KEY, CONTEXT)


def test_the_tenant_is_bound_into_the_authenticated_header() -> None:
    blob = _blob()
    # Same length, another tenant: the header is AAD, so the tag no longer matches.
    other = blob.replace(b"\x00\x04acme", b"\x00\x04acmf", 1)
    assert parse(other).tenant == "acmf"
    with pytest.raises(DecryptionFailed):
        open_envelope(parse(other), DATA_KEY, CONTEXT)


def _format_1(plaintext: bytes, context: dict[str, str]) -> bytes:
    """A blob as clients wrote it before tenants were bound (format 1), built by hand."""
    nonce = os.urandom(12)
    header = b"KLE\x01" + KEY_ID.bytes + len(WRAPPED).to_bytes(2, "big") + WRAPPED + nonce
    canonical = json.dumps(context, sort_keys=True, separators=(",", ":")).encode()
    return header + AESGCM(DATA_KEY).encrypt(nonce, plaintext, header + b"\x00" + canonical)


def test_a_format_1_blob_still_parses_and_opens() -> None:
    envelope = parse(_format_1(b"old phi", CONTEXT))
    assert (envelope.key_id, envelope.wrapped_key, envelope.tenant) == (KEY_ID, WRAPPED, None)
    assert open_envelope(envelope, DATA_KEY, CONTEXT) == b"old phi"


def test_another_context_or_data_key_fails_without_revealing_anything() -> None:
    with pytest.raises(DecryptionFailed) as failure:
        open_envelope(parse(_blob()), DATA_KEY, {**CONTEXT, "record": "r-2"})
    assert "phi" not in str(failure.value) and DATA_KEY.hex() not in str(failure.value)
    with pytest.raises(DecryptionFailed):
        open_envelope(parse(_blob()), os.urandom(32), CONTEXT)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "no KLE header"),
        (b"plain text, never encrypted", "no KLE header"),
        (b"KLE\x09" + bytes(40), "format 9 is not supported"),
        (b"KLE\x01" + KEY_ID.bytes + b"\x00\x10" + bytes(10), "truncated"),
        (b"KLE\x02" + KEY_ID.bytes + b"\x00\x04acme\x00\x10" + bytes(10), "truncated"),
        (b"KLE\x03" + KEY_ID.bytes + b"\x00\x04acme\x00\x00" + bytes(40), "decrypt_stream"),
    ],
)
def test_what_is_not_an_envelope_says_why(blob: bytes, message: str) -> None:
    with pytest.raises(CiphertextInvalid, match=message):
        parse(blob)


def test_context_must_be_strings() -> None:
    with pytest.raises(TypeError, match="strings to strings"):
        seal(KEY_ID, "acme", WRAPPED, DATA_KEY, b"phi", {"count": 3})  # type: ignore[dict-item]  # the wrong type is the point


def _sealing(key_id: uuid.UUID = KEY_ID, born: float = 0.0) -> SealingKey:
    return SealingKey(key_id, DATA_KEY, WRAPPED, born=born)


def test_a_sealing_key_retires_at_each_limit() -> None:
    limits = CacheLimits(max_age_s=60, max_messages=3, max_bytes=100)
    cache = SealingKeyCache(limits)
    cache.put("acme", "phi", _sealing(), 10)
    assert cache.take("acme", "phi", KEY_ID, 10, now=1) is not None
    assert cache.take("acme", "phi", KEY_ID, 10, now=2) is not None
    assert cache.take("acme", "phi", KEY_ID, 10, now=3) is None  # a 4th message
    cache.put("acme", "phi", _sealing(born=10), 95)
    assert cache.take("acme", "phi", KEY_ID, 10, now=11) is None  # 105 bytes
    cache.put("acme", "phi", _sealing(born=20), 1)
    assert cache.take("acme", "phi", KEY_ID, 1, now=80) is None  # 60 s old
    cache.put("acme", "phi", _sealing(born=100), 1)
    assert cache.take("acme", "phi", uuid.uuid4(), 1, now=101) is None  # rotated


def test_the_opening_cache_is_bounded_and_ages() -> None:
    cache = OpeningKeyCache(CacheLimits(max_age_s=60, max_decrypt_entries=2))
    ids = [uuid.uuid4() for _ in range(3)]
    for n, key_id in enumerate(ids):
        cache.put(key_id, WRAPPED, DATA_KEY, now=n)
    assert cache.get(ids[0], WRAPPED, now=3) is None  # least recently used, evicted
    assert cache.get(ids[2], WRAPPED, now=3) == DATA_KEY
    assert cache.get(ids[2], WRAPPED, now=62) is None  # too old
    cache.drop_version(ids[1])
    assert cache.get(ids[1], WRAPPED, now=3) is None


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="max_messages"):
        CacheLimits(max_messages=0)
    with pytest.raises(ValueError, match="max_messages"):
        CacheLimits(max_messages=(1 << 32) + 1)
