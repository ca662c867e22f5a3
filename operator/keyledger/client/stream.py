"""Streams (database dumps, files) in constant memory: a segmented AEAD, STREAM style.

    head (format 3, see envelope.py) | segment size (u32) | nonce prefix (7) | header tag (16)
    | segment 0 | segment 1 | ... | final segment
    each segment: length (u32) | ciphertext + GCM tag (16)

Every stream has a data key of its own. Segment i is AES-256-GCM of at most
`segment size` bytes with nonce = prefix | i (u32) | final flag (u8), so a
segment opens only at its own position and only the last one opens as final.
The header tag is GCM of nothing under the reserved index 2**32-1 over the
header and the encryption context; it is every segment's AAD, which binds the
segments to this header and this context.

The length before each segment only frames it (a changed length misframes,
and the tags fail); it lets a reader tell a stream cut inside a segment from
one with bytes appended after its final segment.
Plaintext is written out one segment at a time, each only after its tag checked.
A reader that stops with an error has released the segments before the bad one:
write to a temporary place and keep it only when the whole stream opened.
When a segment fails, the reader finds out what happened to it (cut short,
moved, appended to, from elsewhere) and raises the error that names it.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyledger.client.envelope import TAG_BYTES, Context, Head, aad
from keyledger.errors import (
    CiphertextInvalid,
    StreamCorrupted,
    StreamExtended,
    StreamHeaderAltered,
    StreamSegmentForeign,
    StreamSegmentsReordered,
    StreamTruncated,
)

SEGMENT_BYTES = 1 << 20
MIN_SEGMENT_BYTES = 16
MAX_SEGMENT_BYTES = 1 << 24  # what a reader may have to hold (twice) for one stream
_TAIL = struct.Struct(">I7s")  # segment size, nonce prefix
_FRAME = struct.Struct(">I")  # each sealed segment's length
_HEADER_INDEX = 0xFFFFFFFF  # reserved for the header tag: segments count below it
# How far from its place a moved segment is looked for, when one fails; beyond
# that it is reported as not this stream's.
_REORDER_SEARCH = 32


T = TypeVar("T")


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


def full_reader(src: Readable) -> Callable[[int], bytes]:
    """`read(n)` that returns fewer than n bytes only at the end (pipes read short)."""

    def read(size: int) -> bytes:
        chunk = src.read(size)
        if len(chunk) == size or not chunk:
            return chunk
        parts = [chunk]
        got = len(chunk)
        while got < size:
            more = src.read(size - got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    return read


class _Buffers:
    """Two buffers, reused for every segment: the one at hand and the one read ahead.

    A fresh bytes object per read would keep three segment-sized allocations alive
    at once, and the allocator then maps (and faults in) fresh pages for each one:
    several times slower than the cipher. Sources without readinto are copied in."""

    def __init__(self, src: Readable, size: int) -> None:
        self._readinto: Callable[[memoryview], int | None] | None = getattr(src, "readinto", None)
        self._read = full_reader(src)
        self._views = (memoryview(bytearray(size)), memoryview(bytearray(size)))
        self._turn = 0

    def fill(self, size: int) -> memoryview:
        """The next `size` bytes of the source (fewer only at its end), in the buffer
        not handed out last time."""
        view = self._views[self._turn][:size]
        self._turn ^= 1
        if self._readinto is None:
            data = self._read(size)
            view[: len(data)] = data
            return view[: len(data)]
        got = 0
        while got < size:
            placed = self._readinto(view[got:])
            if not placed:
                break
            got += placed
        return view[:got]


def _nonce(prefix: bytes, index: int, final: bool) -> bytes:
    return prefix + struct.pack(">IB", index, final)


def seal_stream(
    head: bytes,
    data_key: bytes,
    src: Readable,
    dst: Writable,
    context: Context,
    segment_bytes: int = SEGMENT_BYTES,
) -> int:
    """Write `head` and the sealed segments of everything `src` holds; the plaintext length."""
    if not MIN_SEGMENT_BYTES <= segment_bytes <= MAX_SEGMENT_BYTES:
        raise ValueError(
            f"segment_bytes must be between {MIN_SEGMENT_BYTES} and {MAX_SEGMENT_BYTES}"
        )
    prefix = os.urandom(7)
    header = head + _TAIL.pack(segment_bytes, prefix)
    cipher = AESGCM(data_key)
    tag = cipher.encrypt(_nonce(prefix, _HEADER_INDEX, False), b"", aad(header, context))
    dst.write(header + tag)
    buffers = _Buffers(src, segment_bytes)
    total = index = 0
    current = buffers.fill(segment_bytes)
    while True:
        # A full segment may be the last: look one ahead to know.
        following = buffers.fill(segment_bytes) if len(current) == segment_bytes else None
        final = not following
        if index >= _HEADER_INDEX:
            raise ValueError("stream too long for its segment size: use larger segments")
        sealed = cipher.encrypt(_nonce(prefix, index, final), current, tag)
        dst.write(_FRAME.pack(len(sealed)))
        dst.write(sealed)
        del sealed  # freed before the next is made, so its memory is reused
        total += len(current)
        if following is None or final:
            return total
        current = following
        index += 1


def open_stream(head: Head, src: Readable, cipher: AESGCM, dst: Writable, context: Context) -> int:
    """Check and write out the segments that follow `head` in `src`, with `cipher` (the
    unwrapped data key's); the plaintext length."""
    tail = full_reader(src)(_TAIL.size + TAG_BYTES)
    if len(tail) < _TAIL.size + TAG_BYTES:
        raise CiphertextInvalid("keyledger stream is truncated inside its header")
    segment_bytes, prefix = _TAIL.unpack_from(tail)
    tag = tail[_TAIL.size :]
    header = head.raw + tail[: _TAIL.size]
    try:
        cipher.decrypt(_nonce(prefix, _HEADER_INDEX, False), tag, aad(header, context))
    except InvalidTag:
        raise StreamHeaderAltered(
            f"the header of the stream under key id {head.key_id} was altered, or the "
            "encryption context differs from the one it was written with"
        ) from None
    # Authentic from here on; still, only a writer holding the data key chose the size,
    # and this reader holds two segments: refuse what no keyledger writer makes.
    if not MIN_SEGMENT_BYTES <= segment_bytes <= MAX_SEGMENT_BYTES:
        raise CiphertextInvalid(
            f"keyledger stream with {segment_bytes}-byte segments: this client reads "
            f"{MIN_SEGMENT_BYTES} to {MAX_SEGMENT_BYTES}"
        )
    segments = _Segments(src, segment_bytes + TAG_BYTES)
    current = segments.next()
    if current is None:
        raise StreamTruncated("the stream ends after its header: every segment is missing")
    if isinstance(current, StreamCorrupted):
        raise current
    total = index = 0
    while True:
        following = segments.next()
        if isinstance(following, StreamCorrupted):
            # A cut inside the next segment, or bytes after the final one: the
            # current segment says which.
            if _opens(cipher, prefix, tag, current, index, final=True):
                raise StreamExtended(
                    f"bytes follow the final segment ({index}) of the stream: something "
                    "was appended to it"
                )
            raise following
        final = following is None
        try:
            plaintext = cipher.decrypt(_nonce(prefix, index, final), current, tag)
        except InvalidTag:
            raise _what_happened(cipher, prefix, tag, current, index, final) from None
        dst.write(plaintext)
        total += len(plaintext)
        del plaintext  # freed before the next is made, so its memory is reused
        if following is None:
            return total
        current = following
        index += 1


class _Segments:
    """Sealed segments one by one: each is its length (u32) and its bytes."""

    def __init__(self, src: Readable, max_bytes: int) -> None:
        self._read = full_reader(src)
        self._buffers = _Buffers(src, max_bytes)
        self._max = max_bytes
        self._index = 0

    def next(self) -> memoryview | StreamCorrupted | None:
        """The next segment; None at the end; the error that a broken frame means."""
        index = self._index
        self._index += 1
        frame = self._read(_FRAME.size)
        if not frame:
            return None
        if len(frame) < _FRAME.size:
            return StreamTruncated(f"the stream ends inside segment {index}: it was cut short")
        (length,) = _FRAME.unpack(frame)
        if not TAG_BYTES <= length <= self._max:
            return StreamSegmentForeign(
                f"segment {index} is not part of this stream: its length was altered"
            )
        body = self._buffers.fill(length)
        if len(body) < length:
            return StreamTruncated(f"the stream ends inside segment {index}: it was cut short")
        return body


def _opens(
    cipher: AESGCM, prefix: bytes, tag: bytes, segment: memoryview, index: int, *, final: bool
) -> bool:
    try:
        cipher.decrypt(_nonce(prefix, index, final), segment, tag)
    except InvalidTag:
        return False
    return True


def _what_happened(
    cipher: AESGCM,
    prefix: bytes,
    tag: bytes,
    segment: memoryview,
    index: int,
    expected_final: bool,
) -> StreamCorrupted:
    if _opens(cipher, prefix, tag, segment, index, final=not expected_final):
        if expected_final:
            return StreamTruncated(
                f"the stream ends after segment {index}, which is not its final segment: "
                "it was cut short"
            )
        return StreamExtended(
            f"segment {index} is the stream's final segment, yet more follows it: "
            "something was appended to the stream"
        )
    for at in range(max(0, index - _REORDER_SEARCH), index + _REORDER_SEARCH + 1):
        if at != index and any(
            _opens(cipher, prefix, tag, segment, at, final=f) for f in (False, True)
        ):
            return StreamSegmentsReordered(
                f"segment {at} of the stream was found at position {index}: segments were moved"
            )
    return StreamSegmentForeign(
        f"segment {index} is not part of this stream: altered, or taken from another stream"
    )


def piped(produce: Callable[[Writable], object], consume: Callable[[Readable], T]) -> T:
    """Run `produce` in a thread, writing into an OS pipe that `consume` reads here:
    between the two there is never more than the pipe's buffer. An error of either is
    raised, the producer's even when the consumer finished (it saw an early end)."""
    read_fd, write_fd = os.pipe()
    failures: list[BaseException] = []
    reader = open(read_fd, "rb")  # noqa: SIM115  # closed below, in both threads' order
    writer = open(write_fd, "wb")  # noqa: SIM115

    def run() -> None:
        try:
            produce(writer)
        except BaseException as error:  # handed to the calling thread
            failures.append(error)
        finally:
            # OSError: the reader is gone, the consumer failed and its error is raised.
            with contextlib.suppress(OSError):
                writer.close()

    thread = threading.Thread(target=run, name="keyledger-stream-pipe", daemon=True)
    thread.start()
    try:
        result = consume(reader)
    finally:
        reader.close()  # a producer still writing then stops with BrokenPipeError
        thread.join()
    if failures:
        raise failures[0]
    return result
