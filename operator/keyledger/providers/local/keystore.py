"""The `local` backend's keystore file: a journal, one JSON line per changed entry.

    {"notice": "... NOT FOR PRODUCTION", "format": "journal-v1"}
    {"id": "<uuid>", "entry": {"marker": ..., "material": ..., "enabled": ..., ...}}
    {"id": "<uuid>", "deleted": true}

A change appends its lines and fsyncs them, under a lock file shared by every
process using the keystore; it does not rewrite the file, nor copy the keystore in
memory (see index.py), so making the 5,000th key costs what making the first did.
Readers take no lock file: they keep what they parsed and read only what was
appended since (a stat tells them whether anything was). A line cut short by a
crash is never read (only whole lines count) and is closed off by the next writer.
When superseded lines outnumber live entries the file is compacted into a new one,
atomically (os.replace), which readers notice by its new inode. A keystore written
as one JSON document (before the journal) is read, and compacted at its first change.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from keyledger.providers.local.index import FrozenIndex, StagedChanges

DEV_ONLY_NOTICE = "local backend: software keys in a file, NOT FOR PRODUCTION"
FORMAT = "journal-v1"

Entry = dict[str, Any]
Entries = dict[str, Entry]
Changes = Mapping[str, Entry | None]  # by key id; None: the entry was removed


@dataclass(frozen=True)
class Snapshot:
    """The keystore as of `offset` bytes of the file with inode `inode`. Shared with
    other threads: never changed in place."""

    keys: FrozenIndex[Entry] = field(default_factory=FrozenIndex)
    markers: FrozenIndex[str] = field(default_factory=FrozenIndex)  # marker -> key id
    inode: int | None = None
    offset: int = 0
    lines: int = 0  # entry lines read: compaction is due when they far outnumber keys
    whole_document: bool = False  # the pre-journal format

    def updated(self, changes: Changes, *, inode: int | None, offset: int, lines: int) -> Snapshot:
        """This snapshot with `changes` applied, at `offset`; this one stays as it is."""
        markers: dict[str, str | None] = {}
        for key_id in changes:
            old = self.keys.get(key_id)
            if old is not None:
                markers[old["marker"]] = None
        for key_id, entry in changes.items():
            if entry is not None:
                markers[entry["marker"]] = key_id
        return Snapshot(
            self.keys.updated(changes), self.markers.updated(markers), inode, offset, lines
        )


class Keystore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = FileLock(str(path) + ".lock")
        # The file lock is taken per thread and waited for by polling (every 50 ms): the
        # threads of one process queue here instead, so that the next one takes the file
        # lock the moment the last lets go, and only one of them polls for another process.
        self._writing = threading.Lock()
        # Every snapshot is made from the newest one under this lock, so the indexes are
        # only ever extended by their newest version, never forked (see index.py).
        self._deriving = threading.Lock()
        self._cached = Snapshot()

    def snapshot(self) -> Snapshot:
        """The entries as the file holds them now (OSError if it cannot be read)."""
        cached = self._cached  # replaced whole, never changed: no lock needed to read it
        try:
            found = self.path.stat()
        except FileNotFoundError:
            return Snapshot()
        if found.st_ino == cached.inode and found.st_size == cached.offset:
            return cached  # nothing appended: the usual case, one stat
        with self._deriving:
            return self._refresh()

    @contextmanager
    def changing(self) -> Iterator[tuple[MutableMapping[str, Entry], Mapping[str, str]]]:
        """The entries and the marker index, under the lock; what the block added, replaced
        or removed is appended to the file when it ends, and nothing if it raises."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._writing, self._lock:
            current = self.snapshot()
            keys = StagedChanges(current.keys)
            yield keys, current.markers
            changes = keys.changes()
            if not changes:
                return
            if current.whole_document or current.lines > 2 * len(keys) + 64:
                fresh = self._compact(dict(keys.items()))
                with self._deriving:
                    self._cached = fresh
                return
            inode, size, closed_off = self._append(current, changes)
            if closed_off:
                # A line a crash cut short just before its newline is whole now, and
                # other readers take it: so must this one, by reading from `current`.
                return
            with self._deriving:
                # Extend `current` only while it is the newest: a reader that has read our
                # lines already left them in the cache (or the next snapshot() reads them).
                # One made before the file existed is ours alone, and ours is the file.
                if self._cached is current or current.inode is None:
                    lines = current.lines + len(changes)
                    self._cached = current.updated(changes, inode=inode, offset=size, lines=lines)

    # -- reading ------------------------------------------------------------------------

    def _refresh(self) -> Snapshot:
        """The cached snapshot brought up to the file (under `_deriving`)."""
        cached = self._cached
        try:
            found = self.path.stat()
        except FileNotFoundError:
            return Snapshot()
        if found.st_ino == cached.inode and found.st_size == cached.offset:
            return cached  # another thread has just read what was appended
        if found.st_ino == cached.inode and found.st_size > cached.offset:
            fresh = self._read_appended(cached)
        else:
            fresh = self._read_whole()
        self._cached = fresh
        return fresh

    def _read_whole(self) -> Snapshot:
        with self.path.open("rb") as handle:
            inode = os.fstat(handle.fileno()).st_ino
            data = handle.read()
        if data.startswith(b'{"notice"') and b"\n" not in data.rstrip(b"\n"):
            document = json.loads(data)
            if "keys" in document:  # the pre-journal format: one document
                return _snapshot_of(document["keys"], inode, len(data), whole_document=True)
        return self._apply(Snapshot(), data, inode=inode, start=0)

    def _read_appended(self, cached: Snapshot) -> Snapshot:
        with self.path.open("rb") as handle:
            handle.seek(cached.offset)
            data = handle.read()
        return self._apply(cached, data, inode=cached.inode, start=cached.offset)

    def _apply(self, base: Snapshot, data: bytes, *, inode: int | None, start: int) -> Snapshot:
        """`base` with the whole lines of `data` (read from byte `start`) applied."""
        complete = data[: data.rfind(b"\n") + 1]
        changes: dict[str, Entry | None] = {}
        lines = base.lines
        for line in complete.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line a crash cut short, closed off by the next writer
            key_id = record.get("id")
            if key_id is None:
                continue  # the header
            lines += 1
            changes[key_id] = None if record.get("deleted") else record["entry"]
        return base.updated(changes, inode=inode, offset=start + len(complete), lines=lines)

    # -- writing ------------------------------------------------------------------------

    def _append(self, current: Snapshot, changes: Changes) -> tuple[int, int, bool]:
        """Append `changes` to the file: its inode and size after, and whether a line
        a crash cut short was closed off first."""
        payload = b"".join(
            _line({"id": k, "deleted": True} if entry is None else {"id": k, "entry": entry})
            for k, entry in changes.items()
        )
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            found = os.fstat(fd)
            closed_off = False
            if found.st_size == 0:
                payload = _line({"notice": DEV_ONLY_NOTICE, "format": FORMAT}) + payload
            elif found.st_size != current.offset or found.st_ino != current.inode:
                # A line a crash cut short: close it off, so that ours stays whole.
                payload = b"\n" + payload
                closed_off = True
            _write_all(fd, payload)
            os.fsync(fd)
            return found.st_ino, os.fstat(fd).st_size, closed_off
        finally:
            os.close(fd)

    def _compact(self, keys: Entries) -> Snapshot:
        tmp = self.path.with_suffix(".tmp")
        payload = _line({"notice": DEV_ONLY_NOTICE, "format": FORMAT}) + b"".join(
            _line({"id": k, "entry": entry}) for k, entry in keys.items()
        )
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, payload)
            os.fsync(fd)
            inode = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        return _snapshot_of(keys, inode, len(payload))


def read_keystore(path: Path) -> Entries:
    """Every entry of the keystore at `path`, by key id (for tests and tooling)."""
    return dict(Keystore(path).snapshot().keys.items())


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def _snapshot_of(
    keys: Entries, inode: int, offset: int, *, whole_document: bool = False
) -> Snapshot:
    markers = {entry["marker"]: key_id for key_id, entry in keys.items()}
    lines = 0 if whole_document else len(keys)
    return Snapshot(FrozenIndex(keys), FrozenIndex(markers), inode, offset, lines, whole_document)
