"""The `local` backend's keystore file: a journal, one JSON line per changed entry.

    {"notice": "... NOT FOR PRODUCTION", "format": "journal-v1"}
    {"id": "<uuid>", "entry": {"marker": ..., "material": ..., "enabled": ..., ...}}
    {"id": "<uuid>", "deleted": true}

A change appends its lines and fsyncs them, under a lock file shared by every
process using the keystore; it does not rewrite the file, so making the
5,000th key costs what making the first did. Readers take no lock: they keep
what they parsed and read only what was appended since (a stat tells them
whether anything was). A line cut short by a crash is never read (only whole
lines count) and is closed off by the next writer. When superseded lines
outnumber live entries the file is compacted into a new one, atomically
(os.replace), which readers notice by its new inode. A keystore written as one
JSON document (before the journal) is read, and compacted at its first change.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

DEV_ONLY_NOTICE = "local backend: software keys in a file, NOT FOR PRODUCTION"
FORMAT = "journal-v1"

Entries = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Snapshot:
    """The keystore as of `offset` bytes of the file with inode `inode`. Shared with
    other threads: never changed in place."""

    keys: Entries
    markers: dict[str, str]  # idempotency marker -> key id
    inode: int | None = None
    offset: int = 0
    lines: int = 0  # entry lines read: compaction is due when they far outnumber keys
    whole_document: bool = False  # the pre-journal format


EMPTY = Snapshot({}, {})


class Keystore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = FileLock(str(path) + ".lock")
        self._cache_lock = threading.Lock()
        self._cached = EMPTY

    def snapshot(self) -> Snapshot:
        """The entries as the file holds them now (OSError if it cannot be read)."""
        with self._cache_lock:
            cached = self._cached
        try:
            found = self.path.stat()
        except FileNotFoundError:
            return EMPTY
        if found.st_ino == cached.inode and found.st_size == cached.offset:
            return cached  # nothing appended: the usual case, one stat
        if found.st_ino == cached.inode and found.st_size > cached.offset:
            fresh = self._read_appended(cached)
        else:
            fresh = self._read_whole()
        with self._cache_lock:
            self._cached = fresh
        return fresh

    @contextmanager
    def changing(self) -> Iterator[tuple[Entries, dict[str, str]]]:
        """A copy of the entries and the marker index, under the lock; what the block
        added, replaced or removed is appended to the file when it ends."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._lock:
            current = self.snapshot()
            keys = dict(current.keys)
            yield keys, current.markers
            changed = [k for k, entry in keys.items() if current.keys.get(k) is not entry]
            removed = [k for k in current.keys if k not in keys]
            if not changed and not removed:
                return
            if current.whole_document or current.lines > 2 * len(keys) + 64:
                fresh = self._compact(keys)
            else:
                fresh = self._append(current, keys, changed, removed)
            with self._cache_lock:
                self._cached = fresh

    # -- reading ------------------------------------------------------------------------

    def _read_whole(self) -> Snapshot:
        with self.path.open("rb") as handle:
            inode = os.fstat(handle.fileno()).st_ino
            data = handle.read()
        if data.startswith(b'{"notice"') and b"\n" not in data.rstrip(b"\n"):
            document = json.loads(data)
            if "keys" in document:  # the pre-journal format: one document
                keys: Entries = document["keys"]
                return Snapshot(keys, _markers(keys), inode, len(data), 0, whole_document=True)
        return self._apply(EMPTY, data, inode=inode, start=0)

    def _read_appended(self, cached: Snapshot) -> Snapshot:
        with self.path.open("rb") as handle:
            handle.seek(cached.offset)
            data = handle.read()
        return self._apply(cached, data, inode=cached.inode, start=cached.offset)

    def _apply(self, base: Snapshot, data: bytes, *, inode: int | None, start: int) -> Snapshot:
        """`base` with the whole lines of `data` (read from byte `start`) applied."""
        complete = data[: data.rfind(b"\n") + 1]
        keys, markers = dict(base.keys), dict(base.markers)
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
            old = keys.pop(key_id, None)
            if old is not None:
                markers.pop(old["marker"], None)
            if not record.get("deleted"):
                keys[key_id] = record["entry"]
                markers[record["entry"]["marker"]] = key_id
        return Snapshot(keys, markers, inode, start + len(complete), lines)

    # -- writing ------------------------------------------------------------------------

    def _append(
        self, current: Snapshot, keys: Entries, changed: list[str], removed: list[str]
    ) -> Snapshot:
        records: list[dict[str, Any]] = [{"id": k, "entry": keys[k]} for k in changed]
        records += [{"id": k, "deleted": True} for k in removed]
        payload = b"".join(_line(record) for record in records)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            found = os.fstat(fd)
            if found.st_size == 0:
                payload = _line({"notice": DEV_ONLY_NOTICE, "format": FORMAT}) + payload
            elif found.st_size != current.offset or found.st_ino != current.inode:
                # A line a crash cut short: close it off, so that ours stays whole.
                payload = b"\n" + payload
            _write_all(fd, payload)
            os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        markers = dict(current.markers)
        for k in removed:
            markers.pop(current.keys[k]["marker"], None)
        for k in changed:
            old = current.keys.get(k)
            if old is not None:
                markers.pop(old["marker"], None)
            markers[keys[k]["marker"]] = k
        return Snapshot(keys, markers, found.st_ino, size, current.lines + len(records))

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
        return Snapshot(keys, _markers(keys), inode, len(payload), len(keys))


def read_keystore(path: Path) -> Entries:
    """Every entry of the keystore at `path`, by key id (for tests and tooling)."""
    return Keystore(path).snapshot().keys


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def _markers(keys: Entries) -> dict[str, str]:
    return {entry["marker"]: key_id for key_id, entry in keys.items()}
