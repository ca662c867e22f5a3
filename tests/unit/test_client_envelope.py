"""The envelope format and the data-key caches, without a KMS."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyledger.client.cache import CacheLimits, Opener, OpenerCache, Sealer, SealerCache
from keyledger.client.envelope import (
    FORMAT_NONCE_BOUND,
    FORMAT_RECORD,
    FORMAT_STREAM,
    aad,
    bind_context,
    open_envelope,
    pack_head,
    parse,
    record_head,
    record_splitter,
    seal,
)
from keyledger.client.usage import LastUse
from keyledger.client.versions import Version
from keyledger.domain import KeyStatus, KmsProvider
from keyledger.errors import CiphertextInvalid, DecryptionFailed

KEY_ID = uuid.uuid4()
DATA_KEY = os.urandom(32)
WRAPPED = b"wrapped-by-the-kms:" + os.urandom(40)
CONTEXT = {"record": "r-1", "tenant": "acme"}


def _blob(plaintext: bytes = b"phi", context: dict[str, str] = CONTEXT) -> bytearray:
    return seal(KEY_ID, "acme", WRAPPED, DATA_KEY, plaintext, context)


def test_round_trip_and_header() -> None:
    blob = _blob()
    envelope = parse(blob)
    assert (envelope.key_id, envelope.wrapped_key, envelope.tenant) == (KEY_ID, WRAPPED, "acme")
    assert blob[3] == FORMAT_RECORD == 4
    assert open_envelope(envelope, DATA_KEY, dict(reversed(CONTEXT.items()))) == b"phi"


def test_a_format_4_record_binds_its_head_and_context_and_gcm_its_nonce() -> None:
    """The format, as another implementation would read it: AES-256-GCM under the data
    key, the nonce after the head, and as AAD the head, 0x00 and the sorted compact JSON
    of the context. The nonce is not in the AAD; GCM's tag depends on it all the same."""
    blob = bytes(_blob(b"phi"))
    head = pack_head(FORMAT_RECORD, KEY_ID, "acme", WRAPPED)
    nonce, body = blob[len(head) : len(head) + 12], blob[len(head) + 12 :]
    assert blob.startswith(head)
    canonical = json.dumps(CONTEXT, sort_keys=True, separators=(",", ":")).encode()
    assert AESGCM(DATA_KEY).decrypt(nonce, body, head + b"\x00" + canonical) == b"phi"
    other_nonce = bytes([nonce[0] ^ 1]) + nonce[1:]
    with pytest.raises(DecryptionFailed):
        open_envelope(parse(head + other_nonce + body), DATA_KEY, CONTEXT)


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
    other = bytes(blob).replace(b"\x00\x04acme", b"\x00\x04acmf", 1)
    assert parse(other).tenant == "acmf"
    with pytest.raises(DecryptionFailed):
        open_envelope(parse(other), DATA_KEY, CONTEXT)


def _format_1(plaintext: bytes, context: dict[str, str]) -> bytes:
    """A blob as clients wrote it before tenants were bound (format 1), built by hand."""
    nonce = os.urandom(12)
    header = b"KLE\x01" + KEY_ID.bytes + len(WRAPPED).to_bytes(2, "big") + WRAPPED + nonce
    canonical = json.dumps(context, sort_keys=True, separators=(",", ":")).encode()
    return header + AESGCM(DATA_KEY).encrypt(nonce, plaintext, header + b"\x00" + canonical)


def _format_2(plaintext: bytes, context: dict[str, str]) -> bytes:
    """A blob as clients wrote it before format 4 (the nonce in the AAD), built by hand."""
    nonce = os.urandom(12)
    header = pack_head(FORMAT_NONCE_BOUND, KEY_ID, "acme", WRAPPED) + nonce
    canonical = json.dumps(context, sort_keys=True, separators=(",", ":")).encode()
    return header + AESGCM(DATA_KEY).encrypt(nonce, plaintext, header + b"\x00" + canonical)


def test_a_format_2_blob_still_parses_and_opens() -> None:
    blob = _format_2(b"old phi", CONTEXT)
    envelope = parse(blob)
    assert (envelope.key_id, envelope.wrapped_key, envelope.tenant) == (KEY_ID, WRAPPED, "acme")
    assert open_envelope(envelope, DATA_KEY, CONTEXT) == b"old phi"
    head = pack_head(FORMAT_NONCE_BOUND, KEY_ID, "acme", WRAPPED)
    opener = Opener(VERSION, head, AESGCM(DATA_KEY), 0, LIMITS, LastUse())
    split = record_splitter(len(head))
    for context in (CONTEXT, dict(reversed(CONTEXT.items()))):  # the encoding, reused
        assert opener.open(blob, *split(blob), context, now=0) == b"old phi"
    for position in (5, len(head) + 3, len(blob) - 1):  # its key id, nonce and tag
        altered = bytearray(blob)
        altered[position] ^= 0x01
        with pytest.raises(DecryptionFailed):
            opener.open(bytes(altered), *split(bytes(altered)), CONTEXT, now=0)
    with pytest.raises(DecryptionFailed):
        opener.open(blob, *split(blob), {"other": "context"}, now=0)


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
        (b"KLE\x04" + KEY_ID.bytes + b"\x00\x04acme\x00\x10" + bytes(10), "truncated"),
        (b"KLE\x04" + KEY_ID.bytes + b"\x00\x04acme\x00\x02ab" + bytes(27), "truncated"),
        (b"KLE\x03" + KEY_ID.bytes + b"\x00\x04acme\x00\x00" + bytes(40), "decrypt_stream"),
    ],
)
def test_what_is_not_an_envelope_says_why(blob: bytes, message: str) -> None:
    with pytest.raises(CiphertextInvalid, match=message):
        parse(blob)


def test_context_must_be_strings() -> None:
    with pytest.raises(TypeError, match="strings to strings"):
        seal(KEY_ID, "acme", WRAPPED, DATA_KEY, b"phi", {"count": 3})  # type: ignore[dict-item]  # the wrong type is the point


VERSION = Version(
    KEY_ID, "acme", "phi", 1, KeyStatus.ACTIVE, "ref", KmsProvider.LOCAL_SOFTWARE, None, None, ()
)
LIMITS = CacheLimits(max_age_s=60, max_messages=3, max_bytes=100)
HEAD = pack_head(FORMAT_RECORD, KEY_ID, "acme", WRAPPED)


def _sealer(born: float = 0.0, checked_until: float = 1000.0) -> Sealer:
    head = pack_head(FORMAT_RECORD, KEY_ID, "acme", WRAPPED)
    sealer = Sealer(VERSION, head, AESGCM(DATA_KEY), born, LIMITS, LastUse())
    sealer.renew(VERSION, checked_until)
    return sealer


def test_a_sealer_retires_at_each_limit() -> None:
    sealer = _sealer()
    assert sealer.seal_first(b"x" * 10, CONTEXT, now=0) is not None
    assert sealer.seal(b"x" * 10, CONTEXT, now=1) is not None
    assert sealer.seal(b"x" * 10, CONTEXT, now=2) is not None
    assert sealer.seal(b"x" * 10, CONTEXT, now=3) is None  # a 4th message
    sealer = _sealer(born=10)
    sealer.seal_first(b"x" * 95, CONTEXT, now=10)
    assert sealer.seal(b"x" * 10, CONTEXT, now=11) is None  # 105 bytes
    assert sealer.seal(b"x" * 5, CONTEXT, now=11) is not None  # 100 bytes
    sealer = _sealer(born=20)
    sealer.seal_first(b"x", CONTEXT, now=20)
    assert sealer.seal(b"x", CONTEXT, now=80) is None  # 60 s old


def test_a_sealer_holds_only_while_its_version_check_does() -> None:
    sealer = _sealer(checked_until=5)
    sealer.seal_first(b"x", CONTEXT, now=0)
    assert sealer.seal(b"x", CONTEXT, now=5) is None  # the version must be read again
    sealer.renew(VERSION, checked_until=7)
    assert sealer.seal(b"x", CONTEXT, now=5) is not None
    sealer.renew(VERSION, checked_until=500)
    assert sealer.seal(b"x", CONTEXT, now=60) is None  # renewal never outlives max_age_s


def test_a_sealer_writes_the_record_format_and_notes_its_use() -> None:
    use = LastUse()
    head = pack_head(FORMAT_RECORD, KEY_ID, "acme", WRAPPED)
    sealer = Sealer(VERSION, head, AESGCM(DATA_KEY), 0, LIMITS, use)
    sealer.renew(VERSION, 10)
    blob = sealer.seal_first(b"phi", CONTEXT, now=3)
    assert use.at == 3 and isinstance(blob, bytearray)  # one buffer, not copied to bytes
    assert record_head(blob) == head
    assert open_envelope(parse(blob), DATA_KEY, CONTEXT) == b"phi"


@pytest.mark.parametrize("size", [0, 1024, (1 << 16) - 1, 1 << 16, 1 << 20])
def test_records_of_every_size_round_trip(size: int) -> None:
    """The cached writer and reader against the spelled-out ones, both ways."""
    plaintext = os.urandom(size)
    head = pack_head(FORMAT_RECORD, KEY_ID, "acme", WRAPPED)
    big = CacheLimits(max_bytes=1 << 21)
    sealer = Sealer(VERSION, head, AESGCM(DATA_KEY), 0, big, LastUse())
    sealer.renew(VERSION, 10)
    first = sealer.seal_first(plaintext, CONTEXT, now=0)
    cached = sealer.seal(plaintext, CONTEXT, now=1)  # _write, spelled out below 64 KiB
    assert cached is not None
    opener = Opener(VERSION, head, AESGCM(DATA_KEY), 0, big, LastUse())
    split = record_splitter(len(head))
    for blob in (first, cached, _blob(plaintext)):
        assert len(blob) == len(parse(blob).header) + size + 16
        assert open_envelope(parse(blob), DATA_KEY, CONTEXT) == plaintext
        for stored in (blob, bytes(blob)):
            assert opener.open(stored, *split(stored), CONTEXT, now=1) == plaintext
        with pytest.raises(DecryptionFailed):
            opener.open(blob, *split(blob), {"other": "context"}, now=1)


def test_a_truncated_record_under_a_known_head_says_so() -> None:
    head = pack_head(FORMAT_RECORD, KEY_ID, "acme", WRAPPED)
    opener = Opener(VERSION, head, AESGCM(DATA_KEY), 0, LIMITS, LastUse())
    blob = _blob()[: len(head) + 12 + 15]  # the tag cut short
    with pytest.raises(CiphertextInvalid, match="truncated"):
        opener.open(blob, *record_splitter(len(head))(blob), CONTEXT, now=1)


def test_a_bound_context_is_what_the_aad_puts_after_the_header() -> None:
    head = pack_head(FORMAT_RECORD, KEY_ID, "acme", WRAPPED)
    copy, whole = bind_context(CONTEXT, head)
    assert whole == aad(head, CONTEXT) and copy == CONTEXT and copy is not CONTEXT
    header = pack_head(FORMAT_NONCE_BOUND, KEY_ID, "acme", WRAPPED) + bytes(12)
    copy, tail = bind_context(CONTEXT, b"")
    assert header + tail == aad(header, CONTEXT) and copy == CONTEXT
    assert bind_context(None, b"") == (None, bind_context({}, b"")[1])


def test_a_sealer_writes_format_4_only() -> None:
    head = pack_head(FORMAT_NONCE_BOUND, KEY_ID, "acme", WRAPPED)
    with pytest.raises(ValueError, match="format 4"):
        Sealer(VERSION, head, AESGCM(DATA_KEY), 0, LIMITS, LastUse())


def test_a_context_changed_after_a_call_is_bound_afresh() -> None:
    """The sealer and opener keep the last context's encoding; a caller that changes
    its dict in place gets the new context bound, not the one it held before."""
    head = pack_head(FORMAT_RECORD, KEY_ID, "acme", WRAPPED)
    sealer = _sealer()
    opener = Opener(VERSION, head, AESGCM(DATA_KEY), 0, LIMITS, LastUse())
    split = record_splitter(len(head))
    context = {"record": "r-1"}
    first = sealer.seal_first(b"phi", context, now=0)
    assert opener.open(first, *split(first), context, now=0) == b"phi"
    context["record"] = "r-2"
    second = sealer.seal(b"phi", context, now=0)
    assert second is not None
    assert open_envelope(parse(second), DATA_KEY, {"record": "r-2"}) == b"phi"
    with pytest.raises(DecryptionFailed):
        opener.open(first, *split(first), context, now=0)  # r-1's record, r-2 asked
    assert opener.open(second, *split(second), context, now=0) == b"phi"
    context["record"] = 2  # type: ignore[assignment]  # the wrong type is the point
    with pytest.raises(TypeError, match="strings to strings"):
        sealer.seal(b"phi", context, now=0)
    with pytest.raises(TypeError, match="strings to strings"):
        opener.open(second, *split(second), context, now=0)


def test_an_equal_context_reuses_the_encoding_and_none_is_empty() -> None:
    head = pack_head(FORMAT_RECORD, KEY_ID, "acme", WRAPPED)
    opener = Opener(VERSION, head, AESGCM(DATA_KEY), 0, LIMITS, LastUse())
    split = record_splitter(len(head))
    blob = _blob(b"phi", {})
    assert opener.open(blob, *split(blob), None, now=0) == b"phi"
    assert opener.open(blob, *split(blob), {}, now=0) == b"phi"
    blob = _blob(b"phi", CONTEXT)
    for context in (dict(CONTEXT), dict(reversed(CONTEXT.items())), CONTEXT):
        assert opener.open(blob, *split(blob), context, now=0) == b"phi"


def test_a_streams_opener_never_opens_records() -> None:
    head = pack_head(FORMAT_STREAM, KEY_ID, "acme", WRAPPED)
    opener = Opener(VERSION, head, AESGCM(DATA_KEY), 0, LIMITS, LastUse())
    opener.renew(VERSION, 1000)
    assert opener.expires == float("-inf")  # so `decrypt` never takes it for a record's


def test_record_head_finds_record_heads_only() -> None:
    blob = _blob()
    assert record_head(blob) == bytes(parse(blob).head.raw)
    old = _format_1(b"old phi", CONTEXT)
    assert record_head(old) == parse(old).head.raw
    nonce_bound = _format_2(b"old phi", CONTEXT)
    assert record_head(nonce_bound) == parse(nonce_bound).head.raw
    stream = b"KLE\x03" + KEY_ID.bytes + b"\x00\x04acme\x00\x00" + bytes(40)
    assert record_head(stream) == b""
    assert record_head(b"KLE\x02" + KEY_ID.bytes) == b""  # truncated


def _opener(version: Version = VERSION, head: bytes = b"head", born: float = 0) -> Opener:
    opener = Opener(version, head, AESGCM(DATA_KEY), born, LIMITS, LastUse())
    opener.renew(version, born + 1000)
    return opener


def test_the_opener_cache_is_bounded_and_ages() -> None:
    cache = OpenerCache(CacheLimits(max_age_s=60, max_decrypt_entries=2))
    for n in range(2):
        cache.put(b"head %d" % n, _opener(born=n))
    cache[b"head 0"].used = 5  # used since: head 1 is now the least recently used
    cache.put(b"head 2", _opener(born=3))
    assert set(cache) == {b"head 0", b"head 2"}
    assert cache[b"head 2"].expires == 63  # the data key's age limit, not the check's
    assert cache[b"head 2"].retired(63) and not cache[b"head 2"].retired(62)


def test_the_opener_cache_drops_a_version_or_a_whole_key() -> None:
    other_version = replace(VERSION, id=uuid.uuid4(), version=2)
    other_key = replace(VERSION, id=uuid.uuid4(), key_name="billing")
    cache = OpenerCache(LIMITS)
    for n, version in enumerate((VERSION, other_version, other_key)):
        cache.put(b"head %d" % n, _opener(version))
    cache.drop_version(other_version.id)
    assert set(cache) == {b"head 0", b"head 2"}
    cache.drop_key("acme", "phi")
    assert set(cache) == {b"head 2"}


def test_an_opener_opens_from_the_cache_only_while_the_cache_holds_it() -> None:
    """What the cache drops, it revokes: the client's last opener may still hold it."""
    fresh = Opener(VERSION, b"head", AESGCM(DATA_KEY), 0, LIMITS, LastUse())
    assert fresh.expires == float("-inf")  # until the cache renews it
    other_key = replace(VERSION, id=uuid.uuid4(), key_name="billing")
    cache = OpenerCache(CacheLimits(max_age_s=60, max_decrypt_entries=3))
    replaced, evicted = _opener(born=1), _opener(born=0)
    kept, dropped = _opener(born=2), _opener(other_key, born=3)
    for head, opener in ((b"a", replaced), (b"a", kept), (b"b", evicted), (b"c", dropped)):
        assert cache.put(head, opener)
    assert cache.put(b"d", _opener(born=4))  # one too many: b, the least recently used
    assert set(cache) == {b"a", b"c", b"d"}
    cache.drop_key("acme", "billing")
    assert [o.expires for o in (replaced, evicted, dropped)] == [float("-inf")] * 3
    assert kept.expires == 62  # held, and renewed: its age limit
    cache.drop_all()
    assert not cache and kept.expires == float("-inf")
    off = OpenerCache(CacheLimits(max_decrypt_entries=0))
    assert not off.put(b"a", _opener()) and not off


def test_a_sealer_seals_from_the_cache_only_while_the_cache_holds_it() -> None:
    fresh = Sealer(VERSION, HEAD, AESGCM(DATA_KEY), 0, LIMITS, LastUse())
    assert fresh.seal(b"x", CONTEXT, now=0) is None  # until the cache renews it
    other_key = replace(VERSION, id=uuid.uuid4(), key_name="billing")
    cache = SealerCache(LIMITS)
    replaced, kept = _sealer(), _sealer()
    dropped = Sealer(other_key, HEAD, AESGCM(DATA_KEY), 0, LIMITS, LastUse())
    dropped.renew(other_key, 1000)
    for sealer in (replaced, kept, dropped):
        assert cache.put(sealer)
    assert set(cache) == {("acme", "phi"), ("acme", "billing")}
    cache.drop_key("acme", "billing")
    assert replaced.seal(b"x", CONTEXT, now=1) is None
    assert dropped.seal(b"x", CONTEXT, now=1) is None
    assert kept.seal(b"x", CONTEXT, now=1) is not None
    cache.drop_all()
    assert not cache and kept.seal(b"x", CONTEXT, now=1) is None
    off = SealerCache(CacheLimits(max_age_s=0))
    assert not off.put(_sealer()) and not off


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="max_messages"):
        CacheLimits(max_messages=0)
    with pytest.raises(ValueError, match="max_messages"):
        CacheLimits(max_messages=(1 << 32) + 1)
