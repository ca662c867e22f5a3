"""The segmented stream format, without a KMS: round trips and every kind of tampering,
each reported as its own error before the bad segment's plaintext is released."""

from __future__ import annotations

import io
import os
import struct
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyledger.client.envelope import FORMAT_STREAM, aad, pack_head, read_head
from keyledger.client.stream import (
    Readable,
    Writable,
    full_reader,
    open_stream,
    piped,
    seal_stream,
)
from keyledger.errors import (
    CiphertextInvalid,
    StreamCorrupted,
    StreamExtended,
    StreamHeaderAltered,
    StreamSegmentForeign,
    StreamSegmentsReordered,
    StreamTruncated,
)

KEY_ID = uuid.uuid4()
DATA_KEY = os.urandom(32)
CONTEXT = {"backup": "2026-11-29"}
SEGMENT = 64
CHUNK = 4 + SEGMENT + 16  # a sealed segment: its length, ciphertext and tag


def _sealed(payload: bytes, data_key: bytes = DATA_KEY, segment: int = SEGMENT) -> bytes:
    sink = io.BytesIO()
    head = pack_head(FORMAT_STREAM, KEY_ID, "acme", b"wrapped")
    assert seal_stream(head, data_key, io.BytesIO(payload), sink, CONTEXT, segment) == len(payload)
    return sink.getvalue()


def _header_length(sealed: bytes) -> int:
    stream = io.BytesIO(sealed)
    read_head(full_reader(stream))
    return stream.tell() + 4 + 7 + 16  # segment size, nonce prefix, header tag


def _open(sealed: bytes, context: dict[str, str] = CONTEXT) -> tuple[bytes, int]:
    """What the reader released, and how much of it."""
    source = io.BytesIO(sealed)
    read = full_reader(source)
    sink = io.BytesIO()
    try:
        open_stream(read_head(read), source, AESGCM(DATA_KEY), sink, context)
    finally:
        released = sink.getvalue()
    return released, len(released)


def _segments(sealed: bytes) -> tuple[bytes, list[bytes]]:
    at = _header_length(sealed)
    body = sealed[at:]
    return sealed[:at], [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]


PAYLOAD = os.urandom(SEGMENT * 5 + 10)  # five full segments and a short final one


@pytest.mark.parametrize(
    "size", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, SEGMENT * 3, SEGMENT * 3 + 7]
)
def test_round_trip_at_every_boundary(size: int) -> None:
    payload = os.urandom(size)
    sealed = _sealed(payload)
    _, segments = _segments(sealed)
    assert len(segments) == max(1, -(-size // SEGMENT))  # a full last segment is the final one
    assert _open(sealed)[0] == payload


class Trickle(io.RawIOBase):
    """A pipe that hands over at most 7 bytes per call, however many are asked for."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        step = min(7, len(buffer), len(self.data))
        buffer[:step] = self.data[:step]
        self.data = self.data[step:]
        return step


class ReadOnly:
    """A source with read() alone (no readinto), short reads included."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, size: int = -1) -> bytes:
        step = 5 if size < 0 else min(5, size)
        chunk, self.data = self.data[:step], self.data[step:]
        return chunk


@pytest.mark.parametrize("source", [Trickle, ReadOnly])
def test_sources_that_read_short_still_round_trip(source: Callable[[bytes], Readable]) -> None:
    sink = io.BytesIO()
    head = pack_head(FORMAT_STREAM, KEY_ID, "acme", b"wrapped")
    seal_stream(head, DATA_KEY, source(PAYLOAD), sink, CONTEXT, SEGMENT)
    sealed = source(sink.getvalue())
    out = io.BytesIO()
    open_stream(read_head(full_reader(sealed)), sealed, AESGCM(DATA_KEY), out, CONTEXT)
    assert out.getvalue() == PAYLOAD


@pytest.mark.parametrize("cut", [1, CHUNK // 2, CHUNK, CHUNK + 3, 3 * CHUNK, 5 * CHUNK + 20])
def test_truncation(cut: int) -> None:
    header, segments = _segments(_sealed(PAYLOAD))
    body = b"".join(segments)
    with pytest.raises(StreamTruncated, match="cut short"):
        _open(header + body[: len(body) - cut])


def test_truncation_to_the_header_alone() -> None:
    header, _ = _segments(_sealed(PAYLOAD))
    with pytest.raises(StreamTruncated, match="every segment is missing"):
        _open(header)


def test_reordered_segments_stop_at_the_first_moved_one() -> None:
    header, segments = _segments(_sealed(PAYLOAD))
    segments[1], segments[3] = segments[3], segments[1]
    with pytest.raises(StreamSegmentsReordered, match="segment 3 of the stream was found at"):
        _open(header + b"".join(segments))
    released = _released(header + b"".join(segments))
    assert released == PAYLOAD[:SEGMENT]  # segment 0 only: nothing unchecked


def test_the_final_segment_moved_forward_is_a_reordering() -> None:
    header, segments = _segments(_sealed(PAYLOAD))
    segments[2], segments[-1] = segments[-1], segments[2]
    with pytest.raises(StreamSegmentsReordered):
        _open(header + b"".join(segments))


def test_a_segment_swapped_in_from_another_stream() -> None:
    header, segments = _segments(_sealed(PAYLOAD))
    # Same data key, same position: only the stream's own nonce prefix tells them apart.
    _, strangers = _segments(_sealed(PAYLOAD))
    segments[2] = strangers[2]
    with pytest.raises(StreamSegmentForeign, match="segment 2 is not part of this stream"):
        _open(header + b"".join(segments))
    assert _released(header + b"".join(segments)) == PAYLOAD[: 2 * SEGMENT]


def test_a_flipped_bit_inside_a_segment() -> None:
    sealed = bytearray(_sealed(PAYLOAD))
    sealed[_header_length(bytes(sealed)) + CHUNK + 5] ^= 0x01
    with pytest.raises(StreamSegmentForeign, match="segment 1"):
        _open(bytes(sealed))


@pytest.mark.parametrize("field", ["segment size", "nonce prefix", "header tag"])
def test_a_changed_header(field: str) -> None:
    sealed = bytearray(_sealed(PAYLOAD))
    tail = _header_length(bytes(sealed)) - 27
    offset = {"segment size": tail + 3, "nonce prefix": tail + 6, "header tag": tail + 20}[field]
    sealed[offset] ^= 0x01
    with pytest.raises(StreamHeaderAltered, match="header of the stream"):
        _open(bytes(sealed))
    assert _released(bytes(sealed)) == b""


def test_another_context_fails_at_the_header() -> None:
    with pytest.raises(StreamHeaderAltered, match="context differs"):
        _open(_sealed(PAYLOAD), {"backup": "2026-11-30"})


@pytest.mark.parametrize("extra", [b"x", os.urandom(CHUNK)])
def test_bytes_appended_after_the_final_segment(extra: bytes) -> None:
    with pytest.raises(StreamExtended, match="appended"):
        _open(_sealed(PAYLOAD) + extra)


def test_a_full_final_segment_followed_by_more() -> None:
    payload = os.urandom(SEGMENT * 2)
    header, segments = _segments(_sealed(payload))
    with pytest.raises(StreamExtended, match="final segment"):
        _open(header + b"".join(segments) + segments[-1])


def test_each_case_has_its_own_error() -> None:
    kinds = {
        StreamTruncated,
        StreamSegmentsReordered,
        StreamSegmentForeign,
        StreamHeaderAltered,
        StreamExtended,
    }
    assert len({k.reason for k in kinds}) == len(kinds)
    assert all(issubclass(k, StreamCorrupted) for k in kinds)


def _released(sealed: bytes) -> bytes:
    source = io.BytesIO(sealed)
    read = full_reader(source)
    sink = io.BytesIO()
    with pytest.raises(StreamCorrupted):
        open_stream(read_head(read), source, AESGCM(DATA_KEY), sink, CONTEXT)
    return sink.getvalue()


def test_a_segment_size_no_writer_makes_is_refused_before_any_allocation() -> None:
    # Built by hand with the data key (the header tag checks): 1 GiB segments.
    head = pack_head(FORMAT_STREAM, KEY_ID, "acme", b"wrapped")
    prefix = os.urandom(7)
    header = head + struct.pack(">I7s", 1 << 30, prefix)
    nonce = prefix + struct.pack(">IB", 0xFFFFFFFF, 0)
    tag = AESGCM(DATA_KEY).encrypt(nonce, b"", aad(header, CONTEXT))
    with pytest.raises(CiphertextInvalid, match="1073741824-byte segments"):
        _open(header + tag + bytes(64))


def test_piped_raises_either_side_and_never_hangs() -> None:
    def produce(out: Writable) -> None:
        for _ in range(64):
            out.write(bytes(1 << 20))  # far more than a pipe holds

    def consume_a_little(src: Readable) -> None:
        src.read(10)
        raise StreamTruncated("the consumer gave up")

    # The consumer fails while the producer is blocked on a full pipe: it is released.
    with pytest.raises(StreamTruncated, match="consumer gave up"):
        piped(produce, consume_a_little)

    def produce_then_fail(out: Writable) -> None:
        out.write(b"partial")
        raise StreamSegmentForeign("the producer found a bad segment")

    # The consumer saw a clean end after "partial"; the producer's error still wins.
    with pytest.raises(StreamSegmentForeign, match="bad segment"):
        piped(produce_then_fail, lambda src: src.read())
