"""The local keystore file and its snapshots: what a change writes, and what it costs."""

from __future__ import annotations

import json
import os
import random
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from keyledger.errors import KmsKeyNotFound
from keyledger.providers.local.backend import LocalBackend
from keyledger.providers.local.keystore import Entry, Keystore, Snapshot
from keyledger.providers.local.names import version_ref


def _entry(marker: str, enabled: bool = True) -> Entry:
    return {"marker": marker, "material": "AAAA", "enabled": enabled, "deletion_date": None}


def _seeded(path: Path, count: int) -> Keystore:
    keystore = Keystore(path)
    with keystore.changing() as (keys, _):
        for i in range(count):
            keys[f"seed-{i}"] = _entry(f"seed.{i}")
    return keystore


def _contents(snapshot: Snapshot) -> tuple[dict[str, Entry], dict[str, str]]:
    return dict(snapshot.keys.items()), dict(snapshot.markers.items())


def _peak_memory_of_changes(path: Path, existing: int) -> int:
    writer = _seeded(path, existing)
    reader = Keystore(path)  # another process, as far as the file goes
    reader.snapshot()
    tracemalloc.start()
    try:
        for i in range(5):
            with writer.changing() as (keys, _):
                keys[f"new-{i}"] = _entry(f"new.{i}")
                keys[f"seed-{i}"] = _entry(f"seed.{i}", enabled=False)
            assert reader.snapshot().markers.get(f"new.{i}") == f"new-{i}"
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_change_and_reading_it_cost_the_same_at_any_keystore_size(tmp_path: Path) -> None:
    # Memory, not time: a change that copied or rebuilt the index would need room for a
    # copy of every entry, which at 4,000 keys is hundreds of kilobytes.
    small = _peak_memory_of_changes(tmp_path / "small.json", 400)
    large = _peak_memory_of_changes(tmp_path / "large.json", 4000)
    assert large < small + 32_000, (small, large)


def test_a_block_that_raises_or_changes_nothing_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ks.json"
    keystore = _seeded(path, 3)
    before, snapshot = path.read_bytes(), keystore.snapshot()
    with pytest.raises(RuntimeError), keystore.changing() as (keys, _):
        keys["new"] = _entry("new")
        del keys["seed-0"]
        raise RuntimeError
    with keystore.changing() as (keys, _):
        keys["seed-1"] = keys["seed-1"]  # put back as it was
        keys["gone"] = _entry("gone")
        del keys["gone"]
    with pytest.raises(KmsKeyNotFound):  # raised inside the backend's own change
        LocalBackend(path).disable(version_ref(path.stem, "no-such-key"))
    assert path.read_bytes() == before
    assert keystore.snapshot() is snapshot


def test_a_snapshot_taken_before_changes_is_unchanged_after_them(tmp_path: Path) -> None:
    path = tmp_path / "ks.json"
    keystore = _seeded(path, 10)
    before = keystore.snapshot()
    contents = _contents(before)
    for round_ in range(60):  # enough for superseded lines to force a compaction
        with keystore.changing() as (keys, _):
            keys["seed-1"] = _entry("seed.1", enabled=round_ % 2 == 0)
            keys[f"new-{round_}"] = _entry(f"new.{round_}")
            del keys[f"seed-{round_ % 10}"]
            keys[f"seed-{round_ % 10}"] = _entry(f"seed.{round_ % 10}")
    assert len(path.read_bytes().splitlines()) < 1 + 10 + 3 * 60  # compacted
    assert _contents(before) == contents
    assert before.keys.get("new-0") is None and before.markers.get("new.0") is None


def test_a_change_read_before_its_writer_publishes_it_is_counted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ks.json"
    keystore = _seeded(path, 3)
    read_mid_change: list[Snapshot] = []
    fsync = os.fsync

    def fsync_then_read(fd: int) -> None:  # as a reader thread would, once the lines are in
        fsync(fd)
        read_mid_change.append(keystore.snapshot())

    monkeypatch.setattr(os, "fsync", fsync_then_read)
    with keystore.changing() as (keys, _):
        keys["new"] = _entry("new")
    monkeypatch.undo()
    assert read_mid_change[0].keys.get("new") == _entry("new")
    after = keystore.snapshot()
    assert _contents(after) == _contents(Keystore(path).snapshot())
    assert after.lines == 4 and after.offset == path.stat().st_size


def test_memory_and_file_agree_through_many_changes(tmp_path: Path) -> None:
    rng = random.Random(11)
    path = tmp_path / "ks.json"
    keystore, model = Keystore(path), dict[str, Entry]()
    for step in range(400):  # many in-memory flattenings and several compactions
        with keystore.changing() as (keys, markers):
            for _ in range(rng.randint(1, 3)):
                key_id = f"k{rng.randrange(150)}"
                if key_id in keys and rng.random() < 0.4:
                    del keys[key_id]
                    del model[key_id]
                elif markers.get(f"m.{key_id}") is None or rng.random() < 0.5:
                    keys[key_id] = model[key_id] = _entry(f"m.{key_id}", step % 2 == 0)
        markers_of_model = {entry["marker"]: key_id for key_id, entry in model.items()}
        assert _contents(keystore.snapshot()) == (model, markers_of_model)
        if step % 50 == 0:
            assert _contents(Keystore(path).snapshot()) == (model, markers_of_model)
    assert _contents(Keystore(path).snapshot()) == (model, markers_of_model)


class _WatchedFileLock:
    """The keystore's file lock, noting every thread that asks for it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.asked: list[int] = []

    def __enter__(self) -> None:
        self.asked.append(threading.get_ident())
        self.inner.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.inner.__exit__(*exc)


def test_threads_of_one_process_queue_for_the_file_lock_without_polling_it(
    tmp_path: Path,
) -> None:
    # The file lock is waited for by polling every 50 ms; a thread of the same process
    # must wait on an in-process lock instead, and reach the file lock only once free.
    keystore = Keystore(tmp_path / "ks.json")
    watched = _WatchedFileLock(keystore._lock)
    keystore._lock = watched  # type: ignore[assignment]
    inside, leave = threading.Event(), threading.Event()

    def first() -> None:
        with keystore.changing() as (keys, _):
            keys["a"] = _entry("a")
            inside.set()
            leave.wait(10)

    def second() -> None:
        with keystore.changing() as (keys, _):
            keys["b"] = _entry("b")

    holder = threading.Thread(target=first)
    holder.start()
    assert inside.wait(10)
    waiter = threading.Thread(target=second)
    waiter.start()
    waiter.join(0.3)  # time enough to reach the file lock, were it let through
    assert len(watched.asked) == 1, "a second thread is polling the file lock"
    leave.set()
    holder.join(10)
    waiter.join(10)
    assert len(watched.asked) == 2
    assert sorted(keystore.snapshot().keys) == ["a", "b"]


def test_a_line_a_crash_cut_before_its_newline_is_seen_by_its_writer_too(
    tmp_path: Path,
) -> None:
    # A crash can cut a change just before its newline: the next writer closes the line
    # off, which makes it whole for every reader, the writer itself included.
    path = tmp_path / "ks.json"
    writer = _seeded(path, 2)
    with path.open("a") as journal:  # the crash: a whole record, without its newline
        journal.write(json.dumps({"id": "cut", "entry": _entry("cut")}, separators=(",", ":")))
    assert "cut" not in writer.snapshot().keys  # not a whole line yet
    with writer.changing() as (keys, _):
        keys["after"] = _entry("after")
    fresh = Keystore(path).snapshot()
    assert sorted(fresh.keys) == ["after", "cut", "seed-0", "seed-1"]
    assert _contents(writer.snapshot()) == _contents(fresh)
